package addrpool_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/tunnelmgr/internal/addrpool"
)

func take(t *testing.T, p *addrpool.Pool) int64 {
	t.Helper()
	off, ok := p.Take()
	require.True(t, ok)
	return off
}

func TestLowestFreeFirst(t *testing.T) {
	t.Parallel()
	p := addrpool.New(6, 1) // offset 1 is the gateway's own address
	require.False(t, p.Loaded())
	p.Reset([]int64{3})
	require.True(t, p.Loaded())
	require.EqualValues(t, 2, take(t, p), "1 is the gateway's, 2 is free")
	require.EqualValues(t, 4, take(t, p), "3 is open, 2 pending")
	p.Release(2) // its open was refused
	require.EqualValues(t, 2, take(t, p), "a released offset is the lowest free again")
	p.Confirm(2)
	p.Confirm(4)
	require.EqualValues(t, 5, take(t, p))
	p.MarkUsed(6) // another replica holds 6
	_, ok := p.Take()
	require.False(t, ok, "1..6: own, 2, 3, 4, 5 pending, 6 used elsewhere")
	p.Release(3) // closed
	require.EqualValues(t, 3, take(t, p))
}

func TestResetKeepsPendingTakes(t *testing.T) {
	t.Parallel()
	p := addrpool.New(10, 0)
	p.Reset(nil)
	a := take(t, p)
	b := take(t, p)
	require.Equal(t, []int64{1, 2}, []int64{a, b})
	p.Confirm(a)
	// The inventory read happened before a committed and knows of a tunnel at 5 instead.
	p.Reset([]int64{5})
	require.EqualValues(t, 1, take(t, p), "Reset trusts the inventory: 1 looks free again (the unique index will say otherwise)")
	require.EqualValues(t, 3, take(t, p), "2 is still pending, 5 open")
	require.EqualValues(t, 4, take(t, p))
	require.EqualValues(t, 6, take(t, p))
}

func TestConcurrentTakesNeverCollide(t *testing.T) {
	t.Parallel()
	const n = 5000
	p := addrpool.New(n, 0)
	p.Reset(nil)
	var (
		mu   sync.Mutex
		seen = map[int64]bool{}
		wg   sync.WaitGroup
	)
	for range 50 {
		wg.Go(func() {
			for range n / 50 {
				off, ok := p.Take()
				if !ok {
					t.Error("exhausted early")
					return
				}
				mu.Lock()
				if seen[off] {
					t.Errorf("offset %d handed out twice", off)
				}
				seen[off] = true
				mu.Unlock()
				p.Confirm(off)
			}
		})
	}
	wg.Wait()
	require.Len(t, seen, n)
	_, ok := p.Take()
	require.False(t, ok)
}

// TestScatterWrapsAround: after Scatter the search starts anywhere and wraps, so every free
// offset is still found and none twice.
func TestScatterWrapsAround(t *testing.T) {
	t.Parallel()
	p := addrpool.New(50, 7)
	p.Reset([]int64{10, 20, 30})
	seen := map[int64]bool{}
	for range 46 {
		p.Scatter()
		off := take(t, p)
		require.False(t, seen[off], "offset %d twice", off)
		require.NotContains(t, []int64{7, 10, 20, 30}, off)
		require.True(t, off >= 1 && off <= 50)
		seen[off] = true
	}
	p.Scatter()
	_, ok := p.Take()
	require.False(t, ok, "50 offsets: own, 3 open, 46 taken")
}
