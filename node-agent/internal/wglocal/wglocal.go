// Package wglocal brings up a node's end of its tunnel from an OpenTunnel answer, in one of
// three modes — an embedded wireguard-go TUN interface, a kernel WireGuard interface, or an
// in-process netstack that needs neither root nor a TUN device — and hands back an HTTP client
// whose traffic goes through the tunnel.
package wglocal

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/wgdevice"
)

// Mode of the local end.
type Mode string

// Modes.
const (
	TUN      Mode = "tun"      // embedded wireguard-go with a TUN interface (root, /dev/net/tun)
	Kernel   Mode = "kernel"   // a kernel WireGuard interface created through netlink
	Netstack Mode = "netstack" // userspace TCP/IP in this process; no interface at all
)

// ParseMode checks a mode name.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case TUN, Kernel, Netstack:
		return m, nil
	}
	return "", fmt.Errorf("wglocal: unknown mode %q (want tun, kernel or netstack)", s)
}

// Tunnel is an up local end.
type Tunnel interface {
	// HTTPClient sends requests through the tunnel.
	HTTPClient() *http.Client
	// Close removes the interface (or stops the netstack).
	Close() error
}

// Params are what the local end needs.
type Params struct {
	Mode      Mode
	Interface string // interface name for tun and kernel modes
	Key       wgtypes.Key
	Answer    *tunnelmgrv1.OpenTunnelResponse
	Logger    *slog.Logger
}

type peer struct {
	gateway   wgtypes.Key
	endpoint  *net.UDPAddr
	addresses []netip.Prefix
	allowed   []netip.Prefix
	keepalive time.Duration
}

func parse(a *tunnelmgrv1.OpenTunnelResponse) (peer, error) {
	var p peer
	var err error
	if p.gateway, err = wgtypes.NewKey(a.GetGatewayPublicKey()); err != nil {
		return p, fmt.Errorf("gateway key: %w", err)
	}
	if p.endpoint, err = net.ResolveUDPAddr("udp", a.GetEndpoint()); err != nil {
		return p, fmt.Errorf("gateway endpoint %q: %w", a.GetEndpoint(), err)
	}
	for _, s := range a.GetNodeAddresses() {
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("node address %q: %w", s, err)
		}
		p.addresses = append(p.addresses, pf)
	}
	for _, s := range a.GetAllowedIps() {
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("allowed IP %q: %w", s, err)
		}
		p.allowed = append(p.allowed, pf.Masked())
	}
	if len(p.addresses) == 0 || len(p.allowed) == 0 {
		return p, errors.New("answer without addresses")
	}
	p.keepalive = time.Duration(a.GetPersistentKeepaliveSeconds()) * time.Second
	return p, nil
}

// Up brings the local end up.
func Up(ctx context.Context, prm Params) (Tunnel, error) {
	p, err := parse(prm.Answer)
	if err != nil {
		return nil, fmt.Errorf("wglocal: %w", err)
	}
	switch prm.Mode {
	case Netstack:
		return upNetstack(prm, p)
	case TUN, Kernel:
		return upInterface(prm, p)
	}
	return nil, fmt.Errorf("wglocal: unknown mode %q", prm.Mode)
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, len(ps))
	for i, p := range ps {
		out[i] = net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	return out
}

// ifaceTunnel is an interface configured through wgctrl.
type ifaceTunnel struct {
	dev    *wgdevice.Device // embedded (tun mode)
	kernel netlink.Link     // created here (kernel mode)
	client *http.Client
}

func upInterface(prm Params, p peer) (Tunnel, error) {
	if prm.Interface == "" {
		return nil, errors.New("wglocal: no interface name")
	}
	t := &ifaceTunnel{client: &http.Client{}}
	if prm.Mode == Kernel {
		link := &netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: prm.Interface, MTU: 1420}}
		if err := netlink.LinkAdd(link); err != nil {
			return nil, fmt.Errorf("wglocal: create kernel WireGuard interface %s: %w", prm.Interface, err)
		}
		t.kernel = link
	}
	dev, err := wgdevice.Open(wgdevice.Config{
		Name: prm.Interface, Embedded: prm.Mode == TUN, Assign: true, Addresses: p.addresses, Routes: p.allowed,
		PrivateKey: prm.Key,
	}, prm.Logger)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("wglocal: %w", err)
	}
	t.dev = dev
	ka := p.keepalive
	if err := dev.Client().ConfigureDevice(prm.Interface, wgtypes.Config{ReplacePeers: true, Peers: []wgtypes.PeerConfig{{
		PublicKey: p.gateway, Endpoint: p.endpoint, AllowedIPs: ipNets(p.allowed), PersistentKeepaliveInterval: &ka,
	}}}); err != nil {
		t.Close()
		return nil, fmt.Errorf("wglocal: configure %s: %w", prm.Interface, err)
	}
	return t, nil
}

func (t *ifaceTunnel) HTTPClient() *http.Client { return t.client }

func (t *ifaceTunnel) Close() error {
	var errs []error
	if t.dev != nil {
		errs = append(errs, t.dev.Close())
	}
	if t.kernel != nil {
		errs = append(errs, netlink.LinkDel(t.kernel))
	}
	return errors.Join(errs...)
}

// netTunnel is a whole WireGuard peer and TCP/IP stack in this process.
type netTunnel struct {
	dev    *device.Device
	client *http.Client
}

func upNetstack(prm Params, p peer) (Tunnel, error) {
	addrs := make([]netip.Addr, len(p.addresses))
	for i, a := range p.addresses {
		addrs[i] = a.Addr()
	}
	tunDev, err := newStackTun(addrs, 1420)
	if err != nil {
		return nil, fmt.Errorf("wglocal: create netstack: %w", err)
	}
	logger := prm.Logger
	dev := device.NewDevice(tunDev, &udpBind{}, &device.Logger{
		Verbosef: func(string, ...any) {},
		Errorf: func(f string, args ...any) {
			logger.Debug("wireguard-go", "msg", fmt.Sprintf(f, args...))
		},
	})
	var uapi strings.Builder
	fmt.Fprintf(&uapi, "private_key=%s\npublic_key=%s\nendpoint=%s\npersistent_keepalive_interval=%d\n",
		hex.EncodeToString(prm.Key[:]), hex.EncodeToString(p.gateway[:]), p.endpoint.String(), int(p.keepalive/time.Second))
	for _, a := range p.allowed {
		fmt.Fprintf(&uapi, "allowed_ip=%s\n", a)
	}
	if err := dev.IpcSet(uapi.String()); err != nil {
		dev.Close()
		return nil, fmt.Errorf("wglocal: configure netstack peer: %w", err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return nil, fmt.Errorf("wglocal: netstack up: %w", err)
	}
	transport := &http.Transport{DialContext: tunDev.DialContext, DisableKeepAlives: false, MaxIdleConnsPerHost: 2}
	return &netTunnel{dev: dev, client: &http.Client{Transport: transport}}, nil
}

func (t *netTunnel) HTTPClient() *http.Client { return t.client }

func (t *netTunnel) Close() error {
	t.client.CloseIdleConnections()
	t.dev.Close()
	return nil
}
