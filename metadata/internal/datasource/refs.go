package datasource

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/attestboot/attestboot/services/batch"
	"github.com/attestboot/attestboot/services/inventory"
)

// refReader reads which open tunnels own addresses. Implemented by *inventory.Store.
type refReader interface {
	OpenTunnelRefsByAddress(ctx context.Context, gateway string, addrs []netip.Addr) (map[netip.Addr]inventory.TunnelRef, error)
}

// refs answers, for every request, which open tunnel owns its source address now. The
// requests that arrive while one lookup runs share the next: one statement for all of them
// instead of one each (a boot makes five requests; a storm, thousands at once). Every lookup
// still begins after its request arrived, so it sees each tunnel close committed before that,
// as a lookup of its own would.
type refs struct {
	gateway string
	store   refReader
	queue   batch.Queue[*refRequest]
}

// refRequest is one request's lookup; done receives its answer once.
type refRequest struct {
	addr netip.Addr
	done chan refAnswer
}

type refAnswer struct {
	ref inventory.TunnelRef
	err error
}

const (
	// maxRefBatch bounds the addresses of one statement.
	maxRefBatch = 1024
	// refTimeout bounds one batch's statement; a request stops waiting at its own deadline.
	refTimeout = 10 * time.Second
)

func newRefs(gateway string, store refReader) *refs {
	r := &refs{gateway: gateway, store: store}
	r.queue = batch.Queue[*refRequest]{Run: r.run, Max: maxRefBatch}
	return r
}

// get returns the open tunnel owning addr, or an error that is inventory.ErrNotFound when
// none does.
func (r *refs) get(ctx context.Context, addr netip.Addr) (inventory.TunnelRef, error) {
	req := &refRequest{addr: addr.Unmap(), done: make(chan refAnswer, 1)}
	r.queue.Add(req)
	select {
	case a := <-req.done:
		return a.ref, a.err
	case <-ctx.Done():
		return inventory.TunnelRef{}, ctx.Err()
	}
}

// run looks up one batch. Its statement is not bound to any one request: one request giving
// up must not fail the others.
func (r *refs) run(reqs []*refRequest) {
	addrs := make([]netip.Addr, 0, len(reqs))
	seen := make(map[netip.Addr]bool, len(reqs))
	for _, req := range reqs {
		if !seen[req.addr] {
			seen[req.addr] = true
			addrs = append(addrs, req.addr)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), refTimeout)
	defer cancel()
	found, err := r.store.OpenTunnelRefsByAddress(ctx, r.gateway, addrs)
	for _, req := range reqs {
		ref, ok := found[req.addr]
		switch {
		case err != nil:
			req.done <- refAnswer{err: err}
		case !ok:
			req.done <- refAnswer{err: fmt.Errorf("open tunnel of %s on gateway %q: %w", req.addr, r.gateway, inventory.ErrNotFound)}
		default:
			req.done <- refAnswer{ref: ref}
		}
	}
}
