package wglocal

// The netstack end's TUN: a gVisor TCP/IP stack in this process. It follows
// golang.zx2c4.com/wireguard/tun/netstack (MIT License, Copyright (C) 2017-2025 WireGuard LLC),
// reduced to what the agent uses (TCP to an address literal), with one change: the stack never
// waits for the WireGuard device. Upstream hands each packet the stack sends to Read through
// an unbuffered channel, from the stack's write notification, so whatever sends it — a TCP
// processor or a TCP timer, holding the connection's lock — waits until the device's reader
// goroutine runs. Meanwhile the stack's processors find that lock taken by someone who is not
// a reader or writer of the socket and requeue the connection at once, a spin: on a machine
// busy with 10,000 simulated nodes it was 41 % of the simulator's CPU. Here packets wait in
// the link endpoint's queue (1024 packets; a full queue drops, which TCP retransmits), and
// Read takes them from it. It also keeps upstream's Close from racing a send: upstream closes
// the channel a TCP timer may still be sending on, which panics ("send on closed channel")
// and killed a 10,000-node simulation.

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
	ep     *channel.Endpoint // its queue holds the packets the stack sent, for Read
	stack  *stack.Stack
	events chan tun.Event
	closed context.Context // done once Close has begun
	cancel context.CancelFunc
	close  sync.Once
	mtu    int
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
		events: make(chan tun.Event, 1),
		mtu:    mtu,
	}
	t.closed, t.cancel = context.WithCancel(context.Background())
	sack := tcpip.TCPSACKEnabled(true)
	if err := t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return nil, fmt.Errorf("enable TCP SACK: %v", err)
	}
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
	pkt := t.ep.ReadContext(t.closed)
	if pkt == nil { // closed (the queue's channel too, once Close is done)
		return 0, os.ErrClosed
	}
	view := pkt.ToView()
	pkt.DecRef()
	n, err := view.Read(bufs[0][offset:])
	view.Release()
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
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

// Close stops the stack. The WireGuard device calls it when it closes.
func (t *stackTun) Close() error {
	t.close.Do(func() {
		t.cancel()
		t.stack.RemoveNIC(1)
		t.stack.Close()
		t.ep.Close() // drops what is still queued
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
