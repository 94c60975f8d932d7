package datasource

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attestboot/attestboot/metadata/internal/nodedocs"
	"github.com/attestboot/attestboot/metadata/internal/render"
	"github.com/attestboot/attestboot/services/clock"
	"github.com/attestboot/attestboot/services/inventory"
)

// sourceReader reads what a node's documents are made of, for the tunnel owning an address.
// Implemented by *inventory.Store.
type sourceReader interface {
	refReader
	NodeDocsSourceByAddress(ctx context.Context, gateway string, addr netip.Addr) (inventory.NodeDocsSource, error)
}

// cache keeps, per source address, the last read of the owning tunnel's documents source and
// the documents rendered from it, so that a node fetching its documents again (cloud-init
// retries, a boot storm of benchmark clients) costs one indexed lookup (batched with the
// other requests', see refs) instead of five queries, a render and an event write.
//
// Which tunnel owns the address is checked on every request, against the inventory: a cached
// read answers only a request whose address is still owned by the same open tunnel, in the
// same phone-home state. So a closed tunnel is refused at its first request after the close,
// and an address handed to another node's new tunnel never gets the old node's documents. What
// is cached is the rest (node, groups, cloud-init data, secrets, rendered documents), until
// this process changes it (admin writes, phone-homes) or a change notification arrives (any
// replica's or tool's change, see watchChanges), and for at most ttl. A read made while no
// notifications could arrive (the listener was not connected, or was reconnected since) is
// kept for at most unwatchedTTL.
type cache struct {
	gateway string
	store   sourceReader
	refs    *refs
	docs    *nodedocs.Builder
	ttl     time.Duration
	clock   clock.Clock
	// watch says whether change notifications are being received; nil: never.
	watch changeWatch

	// gen counts invalidations of every view; a view read under an older gen is stale.
	gen   atomic.Uint64
	mu    sync.Mutex
	slots map[netip.Addr]*slot
}

// slot is one source address's view and the lock that lets one request re-read it while the
// others for the same address wait for its result instead of querying too.
type slot struct {
	fill sync.Mutex
	cur  atomic.Pointer[view]
}

// unwatchedTTL bounds how long a read is kept when changes made elsewhere would go unnoticed.
const unwatchedTTL = time.Second

// changeWatch reports whether change notifications are being received, and in which session
// of the listener (see inventory.Listener.Listening).
type changeWatch interface {
	Listening() (session uint64, ok bool)
}

// view is one read of a tunnel's documents source.
type view struct {
	src  inventory.NodeDocsSource
	gen  uint64
	read time.Time
	// watched: notifications were received when the read began, in session watchSession.
	watched      bool
	watchSession uint64

	mu   sync.Mutex
	docs map[render.Kind]*document
}

// document is one rendered document of a view.
type document struct {
	res nodedocs.Result
	err error
	// recorded says that a delivery of res's secrets to this tunnel has been written to the
	// event log; later deliveries of the same document are batched (see audit).
	recordMu sync.Mutex
	recorded atomic.Bool
}

func newCache(gateway string, store sourceReader, docs *nodedocs.Builder, ttl time.Duration, clk clock.Clock, watch changeWatch) *cache {
	return &cache{gateway: gateway, store: store, refs: newRefs(gateway, store), docs: docs, ttl: ttl, clock: clk, watch: watch,
		slots: map[netip.Addr]*slot{}}
}

// fresh reports whether v may answer a request now that ref owns its address.
func (c *cache) fresh(v *view, ref inventory.TunnelRef) bool {
	return v != nil && v.src.Tunnel.ID == ref.ID && v.src.Tunnel.PhonedHomeAt.Equal(ref.PhonedHomeAt) &&
		v.gen == c.gen.Load() && c.clock.Now().Sub(v.read) < c.lifetime(v)
}

// lifetime is how long v may be kept: ttl if every change since it was read would have been
// notified, otherwise at most unwatchedTTL.
func (c *cache) lifetime(v *view) time.Duration {
	if v.watched {
		if session, ok := c.watch.Listening(); ok && session == v.watchSession {
			return c.ttl
		}
	}
	return min(c.ttl, unwatchedTTL)
}

// newView starts a view of a read about to be made: what is known before reading (the
// generation and the watch) is taken first, so that a change racing the read leaves it stale.
func (c *cache) newView() *view {
	v := &view{gen: c.gen.Load(), read: c.clock.Now(), docs: map[render.Kind]*document{}}
	if c.watch != nil {
		v.watchSession, v.watched = c.watch.Listening()
	}
	return v
}

// lookup returns the view of the open tunnel owning addr, reading it again unless the cached
// one is fresh. It is inventory.ErrNotFound when no open tunnel owns addr.
func (c *cache) lookup(ctx context.Context, addr netip.Addr) (*view, error) {
	ref, err := c.refs.get(ctx, addr)
	if errors.Is(err, inventory.ErrNotFound) {
		c.mu.Lock()
		delete(c.slots, addr)
		c.mu.Unlock()
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	s := c.slots[addr]
	if s == nil {
		s = &slot{}
		c.slots[addr] = s
	}
	c.mu.Unlock()
	if v := s.cur.Load(); c.fresh(v, ref) {
		return v, nil
	}
	s.fill.Lock()
	defer s.fill.Unlock()
	old := s.cur.Load()
	if c.fresh(old, ref) {
		return old, nil // another request re-read it meanwhile
	}
	v := c.newView()
	src, err := c.store.NodeDocsSourceByAddress(ctx, c.gateway, addr)
	if err != nil {
		s.cur.Store(nil)
		return nil, err
	}
	v.src = src
	if src.Tunnel.ID != ref.ID {
		// The address changed hands between the two reads: answer from the newer read, but
		// do not keep it, since ref no longer describes it.
		return v, nil
	}
	if old != nil && sameSource(old.src, src) {
		old.mu.Lock()
		for k, d := range old.docs {
			v.docs[k] = d
		}
		old.mu.Unlock()
	}
	s.cur.Store(v)
	return v, nil
}

// document renders kind once per view.
func (c *cache) document(v *view, kind render.Kind) *document {
	v.mu.Lock()
	defer v.mu.Unlock()
	d := v.docs[kind]
	if d == nil {
		d = &document{}
		d.res, d.err = c.docs.RenderSource(kind, v.src, nodedocs.Deliver)
		if d.err != nil {
			// Not kept: the next request tries again (a key may have been added meanwhile).
			return d
		}
		v.docs[kind] = d
	}
	return d
}

// invalidateAll makes every view stale.
func (c *cache) invalidateAll() { c.gen.Add(1) }

// invalidate drops the view of addr.
func (c *cache) invalidate(addr netip.Addr) {
	c.mu.Lock()
	s := c.slots[addr]
	c.mu.Unlock()
	if s != nil {
		s.cur.Store(nil)
	}
}

// sameSource reports whether two reads would render the same documents and deliver the same
// secrets: same tunnel (and phone-home state), node, groups, data and sealed secrets.
func sameSource(a, b inventory.NodeDocsSource) bool {
	at, bt := a.Tunnel, b.Tunnel
	if at.ID != bt.ID || at.State != bt.State || !at.PhonedHomeAt.Equal(bt.PhonedHomeAt) ||
		at.AddressV4 != bt.AddressV4 || at.AddressV6 != bt.AddressV6 {
		return false
	}
	if a.Node.ID != b.Node.ID || a.Node.Hostname != b.Node.Hostname || a.Node.MAC.String() != b.Node.MAC.String() {
		return false
	}
	if len(a.Groups) != len(b.Groups) || len(a.Layers) != len(b.Layers) || len(a.Secrets) != len(b.Secrets) {
		return false
	}
	for i := range a.Groups {
		if a.Groups[i].Name != b.Groups[i].Name {
			return false
		}
	}
	for i := range a.Layers {
		// The content itself: updated_at could repeat within the clock's resolution.
		x, y := a.Layers[i], b.Layers[i]
		if x.Scope != y.Scope || x.UserData != y.UserData || x.VendorData != y.VendorData ||
			x.NetworkConfig != y.NetworkConfig || !reflect.DeepEqual(x.MetaData, y.MetaData) {
			return false
		}
	}
	for i := range a.Secrets {
		x, y := a.Secrets[i], b.Secrets[i]
		if x.Scope != y.Scope || x.Name != y.Name || x.KeyID != y.KeyID || x.UntilPhoneHome != y.UntilPhoneHome ||
			!bytes.Equal(x.Nonce, y.Nonce) || !bytes.Equal(x.Ciphertext, y.Ciphertext) {
			return false
		}
	}
	return true
}
