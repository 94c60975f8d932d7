// Package wgdevice provides a WireGuard device for either end of a tunnel — the gateway of
// tunnelmgr or a node's end in node-agent: an existing interface (kernel WireGuard or an
// external wireguard-go), or an embedded wireguard-go TUN device with its UAPI socket owned by
// this process. Either way it is configured only through wgctrl, like any device.
package wgdevice

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Config of the device.
type Config struct {
	// Name of the interface (at most 15 bytes).
	Name string
	// Embedded creates the interface in this process with wireguard-go; otherwise it must exist.
	Embedded bool
	// MTU of an embedded interface; default 1420.
	MTU int
	// Addresses are assigned to an embedded interface (or, with Assign, to an existing one),
	// with the pool's prefix length so the pool routes through it (for example 100.64.0.1/16).
	// Otherwise an existing interface keeps its own.
	Addresses []netip.Prefix
	// Assign sets Addresses and Routes on an existing interface too, and sets it up.
	Assign bool
	// ListenPort is the UDP port WireGuard listens on; 0 picks a free one (a node's end).
	ListenPort int
	// Routes are sent through the interface when addresses are assigned (for example the
	// gateway's /32 on a node).
	Routes []netip.Prefix
	// PrivateKey of the gateway.
	PrivateKey wgtypes.Key
}

func (c *Config) validate() error {
	switch {
	case c.Name == "" || len(c.Name) > 15:
		return fmt.Errorf("interface name %q must have 1 to 15 bytes", c.Name)
	case c.ListenPort < 0 || c.ListenPort > 65535:
		return fmt.Errorf("listen port %d out of range", c.ListenPort)
	case c.PrivateKey == wgtypes.Key{}:
		return errors.New("no private key")
	}
	if c.MTU == 0 {
		c.MTU = 1420
	}
	return nil
}

// Device is the configured gateway device. Its Client is what tunnelmgr drives.
type Device struct {
	name   string
	client *wgctrl.Client
	// Set for an embedded device.
	wg   *device.Device
	uapi net.Listener
}

// Open brings the device up: creates it when embedded, sets its key and port through wgctrl
// (keeping its peers: a restarted gateway is reconciled, not wiped) and, when embedded, assigns
// its addresses and sets the link up.
func Open(cfg Config, logger *slog.Logger) (*Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("wgdevice: %w", err)
	}
	d := &Device{name: cfg.Name}
	if cfg.Embedded {
		if err := d.create(cfg, logger); err != nil {
			return nil, err
		}
	}
	client, err := wgctrl.New()
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("wgdevice: open wgctrl: %w", err)
	}
	d.client = client
	if _, err := client.Device(cfg.Name); err != nil {
		d.Close()
		return nil, fmt.Errorf("wgdevice: interface %s: %w", cfg.Name, err)
	}
	dc := wgtypes.Config{PrivateKey: &cfg.PrivateKey}
	if cfg.ListenPort != 0 {
		dc.ListenPort = &cfg.ListenPort
	}
	if err := client.ConfigureDevice(cfg.Name, dc); err != nil {
		d.Close()
		return nil, fmt.Errorf("wgdevice: configure %s: %w", cfg.Name, err)
	}
	if cfg.Embedded || cfg.Assign {
		if err := d.assign(cfg); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

func (d *Device) create(cfg Config, logger *slog.Logger) error {
	t, err := tun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		return fmt.Errorf("wgdevice: create TUN %s: %w", cfg.Name, err)
	}
	wgLog := &device.Logger{
		Verbosef: func(string, ...any) {},
		Errorf: func(format string, args ...any) {
			logger.Warn("wireguard-go", "interface", cfg.Name, "msg", fmt.Sprintf(format, args...))
		},
	}
	d.wg = device.NewDevice(t, conn.NewDefaultBind(), wgLog)
	f, err := ipc.UAPIOpen(cfg.Name)
	if err != nil {
		d.wg.Close()
		return fmt.Errorf("wgdevice: open UAPI socket of %s: %w", cfg.Name, err)
	}
	d.uapi, err = ipc.UAPIListen(cfg.Name, f)
	if err != nil {
		f.Close()
		d.wg.Close()
		return fmt.Errorf("wgdevice: listen on UAPI socket of %s: %w", cfg.Name, err)
	}
	go func() {
		for {
			c, err := d.uapi.Accept()
			if err != nil {
				return
			}
			go d.wg.IpcHandle(c)
		}
	}()
	return nil
}

func (d *Device) assign(cfg Config) error {
	link, err := netlink.LinkByName(cfg.Name)
	if err != nil {
		return fmt.Errorf("wgdevice: find link %s: %w", cfg.Name, err)
	}
	for _, p := range cfg.Addresses {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("wgdevice: assign %s to %s: %w", p, cfg.Name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("wgdevice: set %s up: %w", cfg.Name, err)
	}
	for _, p := range cfg.Routes {
		dst := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst}); err != nil {
			return fmt.Errorf("wgdevice: route %s via %s: %w", p, cfg.Name, err)
		}
	}
	return nil
}

// Name of the interface.
func (d *Device) Name() string { return d.name }

// Client configures the device (and, like any wgctrl client, could reach others).
func (d *Device) Client() *wgctrl.Client { return d.client }

// Close releases wgctrl and, for an embedded device, removes the interface and its socket.
func (d *Device) Close() error {
	var errs []error
	if d.client != nil {
		errs = append(errs, d.client.Close())
	}
	if d.uapi != nil {
		errs = append(errs, d.uapi.Close())
	}
	if d.wg != nil {
		d.wg.Close()
		// The UAPI listener removes its socket on Close; make sure no stale one stays behind.
		_ = os.Remove(filepath.Join("/var/run/wireguard", d.name+".sock"))
	}
	return errors.Join(errs...)
}

// LoadOrCreateKey returns the private key kept in path, creating it (mode 0600, directory 0700)
// on first use, so a restarted gateway keeps its identity and every node's tunnel keeps working.
func LoadOrCreateKey(path string) (wgtypes.Key, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		st, err := os.Stat(path)
		if err != nil {
			return wgtypes.Key{}, err
		}
		if st.Mode().Perm()&0o077 != 0 {
			return wgtypes.Key{}, fmt.Errorf("wgdevice: key file %s has mode %v; want 0600", path, st.Mode().Perm())
		}
		k, err := wgtypes.ParseKey(string(trimNewline(b)))
		if err != nil {
			return wgtypes.Key{}, fmt.Errorf("wgdevice: key file %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return wgtypes.Key{}, fmt.Errorf("wgdevice: read key: %w", err)
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wgdevice: generate key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return wgtypes.Key{}, fmt.Errorf("wgdevice: %w", err)
	}
	// Write to a temporary file and link it into place: two gateways starting at once on one
	// state directory end up with one key, never a half-written one.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".gateway-key-*")
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wgdevice: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(k.String() + "\n"); err != nil {
		tmp.Close()
		return wgtypes.Key{}, fmt.Errorf("wgdevice: write key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return wgtypes.Key{}, fmt.Errorf("wgdevice: write key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		return LoadOrCreateKey(path)
	} else if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wgdevice: store key: %w", err)
	}
	return k, nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
