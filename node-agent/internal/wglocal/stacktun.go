package wglocal

// The netstack end's TUN: a gVisor TCP/IP stack in this process. It follows
// golang.zx2c4.com/wireguard/tun/netstack (MIT License, Copyright (C) 2017-2025 WireGuard LLC),
// reduced to what the agent uses (TCP to an address literal), with one change: Close cannot
// race a packet the stack is still writing. Upstream's Close closes the channel Read takes
// packets from while a TCP timer of the stack may still be sending on it, and the send panics
// ("send on closed channel"): that killed a 10,000-node simulation, every tunnel of which is
// closed while its connections are still winding down. Here the writer gives up on a done
// channel that Close closes instead.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// stackTun is a tun.Device whose far side is a gVisor stack, and a dialer into that stack.
type stackTun struct {
	ep       *channel.Endpoint
	stack    *stack.Stack
	notify   *channel.NotificationHandle
	events   chan tun.Event
	incoming chan *buffer.View // packets the stack sends, for the WireGuard device to read
	done     chan struct{}     // closed by Close
	close    sync.Once
	mtu      int
}

// newStackTun makes a stack with the local addresses and a default route through the device.
func newStackTun(local []netip.Addr, mtu int) (*stackTun, error) {
	t := &stackTun{
		ep: channel.New(1024, uint32(mtu), ""),
		stack: stack.New(stack.Options{
			NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
			TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
			HandleLocal:        true,
		}),
		events:   make(chan tun.Event, 1),
		incoming: make(chan *buffer.View),
		done:     make(chan struct{}),
		mtu:      mtu,
	}
	sack := tcpip.TCPSACKEnabled(true)
	if err := t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return nil, fmt.Errorf("enable TCP SACK: %v", err)
	}
	t.notify = t.ep.AddNotify(t)
	if err := t.stack.CreateNIC(1, t.ep); err != nil {
		return nil, fmt.Errorf("create NIC: %v", err)
	}
	for _, a := range local {
		proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
		route := header.IPv4EmptySubnet
		if !a.Is4() {
			proto, route = ipv6.ProtocolNumber, header.IPv6EmptySubnet
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := t.stack.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
			return nil, fmt.Errorf("add address %v: %v", a, err)
		}
		t.stack.AddRoute(tcpip.Route{Destination: route, NIC: 1})
	}
	t.events <- tun.EventUp
	return t, nil
}

func (t *stackTun) Name() (string, error)    { return "netstack", nil }
func (t *stackTun) File() *os.File           { return nil }
func (t *stackTun) Events() <-chan tun.Event { return t.events }
func (t *stackTun) MTU() (int, error)        { return t.mtu, nil }
func (t *stackTun) BatchSize() int           { return 1 }

// Read hands the WireGuard device the next packet the stack sent.
func (t *stackTun) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case view := <-t.incoming:
		n, err := view.Read(bufs[0][offset:])
		view.Release()
		if err != nil {
			return 0, err
		}
		sizes[0] = n
		return 1, nil
	case <-t.done:
		return 0, os.ErrClosed
	}
}

// Write gives the stack the packets the WireGuard device decrypted.
func (t *stackTun) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		packet := b[offset:]
		if len(packet) == 0 {
			continue
		}
		pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(packet)})
		switch packet[0] >> 4 {
		case 4:
			t.ep.InjectInbound(header.IPv4ProtocolNumber, pkb)
		case 6:
			t.ep.InjectInbound(header.IPv6ProtocolNumber, pkb)
		default:
			pkb.DecRef()
			return 0, syscall.EAFNOSUPPORT
		}
	}
	return len(bufs), nil
}

// WriteNotify is the stack telling that it sent a packet: it goes to Read, unless the device
// is closed (then it is dropped; upstream panics here).
func (t *stackTun) WriteNotify() {
	pkt := t.ep.Read()
	if pkt == nil {
		return
	}
	view := pkt.ToView()
	pkt.DecRef()
	select {
	case t.incoming <- view:
	case <-t.done:
		view.Release()
	}
}

// Close stops the stack. The WireGuard device calls it when it closes.
func (t *stackTun) Close() error {
	t.close.Do(func() {
		close(t.done)
		t.stack.RemoveNIC(1)
		t.stack.Close()
		t.ep.RemoveNotify(t.notify)
		t.ep.Close()
		close(t.events)
	})
	return nil
}

// DialContext dials TCP to an address literal (host:port) inside the stack, for an
// http.Transport: the metadata URL the tunnel manager gives is an address, never a name.
func (t *stackTun) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("netstack: %s: %w", network, errors.ErrUnsupported)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("netstack: dial %q: not an IP address and port", address)
	}
	proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
	if !ap.Addr().Unmap().Is4() {
		proto = ipv6.ProtocolNumber
	}
	fa := tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(ap.Addr().Unmap().AsSlice()), Port: ap.Port()}
	return gonet.DialContextTCP(ctx, t.stack, fa, proto)
}
