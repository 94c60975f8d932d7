// Package gatewaytest has a hand-written fake of the WireGuard device the gateway drives, for
// tests of logic that must see the device fail. Tests of the device itself use wireguard-go.
package gatewaytest

import (
	"errors"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Device is an in-memory device: peers by key, and a switch to make configuration fail.
type Device struct {
	mu    sync.Mutex
	peers map[wgtypes.Key]wgtypes.Peer
	// Fail, when set, is returned by every ConfigureDevice call.
	Fail error
}

// The method set gateway.New consumes (its wgDevice interface).
var _ interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
} = (*Device)(nil)

// ErrInjected is a ready-made failure for Fail.
var ErrInjected = errors.New("gatewaytest: injected device failure")

// NewDevice returns an empty device.
func NewDevice() *Device { return &Device{peers: map[wgtypes.Key]wgtypes.Peer{}} }

// Device returns the peers.
func (d *Device) Device(name string) (*wgtypes.Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := &wgtypes.Device{Name: name}
	for _, p := range d.peers {
		out.Peers = append(out.Peers, p)
	}
	return out, nil
}

// ConfigureDevice applies peer additions and removals, or fails.
func (d *Device) ConfigureDevice(_ string, cfg wgtypes.Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Fail != nil {
		return d.Fail
	}
	if cfg.ReplacePeers {
		d.peers = map[wgtypes.Key]wgtypes.Peer{}
	}
	for _, pc := range cfg.Peers {
		if pc.Remove {
			delete(d.peers, pc.PublicKey)
			continue
		}
		p := d.peers[pc.PublicKey]
		p.PublicKey = pc.PublicKey
		if pc.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		p.AllowedIPs = append(p.AllowedIPs, pc.AllowedIPs...)
		d.peers[pc.PublicKey] = p
	}
	return nil
}

// Len is the number of peers.
func (d *Device) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.peers)
}
