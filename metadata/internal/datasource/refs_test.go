package datasource

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

var _ refReader = (*inventory.Store)(nil)

// gatedRefs is a refReader whose first call waits at gate, so that requests pile up behind it.
type gatedRefs struct {
	gate    chan struct{}
	entered chan struct{}
	owned   map[netip.Addr]inventory.TunnelRef
	err     error

	mu    sync.Mutex
	calls [][]netip.Addr
}

func (g *gatedRefs) OpenTunnelRefsByAddress(_ context.Context, gateway string, addrs []netip.Addr) (map[netip.Addr]inventory.TunnelRef, error) {
	g.mu.Lock()
	g.calls = append(g.calls, addrs)
	first := len(g.calls) == 1
	g.mu.Unlock()
	if first {
		close(g.entered)
		<-g.gate
	}
	if g.err != nil {
		return nil, g.err
	}
	found := map[netip.Addr]inventory.TunnelRef{}
	for _, a := range addrs {
		if ref, ok := g.owned[a]; ok {
			found[a] = ref
		}
	}
	return found, nil
}

// TestRefsBatchTheRequestsThatWait: the lookups asked for while one runs go together into the
// next call, each address once; each request gets its own answer (the tunnel, or ErrNotFound);
// a request that gives up does not fail the others; a failed call fails the requests in it.
func TestRefsBatchTheRequestsThatWait(t *testing.T) {
	t.Parallel()
	a, b, c := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.3"), netip.MustParseAddr("100.64.0.4")
	store := &gatedRefs{gate: make(chan struct{}), entered: make(chan struct{}),
		owned: map[netip.Addr]inventory.TunnelRef{a: {ID: "ta"}, b: {ID: "tb"}}}
	r := newRefs("gw", store)
	ctx := context.Background()

	first := make(chan error, 1)
	go func() {
		ref, err := r.get(ctx, a)
		if err == nil && ref.ID != "ta" {
			err = errors.New("wrong tunnel " + ref.ID)
		}
		first <- err
	}()
	<-store.entered // the first call runs, and waits

	type answer struct {
		addr netip.Addr
		ref  inventory.TunnelRef
		err  error
	}
	answers := make(chan answer, 7)
	var wg sync.WaitGroup
	for _, addr := range []netip.Addr{a, b, b, c, netip.AddrFrom16(a.As16()), b, c} {
		wg.Go(func() {
			ref, err := r.get(ctx, addr)
			answers <- answer{addr, ref, err}
		})
	}
	gaveUp, cancel := context.WithCancel(ctx)
	cancel()
	_, err := r.get(gaveUp, b)
	require.ErrorIs(t, err, context.Canceled)
	require.Eventually(t, func() bool { return r.queue.Len() == 8 }, 5*time.Second, time.Millisecond, "all queued behind the first call")
	close(store.gate)
	require.NoError(t, <-first)
	wg.Wait()
	close(answers)
	for ans := range answers {
		switch ans.addr.Unmap() {
		case a:
			require.NoError(t, ans.err)
			require.Equal(t, "ta", ans.ref.ID)
		case b:
			require.NoError(t, ans.err)
			require.Equal(t, "tb", ans.ref.ID)
		case c:
			require.ErrorIs(t, ans.err, inventory.ErrNotFound)
			require.ErrorContains(t, ans.err, "100.64.0.4")
		}
	}
	require.Len(t, store.calls, 2, "one call for the first request, one for all that waited")
	require.ElementsMatch(t, []netip.Addr{a, b, c}, store.calls[1], "each address once, IPv4-mapped ones unmapped")

	store.err = errors.New("connection refused")
	_, err = r.get(ctx, a)
	require.ErrorContains(t, err, "connection refused")
	require.NotErrorIs(t, err, inventory.ErrNotFound)
}
