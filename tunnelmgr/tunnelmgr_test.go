package tunnelmgr_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/tunnelmgr/internal/tunnel"
)

func TestTrafficFlowsUntilTheTunnelCloses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	tm := e.start(t, instanceOpts{})
	n := e.newNode(t)
	attID, key := e.attestation(t, "x1000c0s0b0n0")
	pub := key.PublicKey()

	resp, err := tm.node.OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: attID, WireguardPublicKey: pub[:]})
	require.NoError(t, err)
	require.Equal(t, []string{"100.64.0.2/32"}, resp.GetNodeAddresses())
	require.Equal(t, []string{"100.64.0.1"}, resp.GetGatewayAddresses())
	require.Equal(t, "http://100.64.0.1/", resp.GetMetadataUrl())
	require.Equal(t, map[wgtypes.Key][]string{pub: {"100.64.0.2/32"}}, peers(t, tm.iface))

	e.echo(t, "100.64.0.1:9000")
	n.up(t, key, resp)
	require.NoError(t, n.exchange("100.64.0.1:9000", 5*time.Second), "traffic flows over the tunnel")

	closed, err := tm.admin.CloseTunnel(ctx, &tunnelmgrv1.CloseTunnelRequest{
		Target: &tunnelmgrv1.CloseTunnelRequest_NodeId{NodeId: "x1000c0s0b0n0"}, Reason: "phone_home"})
	require.NoError(t, err)
	require.Equal(t, tunnelmgrv1.TunnelState_TUNNEL_STATE_CLOSED, closed.GetTunnel().GetState())
	require.Empty(t, peers(t, tm.iface), "the peer is gone")
	require.Error(t, n.exchange("100.64.0.1:9000", time.Second), "no traffic after close")

	evs, err := e.store.QueryEvents(ctx, inventory.EventQuery{NodeID: "x1000c0s0b0n0"})
	require.NoError(t, err)
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind)
	}
	require.Equal(t, []string{tunnel.KindOpened, tunnel.KindClosed}, kinds)

	// The address went back to the pool.
	attID2, key2 := e.attestation(t, "x1000c0s0b0n1")
	pub2 := key2.PublicKey()
	resp2, err := tm.node.OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: attID2, WireguardPublicKey: pub2[:]})
	require.NoError(t, err)
	require.Equal(t, []string{"100.64.0.2/32"}, resp2.GetNodeAddresses())
}

func TestRefusalsChangeNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	tm := e.start(t, instanceOpts{})
	// One legitimate tunnel, so "untouched" means more than "empty".
	attID, key := e.attestation(t, "n1")
	pub := key.PublicKey()
	first, err := tm.node.OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: attID, WireguardPublicKey: pub[:]})
	require.NoError(t, err)
	before := peers(t, tm.iface)

	other, _ := wgtypes.GeneratePrivateKey()
	otherPub := other.PublicKey()
	expiredID, expiredKey := e.attestationFor(t, "n3", time.Millisecond)
	expiredPub := expiredKey.PublicKey()
	time.Sleep(10 * time.Millisecond)
	unusedID, unusedKey := e.attestation(t, "n2")
	unusedPub := unusedKey.PublicKey()
	disabledID, disabledKey := e.attestation(t, "n4")
	disabledPub := disabledKey.PublicKey()
	off := false
	_, err = e.store.UpdateNode(ctx, "n4", inventory.NodeUpdate{Enabled: &off})
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		req    *tunnelmgrv1.OpenTunnelRequest
		code   codes.Code
		reason string
	}{
		{"no attestation", &tunnelmgrv1.OpenTunnelRequest{AttestationId: "0b9d3c1e-5f4a-4e2b-8c7d-6a5b4c3d2e1f", WireguardPublicKey: otherPub[:]}, codes.PermissionDenied, tunnel.ReasonAttestationUnknown},
		{"another key than the quote bound", &tunnelmgrv1.OpenTunnelRequest{AttestationId: unusedID, WireguardPublicKey: otherPub[:]}, codes.PermissionDenied, tunnel.ReasonKeyMismatch},
		{"consumed attestation, another key", &tunnelmgrv1.OpenTunnelRequest{AttestationId: attID, WireguardPublicKey: otherPub[:]}, codes.PermissionDenied, tunnel.ReasonKeyMismatch},
		{"expired attestation: attest again", &tunnelmgrv1.OpenTunnelRequest{AttestationId: expiredID, WireguardPublicKey: expiredPub[:]}, codes.FailedPrecondition, tunnel.ReasonAttestationExpired},
		{"node disabled since it attested", &tunnelmgrv1.OpenTunnelRequest{AttestationId: disabledID, WireguardPublicKey: disabledPub[:]}, codes.PermissionDenied, tunnel.ReasonNodeDisabled},
		{"malformed id", &tunnelmgrv1.OpenTunnelRequest{AttestationId: "x", WireguardPublicKey: otherPub[:]}, codes.InvalidArgument, tunnel.ReasonInvalidRequest},
		{"short key", &tunnelmgrv1.OpenTunnelRequest{AttestationId: unusedID, WireguardPublicKey: otherPub[:31]}, codes.InvalidArgument, tunnel.ReasonInvalidRequest},
	} {
		_, err := tm.node.OpenTunnel(ctx, tc.req)
		require.Equal(t, tc.code, status.Code(err), tc.name)
		evs, err := e.store.QueryEvents(ctx, inventory.EventQuery{Kinds: []string{tunnel.KindRefused}})
		require.NoError(t, err)
		require.Equal(t, tc.reason, evs[len(evs)-1].Reason, tc.name)
		require.Equal(t, before, peers(t, tm.iface), "%s: the device is untouched", tc.name)
		open, err := e.store.OpenTunnels(ctx, "gw1")
		require.NoError(t, err)
		require.Len(t, open, 1, "%s: nothing taken from the pool", tc.name)
	}
	// The refused key mismatch did not burn n2's attestation: with its own key it still works.
	resp, err := tm.node.OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: unusedID, WireguardPublicKey: unusedPub[:]})
	require.NoError(t, err)
	require.NotEqual(t, first.GetTunnelId(), resp.GetTunnelId())

	// The same attestation cannot open a second tunnel: a retry gets the first one back.
	again, err := tm.node.OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: attID, WireguardPublicKey: pub[:]})
	require.NoError(t, err)
	require.Equal(t, first.GetTunnelId(), again.GetTunnelId())
	require.Equal(t, first.GetNodeAddresses(), again.GetNodeAddresses())
	open, err := e.store.OpenTunnels(ctx, "gw1")
	require.NoError(t, err)
	require.Len(t, open, 2)
	// Closing needs an admin credential.
	_, err = tm.anon.CloseTunnel(ctx, &tunnelmgrv1.CloseTunnelRequest{Target: &tunnelmgrv1.CloseTunnelRequest_TunnelId{TunnelId: first.GetTunnelId()}, Reason: "admin"})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	_, err = tm.anon.ListTunnels(ctx, &tunnelmgrv1.ListTunnelsRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	// Once closed, the attestation is spent for good.
	_, err = tm.admin.CloseTunnel(ctx, &tunnelmgrv1.CloseTunnelRequest{Target: &tunnelmgrv1.CloseTunnelRequest_TunnelId{TunnelId: first.GetTunnelId()}, Reason: "admin"})
	require.NoError(t, err)
	_, err = tm.node.OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: attID, WireguardPublicKey: pub[:]})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	evs, err := e.store.QueryEvents(ctx, inventory.EventQuery{Kinds: []string{tunnel.KindRefused}})
	require.NoError(t, err)
	require.Equal(t, tunnel.ReasonAttestationConsumed, evs[len(evs)-1].Reason)
	// The disabled node's attestation was not consumed: enabled again, it opens its tunnel.
	on := true
	_, err = e.store.UpdateNode(ctx, "n4", inventory.NodeUpdate{Enabled: &on})
	require.NoError(t, err)
	_, err = tm.node.OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: disabledID, WireguardPublicKey: disabledPub[:]})
	require.NoError(t, err)
}

// TestRetriesRacingTheirOpenGetItsTunnel: calls with one attestation at once (a node retrying a
// call whose answer is late) consume it once and all get that one tunnel, not a refusal.
func TestRetriesRacingTheirOpenGetItsTunnel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	tm := e.start(t, instanceOpts{})
	id, key := e.attestation(t, "n1")
	pub := key.PublicKey()
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, err := tm.node.OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: id, WireguardPublicKey: pub[:]})
			ids[i], errs[i] = resp.GetTunnelId(), err
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i], "call %d", i)
		require.Equal(t, ids[0], ids[i], "call %d", i)
	}
	open, err := e.store.OpenTunnels(ctx, "gw1")
	require.NoError(t, err)
	require.Len(t, open, 1)
	evs, err := e.store.QueryEvents(ctx, inventory.EventQuery{Kinds: []string{tunnel.KindRefused}})
	require.NoError(t, err)
	require.Empty(t, evs)
}

func TestConcurrentOpensThroughTwoInstancesShareOnePool(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	// Two instances of one gateway (same name, key and pool), each with its own device.
	a := e.start(t, instanceOpts{port: 7444})
	b := e.start(t, instanceOpts{port: 7445})
	const n = 500
	type req struct {
		id  string
		pub wgtypes.Key
	}
	reqs := make([]req, n)
	for i := range reqs {
		id, key := e.attestation(t, fmt.Sprintf("n%03d", i))
		reqs[i] = req{id, key.PublicKey()}
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		addrs = map[string]string{}
		errs  []error
	)
	sem := make(chan struct{}, 64)
	for i, r := range reqs {
		client := a.node
		if i%2 == 1 {
			client = b.node
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			resp, err := client.OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: r.id, WireguardPublicKey: r.pub[:]})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			addr := resp.GetNodeAddresses()[0]
			if prev, dup := addrs[addr]; dup {
				errs = append(errs, fmt.Errorf("address %s given to %s and %s", addr, prev, r.id))
			}
			addrs[addr] = r.id
		}()
	}
	wg.Wait()
	require.Empty(t, errs)
	require.Len(t, addrs, n, "every open its own address")
	// Each instance allocates in its own memory, lowest free first; after a collision with the
	// other one it jumps to a random place in the pool (addrpool.Scatter), so the addresses of
	// two instances are not dense, only distinct and in the pool.
	pool := netip.MustParsePrefix("100.64.0.0/16")
	for a := range addrs {
		p := netip.MustParsePrefix(a)
		require.True(t, pool.Contains(p.Addr()), "%s in the pool", a)
		require.NotEqual(t, "100.64.0.1/32", a, "never the gateway's own address")
		require.NotEqual(t, "100.64.255.255/32", a, "never the broadcast address")
	}
	open, err := e.store.CountOpenTunnels(ctx, "gw1")
	require.NoError(t, err)
	require.EqualValues(t, n, open)
}

func TestRestartRestoresPeersAndRemovesStrangers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	// An external device outlives the tunnelmgr process, as a kernel interface would.
	iface := e.gw.StartWireGuardGo(t, "gwx")
	require.NoError(t, e.gw.IP(ctx, "addr", "add", "100.64.0.1/16", "dev", iface))
	require.NoError(t, e.gw.IP(ctx, "link", "set", iface, "up"))
	tm := e.start(t, instanceOpts{external: iface})
	var keys []wgtypes.Key
	var ids []string
	for i := range 3 {
		attID, key := e.attestation(t, fmt.Sprintf("n%d", i))
		pub := key.PublicKey()
		resp, err := tm.node.OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: attID, WireguardPublicKey: pub[:]})
		require.NoError(t, err)
		keys = append(keys, pub)
		ids = append(ids, resp.GetTunnelId())
	}
	tm.proc.Kill() // kill -9: no shutdown path runs

	// While it is down: a stranger's peer appears, a tunnel's peer vanishes, and an admin
	// closes another tunnel in the inventory.
	c, err := wgctrl.New()
	require.NoError(t, err)
	defer c.Close()
	stranger, _ := wgtypes.GeneratePrivateKey()
	require.NoError(t, c.ConfigureDevice(iface, wgtypes.Config{Peers: []wgtypes.PeerConfig{
		{PublicKey: stranger.PublicKey()},
		{PublicKey: keys[0], Remove: true},
	}}))
	_, _, err = e.store.CloseTunnel(ctx, ids[2], inventory.TunnelClosed, "admin")
	require.NoError(t, err)

	e.start(t, instanceOpts{external: iface})
	require.Equal(t, map[wgtypes.Key][]string{
		keys[0]: {"100.64.0.2/32"},
		keys[1]: {"100.64.0.3/32"},
	}, peers(t, iface), "the restarted gateway holds exactly the open tunnels")

	// A peer added behind the running service's back is removed by the next reconciliation.
	require.NoError(t, c.ConfigureDevice(iface, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: stranger.PublicKey()}}}))
	require.Eventually(t, func() bool { return len(peers(t, iface)) == 2 }, 10*time.Second, 100*time.Millisecond)
}

func TestExpiredTunnelLosesItsPeer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	tm := e.start(t, instanceOpts{extra: []string{"-tunnel-ttl", "1s"}})
	attID, key := e.attestation(t, "n1")
	pub := key.PublicKey()
	_, err := tm.node.OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: attID, WireguardPublicKey: pub[:]})
	require.NoError(t, err)
	require.Len(t, peers(t, tm.iface), 1)
	// The process runs on the real clock (the injected-clock expiry test is in internal/gateway).
	require.Eventually(t, func() bool { return len(peers(t, tm.iface)) == 0 }, 10*time.Second, 100*time.Millisecond)
	open, err := e.store.OpenTunnels(ctx, "gw1")
	require.NoError(t, err)
	require.Empty(t, open)
}
