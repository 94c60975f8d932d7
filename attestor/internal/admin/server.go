package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// PollInterval is how often WatchEvents reads the event log. Events are not notified (see
	// migrations/0008): an event is delivered once WatchDelay old, so polling more often than
	// that would only read the same events again. Default 1 s.
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

	// running guards Run; stopped is closed when Run returns, which ends the watchers so that
	// a graceful shutdown does not wait for streams that never end on their own.
	running atomic.Bool
	stopped chan struct{}
}

var _ inventoryv1.InventoryServiceServer = (*Server)(nil)

// New returns the admin API over store. Call Register to serve it and Run to end the open
// WatchEvents streams at shutdown.
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
	return &Server{store: store, log: logger, cfg: cfg, stopped: make(chan struct{})}, nil
}

// Register registers the InventoryService on r, typically a *grpcserver.Server. The service
// must not be declared node-facing there: every method is admin-only.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	inventoryv1.RegisterInventoryServiceServer(r, s)
}

// Run waits until ctx ends, then ends the open WatchEvents streams (Unavailable), which would
// otherwise hold up a graceful shutdown, and returns nil. Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("admin: Run called twice")
	}
	<-ctx.Done()
	close(s.stopped)
	return nil
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
