package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/attestboot/attestboot/services/clock"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/netnstest"
	"github.com/attestboot/attestboot/services/pgtest"
	"github.com/attestboot/attestboot/services/testdep"
	"github.com/attestboot/attestboot/tunnelmgr/internal/gateway"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

type bundle struct {
	gw     *gateway.Gateway
	store  *inventory.Store
	clock  *clock.Fake
	client *wgctrl.Client
	iface  string
}

// setup drives a real wireguard-go device in a namespace of its own.
func setup(t *testing.T) bundle {
	t.Helper()
	testdep.Root(t)
	fake := clock.NewFake(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	store := inventory.New(pgtest.NewPool(t), inventory.Options{Clock: fake})
	ns := netnstest.New(t, "gw")
	iface := ns.StartWireGuardGo(t, "gw")
	client, err := wgctrl.New()
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	key, err := wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	require.NoError(t, client.ConfigureDevice(iface, wgtypes.Config{PrivateKey: &key}))
	pub := key.PublicKey()
	_, err = store.UpsertGateway(context.Background(), inventory.Gateway{
		Name: "gw1", PublicKey: pub[:], Endpoint: "10.99.0.1:51820", KeepaliveSeconds: 25,
		IPv4Pool: netip.MustParsePrefix("100.64.0.0/24"), AddressV4: netip.MustParseAddr("100.64.0.1"),
	})
	require.NoError(t, err)
	gw, err := gateway.New(gateway.Config{Name: "gw1", Interface: iface}, client, store,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	require.NoError(t, err)
	return bundle{gw: gw, store: store, clock: fake, client: client, iface: iface}
}

// openTunnel records an open tunnel (with the attestation it needs) and returns it.
func (b bundle) openTunnel(t *testing.T, nodeID string, ttl time.Duration) inventory.Tunnel {
	t.Helper()
	ctx := context.Background()
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: nodeID, Enabled: true})
	require.NoError(t, err)
	key, err := wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	pub := key.PublicKey()
	ek := make([]byte, 32)
	_, _ = rand.Read(ek)
	one := bytes.Repeat([]byte{1}, 32)
	sess, err := b.store.CreateSession(ctx, inventory.Session{NodeID: nodeID, EKSHA256: ek, AKPublic: one, AKSHA256: one,
		WireGuardPublicKey: pub[:], Nonce: one, SecretSHA256: one}, time.Minute)
	require.NoError(t, err)
	a, err := b.store.CreateAttestation(ctx, inventory.Attestation{SessionID: sess.ID, NodeID: nodeID, EKSHA256: ek,
		AKSHA256: one, WireGuardPublicKey: pub[:]}, time.Minute)
	require.NoError(t, err)
	var tun inventory.Tunnel
	require.NoError(t, b.store.InTx(ctx, func(q *inventory.Queries) error {
		tun, err = q.OpenTunnel(ctx, inventory.Tunnel{Gateway: "gw1", NodeID: nodeID, AttestationID: a.ID, WireGuardPublicKey: pub[:]}, ttl)
		return err
	}))
	return tun
}

func (b bundle) peers(t *testing.T) map[wgtypes.Key][]string {
	t.Helper()
	d, err := b.client.Device(b.iface)
	require.NoError(t, err)
	out := map[wgtypes.Key][]string{}
	for _, p := range d.Peers {
		for _, n := range p.AllowedIPs {
			out[p.PublicKey] = append(out[p.PublicKey], n.String())
		}
	}
	return out
}

func key(t *testing.T, tun inventory.Tunnel) wgtypes.Key {
	k, err := wgtypes.NewKey(tun.WireGuardPublicKey)
	require.NoError(t, err)
	return k
}

func TestReconcileMakesTheDeviceEqualTheInventory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	var tunnels []inventory.Tunnel
	for i := range 3 {
		tunnels = append(tunnels, b.openTunnel(t, fmt.Sprintf("n%d", i), 10*time.Minute))
	}
	// A peer nobody opened, and one open tunnel whose peer has the wrong AllowedIPs.
	rogue, err := wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	require.NoError(t, b.client.ConfigureDevice(b.iface, wgtypes.Config{Peers: []wgtypes.PeerConfig{
		{PublicKey: rogue.PublicKey(), AllowedIPs: ipnets("100.64.0.200/32")},
		{PublicKey: key(t, tunnels[0]), AllowedIPs: ipnets("100.64.0.0/24")},
	}}))

	b.clock.Advance(time.Minute) // older than the grace of a just-opened tunnel
	res, err := b.gw.Reconcile(ctx)
	require.NoError(t, err)
	require.Equal(t, gateway.Result{Added: 2, Removed: 1, Corrected: 1, Peers: 3}, res)
	want := map[wgtypes.Key][]string{}
	for _, tun := range tunnels {
		want[key(t, tun)] = []string{tun.AddressV4.String() + "/32"}
	}
	require.Equal(t, want, b.peers(t))

	evs, err := b.store.QueryEvents(ctx, inventory.EventQuery{Kinds: []string{gateway.KindPeerRemoved, gateway.KindPeerRestored}})
	require.NoError(t, err)
	require.Len(t, evs, 3, "one removal and two restorations are recorded")

	res, err = b.gw.Reconcile(ctx)
	require.NoError(t, err)
	require.Equal(t, gateway.Result{Peers: 3}, res, "a second pass has nothing to do")
}

func TestExpiryRemovesPeerAndReleasesAddress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	short := b.openTunnel(t, "n1", time.Minute)
	long := b.openTunnel(t, "n2", time.Hour)
	require.NoError(t, b.gw.AddPeer(short))
	require.NoError(t, b.gw.AddPeer(long))

	b.clock.Advance(30 * time.Second)
	res, err := b.gw.Reconcile(ctx)
	require.NoError(t, err)
	require.Zero(t, res.Expired)

	b.clock.Advance(31 * time.Second) // no sleeping: the store's clock decides
	res, err = b.gw.Reconcile(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, res.Expired)
	require.Equal(t, map[wgtypes.Key][]string{key(t, long): {long.AddressV4.String() + "/32"}}, b.peers(t))
	got, err := b.store.GetTunnel(ctx, short.ID)
	require.NoError(t, err)
	require.Equal(t, inventory.TunnelExpired, got.State)
	evs, err := b.store.QueryEvents(ctx, inventory.EventQuery{NodeID: "n1", Kinds: []string{gateway.KindExpired}})
	require.NoError(t, err)
	require.Len(t, evs, 1)

	// The address is free again: the next tunnel gets it.
	again := b.openTunnel(t, "n3", time.Hour)
	require.Equal(t, short.AddressV4, again.AddressV4)
}

// countingDevice counts configuration calls, makes each one slow (as a busy device is), and
// fails those that touch a given key.
type countingDevice struct {
	*wgctrl.Client
	calls atomic.Int32
	bad   wgtypes.Key
}

func (d *countingDevice) ConfigureDevice(name string, cfg wgtypes.Config) error {
	d.calls.Add(1)
	// The callers that arrive meanwhile queue for the next call.
	time.Sleep(100 * time.Millisecond)
	for _, p := range cfg.Peers {
		if p.PublicKey == d.bad {
			return errors.New("device refused the peer")
		}
	}
	return d.Client.ConfigureDevice(name, cfg)
}

// TestConcurrentPeerChangesShareConfigurationCalls: peers added and removed by concurrent
// callers reach the device in a few calls, not one each; each caller learns its own outcome,
// and one refused peer does not fail the others of its batch.
func TestConcurrentPeerChangesShareConfigurationCalls(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 100
	tunnels := make([]inventory.Tunnel, n)
	for i := range tunnels {
		tunnels[i] = b.openTunnel(t, fmt.Sprintf("n%03d", i), time.Hour)
	}
	dev := &countingDevice{Client: b.client}
	gw, err := gateway.New(gateway.Config{Name: "gw1", Interface: b.iface}, dev, b.store,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	require.NoError(t, err)
	each := func(ts []inventory.Tunnel, op func(inventory.Tunnel) error) []error {
		errs := make([]error, len(ts))
		var wg sync.WaitGroup
		for i, tun := range ts {
			wg.Go(func() { errs[i] = op(tun) })
		}
		wg.Wait()
		return errs
	}

	for i, err := range each(tunnels[:n-1], gw.AddPeer) {
		require.NoError(t, err, "caller %d", i)
	}
	require.Len(t, b.peers(t), n-1)
	t.Logf("%d AddPeer calls, %d configuration calls", n-1, dev.calls.Load())
	require.LessOrEqual(t, int(dev.calls.Load()), 3, "one call for the first caller, one or two for those queued behind it")

	dev.calls.Store(0)
	for i, err := range each(tunnels[:n-1], gw.RemovePeer) {
		require.NoError(t, err, "caller %d", i)
	}
	require.Empty(t, b.peers(t))
	require.LessOrEqual(t, int(dev.calls.Load()), 3, "removals share calls too")

	// A peer the device refuses fails its caller only.
	dev.bad = key(t, tunnels[7])
	errs := each(tunnels[:10], gw.AddPeer)
	for i, err := range errs {
		if i == 7 {
			require.ErrorContains(t, err, "device refused the peer")
			require.ErrorContains(t, err, tunnels[7].ID)
		} else {
			require.NoError(t, err, "caller %d", i)
		}
	}
	peers := b.peers(t)
	require.Len(t, peers, 9)
	require.NotContains(t, peers, key(t, tunnels[7]))
}
