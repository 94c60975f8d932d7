// Package addrpool hands out a gateway's tunnel address offsets in this process, lowest free
// first. Without it every OpenTunnel of a boot storm queued on the gateway's row lock in the
// inventory while it searched the open tunnels for the lowest free address: thousands of opens
// in single file. Here a take costs a map lookup under a mutex.
//
// The inventory's unique indexes stay the arbiter: the pool may be wrong (another replica took
// an address, or freed one, since the pool last read the inventory), and a wrong guess inserts
// nothing (the insert yields to the unique index) and the caller answers with MarkUsed and
// another Take; Reset re-reads the truth.
package addrpool

import (
	"math/rand/v2"
	"sync"
)

// Pool tracks which offsets of one gateway's address pool are in use. It is safe for
// concurrent use.
type Pool struct {
	max int64 // highest usable offset
	own int64 // the gateway's own offset, never handed out (0: none)

	mu      sync.Mutex
	used    map[int64]bool // open tunnels' offsets, as last known
	pending map[int64]bool // taken and not yet confirmed or released
	low     int64          // where Take starts looking (no free offset below it, unless Scatter moved it)
	loaded  bool
}

// New returns a pool of offsets 1..max, never handing out own. It is not loaded: Reset it
// with the inventory's open tunnels before the first Take.
func New(max, own int64) *Pool {
	return &Pool{max: max, own: own, used: map[int64]bool{}, pending: map[int64]bool{}, low: 1}
}

// Loaded reports whether Reset was called.
func (p *Pool) Loaded() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.loaded
}

// Reset replaces what the pool knows with the offsets of the open tunnels read from the
// inventory. Offsets taken and not yet confirmed stay taken: their tunnels may not be
// committed yet.
func (p *Pool) Reset(open []int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.used = make(map[int64]bool, len(open))
	for _, off := range open {
		p.used[off] = true
	}
	p.low = 1
	p.loaded = true
}

// Take returns the lowest offset neither in use nor pending (from where Scatter moved the
// search, if it did, wrapping around) and marks it pending, or false when the pool looks
// exhausted.
func (p *Pool) Take() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	free := func(off int64) bool { return off != p.own && !p.used[off] && !p.pending[off] }
	for off := p.low; off <= p.max; off++ {
		if free(off) {
			p.pending[off] = true
			p.low = off + 1
			return off, true
		}
	}
	for off := int64(1); off < min(p.low, p.max+1); off++ {
		if free(off) {
			p.pending[off] = true
			p.low = off + 1
			return off, true
		}
	}
	p.low = p.max + 1
	return 0, false
}

// Scatter moves the search to a random offset: after a collision, another allocator (a second
// instance of the gateway) is taking the same lowest offsets, and following it would collide
// at every take.
func (p *Pool) Scatter() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.low = 1 + rand.Int64N(p.max)
}

// Confirm records that the tunnel at off was committed.
func (p *Pool) Confirm(off int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pending, off)
	p.used[off] = true
}

// MarkUsed records that off is in use by a tunnel this pool did not know of (the inventory
// refused it as taken).
func (p *Pool) MarkUsed(off int64) { p.Confirm(off) }

// Release frees off: its tunnel was not created, or was closed.
func (p *Pool) Release(off int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pending, off)
	delete(p.used, off)
	if off >= 1 && off < p.low {
		p.low = off
	}
}
