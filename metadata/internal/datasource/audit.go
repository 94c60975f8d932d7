package datasource

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/attestboot/attestboot/services/clock"
	"github.com/attestboot/attestboot/services/inventory"
)

// eventAppender records events. Implemented by *inventory.Store.
type eventAppender interface {
	AppendEvent(ctx context.Context, e inventory.Event) (inventory.Event, error)
}

// deliveryKey is what repeated deliveries have in common to be counted in one event.
type deliveryKey struct {
	nodeID, tunnelID, doc, source string
	secrets, withheld             string // names joined by ","
}

type pendingDelivery struct {
	secrets, withheld []string
	count             int
	first, last       time.Time
}

// audit batches the events of repeated secret deliveries. The first delivery of a rendered
// document to a tunnel is recorded before the answer (see Server.recordDelivery); the same
// document delivered again to the same tunnel is counted here and written as one
// metadata.secrets_delivered event per tunnel, document and interval, with a count: every
// delivery is in the event log, at one write per interval instead of one per request. Counts
// not yet flushed are lost only if the process dies within the interval.
type audit struct {
	store eventAppender
	log   *slog.Logger
	clock clock.Clock

	mu      sync.Mutex
	pending map[deliveryKey]*pendingDelivery
}

func newAudit(store eventAppender, log *slog.Logger, clk clock.Clock) *audit {
	return &audit{store: store, log: log, clock: clk, pending: map[deliveryKey]*pendingDelivery{}}
}

func (a *audit) add(nodeID, tunnelID, doc, source string, secrets, withheld []string) {
	k := deliveryKey{nodeID: nodeID, tunnelID: tunnelID, doc: doc, source: source,
		secrets: strings.Join(secrets, ","), withheld: strings.Join(withheld, ",")}
	now := a.clock.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.pending[k]
	if p == nil {
		p = &pendingDelivery{secrets: secrets, withheld: withheld, first: now}
		a.pending[k] = p
	}
	p.count++
	p.last = now
}

// flush writes one event per pending key. What cannot be written stays pending.
func (a *audit) flush(ctx context.Context) {
	a.mu.Lock()
	batch := a.pending
	a.pending = map[deliveryKey]*pendingDelivery{}
	a.mu.Unlock()
	keys := slices.SortedFunc(maps.Keys(batch), func(x, y deliveryKey) int {
		return strings.Compare(x.tunnelID+x.doc, y.tunnelID+y.doc)
	})
	for i, k := range keys {
		p := batch[k]
		detail := map[string]any{"document": k.doc, "secrets": p.secrets, "tunnel_id": k.tunnelID, "source": k.source,
			"count": p.count, "first_at": p.first.UTC().Format(time.RFC3339Nano), "last_at": p.last.UTC().Format(time.RFC3339Nano),
			"repeated": true}
		if len(p.withheld) > 0 {
			detail["withheld_after_phone_home"] = p.withheld
		}
		if _, err := a.store.AppendEvent(ctx, inventory.Event{NodeID: k.nodeID, Kind: EventSecretsDelivered, Service: eventService, Detail: detail}); err != nil {
			a.log.Error("datasource: record repeated secret deliveries; kept for the next flush", "err", err, "node", k.nodeID)
			a.mu.Lock()
			for _, k := range keys[i:] {
				a.requeue(k, batch[k])
			}
			a.mu.Unlock()
			return
		}
		a.log.Info("secrets delivered again", "node", k.nodeID, "document", k.doc, "secrets", p.secrets, "count", p.count)
	}
}

// requeue merges p back into the pending deliveries; a.mu is held.
func (a *audit) requeue(k deliveryKey, p *pendingDelivery) {
	cur := a.pending[k]
	if cur == nil {
		a.pending[k] = p
		return
	}
	cur.count += p.count
	if p.first.Before(cur.first) {
		cur.first = p.first
	}
	if p.last.After(cur.last) {
		cur.last = p.last
	}
}

// run flushes every interval until ctx ends, then once more.
func (a *audit) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.flush(ctx)
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			a.flush(fctx)
			cancel()
			return
		}
	}
}
