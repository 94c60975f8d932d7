package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/inventory"
)

// eventService is the service name of the events the admin API writes.
const eventService = "attestor"

// Config tunes a Server. The zero value is valid.
type Config struct {
	// PollInterval is how often WatchEvents reads the event log when no notification woke it:
	// notifications only make followers faster, polling makes them correct. Default 1 s.
	PollInterval time.Duration
	// WatchDelay is how long WatchEvents holds back an event before delivering it. Event ids
	// are taken when a transaction inserts, not when it commits, so a slow transaction may
	// commit id 10 after id 11 is visible; a follower that moved past 11 would never see 10.
	// Holding events back lets such transactions land first: the event is delivered once it is
	// WatchDelay old by its time stamp or has been visible for WatchDelay, whichever is first.
	// Transactions that write events and run longer than this may still be missed by a watcher
	// (never by ListEvents). Default 2 s.
	WatchDelay time.Duration
}

func (c *Config) setDefaults() {
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.WatchDelay == 0 {
		c.WatchDelay = 2 * time.Second
	}
}

func (c *Config) validate() error {
	switch {
	case c.PollInterval < 0:
		return errors.New("admin: PollInterval must not be negative")
	case c.WatchDelay < 0:
		return errors.New("admin: WatchDelay must not be negative")
	}
	return nil
}

// Server implements inventoryv1.InventoryServiceServer over an inventory store.
type Server struct {
	// Embedding the Unsafe interface, not the Unimplemented struct, makes a new RPC in the
	// proto a compile error here until it is written.
	inventoryv1.UnsafeInventoryServiceServer

	store *inventory.Store
	log   *slog.Logger
	cfg   Config

	// wake is fired for every notification on the events channel; watchers wait on it.
	wake *broadcast
	// running guards Run; stopped is closed when Run returns, which ends the watchers so that
	// a graceful shutdown does not wait for streams that never end on their own.
	running atomic.Bool
	stopped chan struct{}
}

var _ inventoryv1.InventoryServiceServer = (*Server)(nil)

// New returns the admin API over store. Call Run to have WatchEvents woken by notifications
// (without it, watchers only poll) and Register to serve it.
func New(store *inventory.Store, logger *slog.Logger, cfg Config) (*Server, error) {
	if store == nil {
		return nil, errors.New("admin: nil store")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{store: store, log: logger, cfg: cfg, wake: newBroadcast(), stopped: make(chan struct{})}, nil
}

// Register registers the InventoryService on r, typically a *grpcserver.Server. The service
// must not be declared node-facing there: every method is admin-only.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	inventoryv1.RegisterInventoryServiceServer(r, s)
}

// Run follows the inventory's events channel on one dedicated connection, shared by every
// WatchEvents stream, until ctx ends. Then it ends the open streams (Unavailable) and returns
// nil. Connection failures are retried by the listener; meanwhile watchers poll. Run may be
// called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("admin: Run called twice")
	}
	defer close(s.stopped)
	l, err := inventory.NewListener(s.store.Pool(), inventory.ListenerConfig{
		Channels: []string{inventory.ChannelEvents},
		Logger:   s.log,
	})
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	// Payloads are ignored: a watcher re-reads the log from its own cursor, which also covers
	// what was lost while the listener reconnected (the Reset notification wakes them too).
	for range l.Notifications() {
		s.wake.fire()
	}
	return <-done
}

// record appends an admin event inside the transaction of the change it describes, naming the
// admin who made the call.
func (s *Server) record(ctx context.Context, q *inventory.Queries, e inventory.Event) error {
	e.Service = eventService
	if e.Detail == nil {
		e.Detail = map[string]any{}
	}
	if who, ok := grpcserver.PrincipalFromContext(ctx); ok {
		e.Detail["admin"] = who.String()
	}
	if _, err := q.AppendEvent(ctx, e); err != nil {
		return fmt.Errorf("record %s: %w", e.Kind, err)
	}
	return nil
}

// broadcast wakes every goroutine waiting on the channel it handed out: a condition variable
// that works in a select.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcast() *broadcast { return &broadcast{ch: make(chan struct{})} }

// wait returns a channel closed by the next fire. Take it before looking at the state it
// guards, so that a fire in between is not lost.
func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcast) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}
