package inventory_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

// attested creates a node with a passed attestation and returns a tunnel request for it.
func attested(t *testing.T, b bundle, nodeID, gateway string) inventory.Tunnel {
	t.Helper()
	ctx := context.Background()
	if _, err := b.store.GetNode(ctx, nodeID); err != nil {
		_, err := b.store.CreateNode(ctx, inventory.Node{ID: nodeID, Enabled: true})
		require.NoError(t, err)
	}
	ek := make([]byte, 32)
	_, err := rand.Read(ek)
	require.NoError(t, err)
	s := newSession(nodeID, 0)
	s.EKSHA256 = ek
	sess, err := b.store.CreateSession(ctx, s, time.Minute)
	require.NoError(t, err)
	a, err := b.store.CreateAttestation(ctx, inventory.Attestation{
		SessionID: sess.ID, NodeID: nodeID, EKSHA256: ek, AKSHA256: ek, WireGuardPublicKey: ek,
	}, time.Minute)
	require.NoError(t, err)
	return inventory.Tunnel{Gateway: gateway, NodeID: nodeID, AttestationID: a.ID, WireGuardPublicKey: ek}
}

func gateway(t *testing.T, b bundle, name, v4, v6 string) {
	t.Helper()
	g := inventory.Gateway{Name: name, PublicKey: bytes.Repeat([]byte{7}, 32), Endpoint: "127.0.0.1:51820", KeepaliveSeconds: 25}
	if v4 != "" {
		g.IPv4Pool = netip.MustParsePrefix(v4)
		g.AddressV4 = g.IPv4Pool.Addr().Next()
	}
	if v6 != "" {
		g.IPv6Pool = netip.MustParsePrefix(v6)
		g.AddressV6 = g.IPv6Pool.Addr().Next()
	}
	_, err := b.store.UpsertGateway(context.Background(), g)
	require.NoError(t, err)
}

func open(t *testing.T, b bundle, req inventory.Tunnel) (inventory.Tunnel, error) {
	var tun inventory.Tunnel
	err := b.store.InTx(context.Background(), func(q *inventory.Queries) error {
		var err error
		tun, err = q.OpenTunnel(context.Background(), req, 10*time.Minute)
		return err
	})
	return tun, err
}

func TestTunnelAddressAllocation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	gateway(t, b, "gw1", "100.64.0.0/29", "fd00:a::/120")

	// .1 is the gateway's; nodes get .2 to .6 (.7 is broadcast), the same offset in IPv6.
	var tunnels []inventory.Tunnel
	for i := range 5 {
		tun, err := open(t, b, attested(t, b, fmt.Sprintf("n%d", i), "gw1"))
		require.NoError(t, err)
		require.Equal(t, netip.AddrFrom4([4]byte{100, 64, 0, byte(2 + i)}), tun.AddressV4)
		require.Equal(t, netip.MustParseAddr(fmt.Sprintf("fd00:a::%x", 2+i)), tun.AddressV6)
		require.Equal(t, b.clock.Now().Add(10*time.Minute), tun.ExpiresAt)
		tunnels = append(tunnels, tun)
	}
	_, err := open(t, b, attested(t, b, "n9", "gw1"))
	require.ErrorIs(t, err, inventory.ErrPoolExhausted)

	// Closing releases the address; the lowest free one is handed out next.
	closed, changed, err := b.store.CloseTunnel(ctx, tunnels[1].ID, inventory.TunnelClosed, "phone_home")
	require.NoError(t, err)
	require.True(t, changed)
	require.Equal(t, inventory.TunnelClosed, closed.State)
	_, changed, err = b.store.CloseTunnel(ctx, tunnels[1].ID, inventory.TunnelClosed, "again")
	require.NoError(t, err)
	require.False(t, changed, "closing twice changes nothing")
	again, err := open(t, b, attested(t, b, "n9", "gw1"))
	require.NoError(t, err)
	require.Equal(t, tunnels[1].AddressV4, again.AddressV4)

	// Events passed to OpenTunnel name the tunnel, in the same transaction.
	var withEvent inventory.Tunnel
	require.NoError(t, b.store.InTx(ctx, func(q *inventory.Queries) error {
		_, _, err := q.CloseTunnel(ctx, again.ID, inventory.TunnelClosed, "x")
		if err != nil {
			return err
		}
		withEvent, err = q.OpenTunnel(ctx, attested(t, b, "n11", "gw1"), time.Minute,
			inventory.Event{NodeID: "n11", Kind: "tunnel.opened", Service: "test", Detail: map[string]any{"extra": "kept"}})
		return err
	}))
	evs, err := b.store.QueryEvents(ctx, inventory.EventQuery{NodeID: "n11", Kinds: []string{"tunnel.opened"}})
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, map[string]any{"extra": "kept", "tunnel_id": withEvent.ID, "gateway": "gw1",
		"addresses": []any{withEvent.AddressV4.String() + "/32", withEvent.AddressV6.String() + "/128"}}, evs[0].Detail)
	again = withEvent

	got, err := b.store.OpenTunnelByAddress(ctx, "gw1", again.AddressV6)
	require.NoError(t, err)
	require.Equal(t, again.ID, got.ID)
	_, err = b.store.OpenTunnelByAddress(ctx, "gw1", netip.MustParseAddr("100.64.0.1"))
	require.ErrorIs(t, err, inventory.ErrNotFound, "the gateway's own address is no tunnel")

	// The attestation can open only one tunnel.
	req := attested(t, b, "n10", "gw1")
	_, _, err = b.store.CloseTunnel(ctx, tunnels[2].ID, inventory.TunnelClosed, "x")
	require.NoError(t, err)
	_, err = open(t, b, req)
	require.NoError(t, err)
	_, _, err = b.store.CloseTunnel(ctx, tunnels[3].ID, inventory.TunnelClosed, "x")
	require.NoError(t, err)
	_, err = open(t, b, req)
	require.ErrorIs(t, err, inventory.ErrConflict)
}

func TestTunnelAllocationIsSafeUnderConcurrency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	gateway(t, b, "gw1", "100.64.0.0/16", "")
	const n = 120
	reqs := make([]inventory.Tunnel, n)
	for i := range reqs {
		reqs[i] = attested(t, b, fmt.Sprintf("n%03d", i), "gw1")
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[netip.Addr]bool{}
	)
	for _, req := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tun, err := open(t, b, req)
			if !assertNoError(t, err) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			require.False(t, seen[tun.AddressV4], "address %s handed out twice", tun.AddressV4)
			seen[tun.AddressV4] = true
		}()
	}
	wg.Wait()
	require.Len(t, seen, n)
	// Dense: exactly offsets 2..n+1.
	for i := range n {
		require.True(t, seen[netip.AddrFrom4([4]byte{100, 64, byte((i + 2) >> 8), byte(i + 2)})])
	}
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

func TestTunnelExpiryAndListing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	gateway(t, b, "gw1", "", "fd00:b::/64")
	first, err := open(t, b, attested(t, b, "n1", "gw1"))
	require.NoError(t, err)
	require.False(t, first.AddressV4.IsValid())
	require.Equal(t, netip.MustParseAddr("fd00:b::2"), first.AddressV6)
	b.clock.Advance(5 * time.Minute)
	second, err := open(t, b, attested(t, b, "n2", "gw1"))
	require.NoError(t, err)

	b.clock.Advance(5 * time.Minute) // first is due, second not yet
	expired, err := b.store.ExpireTunnels(ctx, "gw1")
	require.NoError(t, err)
	require.Len(t, expired, 1)
	require.Equal(t, first.ID, expired[0].ID)
	require.Equal(t, inventory.TunnelExpired, expired[0].State)
	open, err := b.store.OpenTunnels(ctx, "gw1")
	require.NoError(t, err)
	require.Len(t, open, 1)
	require.Equal(t, second.ID, open[0].ID)

	marked, err := b.store.MarkPhonedHome(ctx, second.ID)
	require.NoError(t, err)
	require.Equal(t, b.clock.Now(), marked.PhonedHomeAt)

	page, next, err := b.store.ListTunnels(ctx, inventory.TunnelFilter{Gateway: "gw1", Limit: 1})
	require.NoError(t, err)
	require.Equal(t, second.ID, page[0].ID, "newest first")
	page, next, err = b.store.ListTunnels(ctx, inventory.TunnelFilter{Gateway: "gw1", Limit: 1, After: next})
	require.NoError(t, err)
	require.Equal(t, first.ID, page[0].ID)
	require.Empty(t, next)
	page, _, err = b.store.ListTunnels(ctx, inventory.TunnelFilter{States: []inventory.TunnelState{inventory.TunnelExpired}})
	require.NoError(t, err)
	require.Len(t, page, 1)
	_, _, err = b.store.ListTunnels(ctx, inventory.TunnelFilter{After: "garbage"})
	require.ErrorIs(t, err, inventory.ErrInvalid)
}

// TestOpenTunnelAt: the caller's offset becomes the same offset in both pools; an address in
// use is ErrAddressTaken (a conflict), leaves nothing behind and does not fail the transaction;
// an offset outside the pool is ErrPoolExhausted; the offsets read back with TunnelOffset.
func TestOpenTunnelAt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	gateway(t, b, "gw1", "100.64.0.0/29", "fd00:a::/120")
	g, err := b.store.GetGateway(ctx, "gw1")
	require.NoError(t, err)
	require.EqualValues(t, 6, g.MaxOffset(), ".1 to .6 (.7 is broadcast)")
	require.EqualValues(t, 1, g.OwnOffset(), "the gateway's own .1")

	openAt := func(off int64, req inventory.Tunnel) (inventory.Tunnel, error) {
		var tun inventory.Tunnel
		err := b.store.InTx(ctx, func(q *inventory.Queries) error {
			var err error
			tun, err = q.OpenTunnelAt(ctx, g, off, req, time.Minute,
				inventory.Event{NodeID: req.NodeID, Kind: "tunnel.opened", Service: "test"})
			return err
		})
		return tun, err
	}
	tun, err := openAt(4, attested(t, b, "n1", "gw1"))
	require.NoError(t, err)
	require.Equal(t, netip.MustParseAddr("100.64.0.4"), tun.AddressV4)
	require.Equal(t, netip.MustParseAddr("fd00:a::4"), tun.AddressV6)
	require.EqualValues(t, 4, g.TunnelOffset(tun))

	_, err = openAt(4, attested(t, b, "n2", "gw1"))
	require.ErrorIs(t, err, inventory.ErrAddressTaken)
	require.ErrorIs(t, err, inventory.ErrConflict)
	// A taken address leaves the transaction usable: the next offset goes in it.
	var next inventory.Tunnel
	req := attested(t, b, "n5", "gw1")
	err = b.store.InTx(ctx, func(q *inventory.Queries) error {
		_, err := q.OpenTunnelAt(ctx, g, 4, req, time.Minute, inventory.Event{NodeID: "n5", Kind: "tunnel.opened", Service: "test"})
		require.ErrorIs(t, err, inventory.ErrAddressTaken)
		next, err = q.OpenTunnelAt(ctx, g, 5, req, time.Minute, inventory.Event{NodeID: "n5", Kind: "tunnel.opened", Service: "test"})
		return err
	})
	require.NoError(t, err)
	require.EqualValues(t, 5, g.TunnelOffset(next))
	evs, err := b.store.QueryEvents(ctx, inventory.EventQuery{NodeID: "n5"})
	require.NoError(t, err)
	require.Len(t, evs, 1, "the event of the insert that took its address only")
	require.Equal(t, next.ID, evs[0].Detail["tunnel_id"])
	_, err = openAt(1, attested(t, b, "n2", "gw1"))
	require.ErrorIs(t, err, inventory.ErrConflict, "the gateway's own address")
	for _, off := range []int64{0, 7, -1} {
		_, err = openAt(off, attested(t, b, "n2", "gw1"))
		require.ErrorIs(t, err, inventory.ErrPoolExhausted, "offset %d", off)
	}
	evs, err = b.store.QueryEvents(ctx, inventory.EventQuery{NodeID: "n2"})
	require.NoError(t, err)
	require.Empty(t, evs, "a refused open writes no event")
	n, err := b.store.CountOpenTunnels(ctx, "gw1")
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	gateway(t, b, "gw2", "100.65.0.0/24", "fd01::/64")
	_, err = open(t, b, attested(t, b, "n4", "gw2"))
	require.NoError(t, err)
	all, err := b.store.CountAllOpenTunnels(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 3, all, "two on gw1, one on gw2")

	// The locked allocation still finds the lowest free address around it.
	low, err := open(t, b, attested(t, b, "n3", "gw1"))
	require.NoError(t, err)
	require.EqualValues(t, 2, g.TunnelOffset(low))
}
