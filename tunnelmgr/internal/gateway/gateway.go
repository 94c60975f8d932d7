// Package gateway keeps one WireGuard gateway device equal to the inventory: a peer for every
// open tunnel of this gateway, with exactly the tunnel's addresses as AllowedIPs, and nothing
// else. Peers are added and removed as tunnels open and close, and a reconciler repairs whatever
// drifted — at start, when the database notifies, and on a timer — and expires tunnels.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/attestboot/attestboot/services/batch"
	"github.com/attestboot/attestboot/services/inventory"
)

// wgDevice is the part of wgctrl the gateway uses; *wgctrl.Client implements it.
type wgDevice interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
}

// Event kinds recorded by the gateway.
const (
	KindExpired      = "tunnel.expired"
	KindPeerRemoved  = "tunnel.unknown_peer_removed"
	KindPeerRestored = "tunnel.peer_restored"
)

// Config of a gateway.
type Config struct {
	// Name of the gateway in the inventory.
	Name string
	// Interface is the WireGuard interface it drives.
	Interface string
	// Interval between reconciliations without a notification; default 5 s.
	Interval time.Duration
}

// Metrics of the gateway, registered by New.
type Metrics struct {
	OpenTunnels prometheus.Gauge
	Expiries    prometheus.Counter
	Repairs     *prometheus.CounterVec
}

// Gateway drives one device.
type Gateway struct {
	cfg     Config
	dev     wgDevice
	store   *inventory.Store
	logger  *slog.Logger
	metrics Metrics

	// mu orders device changes: a reconciliation pass reads the device and then the database
	// under it, so a peer added for a tunnel committed after that read cannot be mistaken for
	// an unknown one.
	mu sync.Mutex

	// changes queues the peer changes of concurrent AddPeer and RemovePeer calls, applied
	// together.
	changes *batch.Queue[peerChange]
}

// peerChange is one caller's peer change and where its outcome goes.
type peerChange struct {
	pc   wgtypes.PeerConfig
	what string // for the error
	done chan error
}

// New returns a gateway. reg may be nil.
func New(cfg Config, dev wgDevice, store *inventory.Store, logger *slog.Logger, reg prometheus.Registerer) (*Gateway, error) {
	if cfg.Name == "" || cfg.Interface == "" {
		return nil, errors.New("gateway: name and interface are required")
	}
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	m := Metrics{
		OpenTunnels: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "attestboot_gateway_peers", Help: "Peers the gateway device holds after the last reconciliation (one per open tunnel).",
		}),
		Expiries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "attestboot_tunnel_expiries_total", Help: "Tunnels closed because they expired.",
		}),
		Repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestboot_gateway_repairs_total", Help: "Peers the reconciler added, removed or corrected.",
		}, []string{"action"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.OpenTunnels, m.Expiries, m.Repairs} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("gateway: register metrics: %w", err)
			}
		}
	}
	g := &Gateway{cfg: cfg, dev: dev, store: store, logger: logger, metrics: m}
	g.changes = &batch.Queue[peerChange]{Run: g.apply}
	return g, nil
}

// Name of the gateway.
func (g *Gateway) Name() string { return g.cfg.Name }

func peerConfig(t inventory.Tunnel) (wgtypes.PeerConfig, error) {
	key, err := wgtypes.NewKey(t.WireGuardPublicKey)
	if err != nil {
		return wgtypes.PeerConfig{}, fmt.Errorf("tunnel %s: %w", t.ID, err)
	}
	return wgtypes.PeerConfig{PublicKey: key, ReplaceAllowedIPs: true, AllowedIPs: ipNets(t.Addresses())}, nil
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, len(ps))
	for i, p := range ps {
		out[i] = net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	return out
}

// AddPeer puts an open tunnel's peer on the device.
func (g *Gateway) AddPeer(t inventory.Tunnel) error {
	pc, err := peerConfig(t)
	if err != nil {
		return err
	}
	return g.change(pc, "add peer of tunnel "+t.ID)
}

// RemovePeer takes a tunnel's peer off the device (a no-op if it is not there).
func (g *Gateway) RemovePeer(t inventory.Tunnel) error {
	key, err := wgtypes.NewKey(t.WireGuardPublicKey)
	if err != nil {
		return fmt.Errorf("gateway: tunnel %s: %w", t.ID, err)
	}
	return g.change(wgtypes.PeerConfig{PublicKey: key, Remove: true}, "remove peer of tunnel "+t.ID)
}

// change applies one peer change, together with those other callers ask for meanwhile: during
// a storm hundreds of peers come and go each second, and one configuration call for many
// peers costs about what a call for one does. The changes of a batch apply in the order they
// were asked for. It returns once the change is on the device.
func (g *Gateway) change(pc wgtypes.PeerConfig, what string) error {
	c := peerChange{pc: pc, what: what, done: make(chan error, 1)}
	g.changes.Add(c)
	return <-c.done
}

func (g *Gateway) apply(changes []peerChange) {
	g.mu.Lock()
	defer g.mu.Unlock()
	peers := make([]wgtypes.PeerConfig, len(changes))
	for i, c := range changes {
		peers[i] = c.pc
	}
	err := g.dev.ConfigureDevice(g.cfg.Interface, wgtypes.Config{Peers: peers})
	if err == nil || len(changes) == 1 {
		for _, c := range changes {
			if err != nil {
				c.done <- fmt.Errorf("gateway: %s: %w", c.what, err)
			} else {
				c.done <- nil
			}
		}
		return
	}
	// Whose change failed? One at a time, so each caller gets its own outcome.
	for _, c := range changes {
		if err := g.dev.ConfigureDevice(g.cfg.Interface, wgtypes.Config{Peers: []wgtypes.PeerConfig{c.pc}}); err != nil {
			c.done <- fmt.Errorf("gateway: %s: %w", c.what, err)
		} else {
			c.done <- nil
		}
	}
}

func (g *Gateway) removeKeys(keys []wgtypes.Key) error {
	if len(keys) == 0 {
		return nil
	}
	peers := make([]wgtypes.PeerConfig, len(keys))
	for i, k := range keys {
		peers[i] = wgtypes.PeerConfig{PublicKey: k, Remove: true}
	}
	if err := g.dev.ConfigureDevice(g.cfg.Interface, wgtypes.Config{Peers: peers}); err != nil {
		return fmt.Errorf("gateway: remove %d peers: %w", len(keys), err)
	}
	return nil
}

// Peers returns the device's peers.
func (g *Gateway) Peers() ([]wgtypes.Peer, error) {
	d, err := g.dev.Device(g.cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("gateway: read device %s: %w", g.cfg.Interface, err)
	}
	return d.Peers, nil
}

// Result of one reconciliation.
type Result struct {
	Expired, Added, Removed, Corrected, Peers int
}

// Reconcile expires due tunnels, then makes the device hold exactly the open tunnels' peers.
// All changes to the device go in one configuration call.
func (g *Gateway) Reconcile(ctx context.Context) (Result, error) {
	var res Result
	expired, err := g.expire(ctx)
	if err != nil {
		return res, err
	}
	res.Expired = len(expired)

	g.mu.Lock()
	defer g.mu.Unlock()
	dev, err := g.dev.Device(g.cfg.Interface)
	if err != nil {
		return res, fmt.Errorf("gateway: read device %s: %w", g.cfg.Interface, err)
	}
	open, err := g.store.OpenTunnels(ctx, g.cfg.Name)
	if err != nil {
		return res, err
	}
	want := make(map[wgtypes.Key]inventory.Tunnel, len(open))
	for _, t := range open {
		k, err := wgtypes.NewKey(t.WireGuardPublicKey)
		if err != nil {
			return res, fmt.Errorf("gateway: tunnel %s: %w", t.ID, err)
		}
		want[k] = t
	}
	var (
		changes []wgtypes.PeerConfig
		unknown []wgtypes.Key
	)
	have := make(map[wgtypes.Key]bool, len(dev.Peers))
	for _, p := range dev.Peers {
		have[p.PublicKey] = true
		t, ok := want[p.PublicKey]
		switch {
		case !ok:
			unknown = append(unknown, p.PublicKey)
			changes = append(changes, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true})
			res.Removed++
		case !sameAllowedIPs(p.AllowedIPs, t.Addresses()):
			pc, _ := peerConfig(t)
			changes = append(changes, pc)
			res.Corrected++
		}
	}
	var restored []inventory.Tunnel
	now := g.store.Clock().Now()
	for k, t := range want {
		if !have[k] {
			pc, _ := peerConfig(t)
			changes = append(changes, pc)
			res.Added++
			// A tunnel committed a moment ago may simply not have its peer yet (OpenTunnel adds
			// it right after the commit); only an older one was really lost.
			if now.Sub(t.OpenedAt) > restoreGrace {
				restored = append(restored, t)
			}
		}
	}
	if len(changes) > 0 {
		if err := g.dev.ConfigureDevice(g.cfg.Interface, wgtypes.Config{Peers: changes}); err != nil {
			return res, fmt.Errorf("gateway: reconcile %s: %w", g.cfg.Interface, err)
		}
	}
	res.Peers = len(want)
	g.metrics.OpenTunnels.Set(float64(len(want)))
	g.metrics.Repairs.WithLabelValues("added").Add(float64(res.Added))
	g.metrics.Repairs.WithLabelValues("removed").Add(float64(res.Removed))
	g.metrics.Repairs.WithLabelValues("corrected").Add(float64(res.Corrected))
	if res.Removed+res.Added+res.Corrected > 0 {
		g.logger.Info("gateway reconciled", "gateway", g.cfg.Name, "added", res.Added, "removed", res.Removed, "corrected", res.Corrected, "peers", res.Peers)
	}
	g.record(ctx, unknown, restored)
	return res, nil
}

// record notes repairs in the event log. Best effort: the device is already right.
func (g *Gateway) record(ctx context.Context, unknown []wgtypes.Key, restored []inventory.Tunnel) {
	for _, k := range unknown {
		if _, err := g.store.AppendEvent(ctx, inventory.Event{
			Kind: KindPeerRemoved, Service: "tunnelmgr", Reason: "unknown_peer",
			Detail: map[string]any{"gateway": g.cfg.Name, "public_key": k.String()},
		}); err != nil {
			g.logger.Warn("record removed peer", "err", err)
		}
	}
	for _, t := range restored {
		if _, err := g.store.AppendEvent(ctx, inventory.Event{
			NodeID: t.NodeID, Kind: KindPeerRestored, Service: "tunnelmgr", Reason: "missing_peer",
			Detail: map[string]any{"gateway": g.cfg.Name, "tunnel_id": t.ID},
		}); err != nil {
			g.logger.Warn("record restored peer", "err", err)
		}
	}
}

// expire closes the gateway's due tunnels (each with an event, in one transaction) and takes
// their peers off the device.
func (g *Gateway) expire(ctx context.Context) ([]inventory.Tunnel, error) {
	var expired []inventory.Tunnel
	err := g.store.InTx(ctx, func(q *inventory.Queries) error {
		var err error
		if expired, err = q.ExpireTunnels(ctx, g.cfg.Name); err != nil {
			return err
		}
		for _, t := range expired {
			if _, err := q.AppendEvent(ctx, inventory.Event{
				NodeID: t.NodeID, Kind: KindExpired, Service: "tunnelmgr", Reason: "expired",
				Detail: map[string]any{"gateway": g.cfg.Name, "tunnel_id": t.ID},
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || len(expired) == 0 {
		return nil, err
	}
	keys := make([]wgtypes.Key, 0, len(expired))
	for _, t := range expired {
		if k, err := wgtypes.NewKey(t.WireGuardPublicKey); err == nil {
			keys = append(keys, k)
		}
	}
	g.mu.Lock()
	err = g.removeKeys(keys)
	g.mu.Unlock()
	g.metrics.Expiries.Add(float64(len(expired)))
	return expired, err
}

func sameAllowedIPs(have []net.IPNet, want []netip.Prefix) bool {
	if len(have) != len(want) {
		return false
	}
	got := make([]netip.Prefix, 0, len(have))
	for _, n := range have {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			return false
		}
		ones, _ := n.Mask.Size()
		got = append(got, netip.PrefixFrom(a.Unmap(), ones))
	}
	cmp := func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) }
	slices.SortFunc(got, cmp)
	w := slices.Clone(want)
	slices.SortFunc(w, cmp)
	return slices.Equal(got, w)
}

// restoreGrace is how old a tunnel without a peer must be to count as lost.
const restoreGrace = 10 * time.Second

// minGap spaces reconciliations woken by notifications: during a boot storm every open notifies,
// and one pass per second covers them all (opens and closes change the device directly).
const minGap = time.Second

// Run reconciles at start, whenever the inventory notifies a change of this gateway's tunnels,
// and every Interval, until ctx ends. A failed pass is logged and retried on the next trigger.
func (g *Gateway) Run(ctx context.Context) error {
	listener, err := inventory.NewListener(g.store.Pool(), inventory.ListenerConfig{
		Channels: []string{inventory.ChannelTunnels}, Logger: g.logger,
	})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = listener.Run(lctx) }()

	tick := time.NewTicker(g.cfg.Interval)
	defer tick.Stop()
	for {
		last := time.Now()
		if _, err := g.Reconcile(ctx); err != nil && ctx.Err() == nil {
			g.logger.Warn("reconcile gateway", "gateway", g.cfg.Name, "err", err)
		}
		if !g.wait(ctx, listener.Notifications(), tick.C, last) {
			return nil
		}
	}
}

// wait returns when the next pass is due: the timer fired, or this gateway's tunnels changed
// and minGap has passed since the last pass (notifications arriving meanwhile are absorbed).
// It returns false when ctx ends.
func (g *Gateway) wait(ctx context.Context, notes <-chan inventory.Notification, tick <-chan time.Time, last time.Time) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-tick:
			return true
		case n, ok := <-notes:
			if !ok {
				return false
			}
			if !n.Reset && n.Payload != g.cfg.Name {
				continue
			}
			timer := time.NewTimer(time.Until(last.Add(minGap)))
			defer timer.Stop()
			for {
				select {
				case <-ctx.Done():
					return false
				case <-notes:
				case <-timer.C:
					return true
				}
			}
		}
	}
}
