// Package daemon is what every attestboot service process has in common: the inventory
// connection (migrated on start under an advisory lock unless told not to), the TLS gRPC server
// with its node-facing services listed, the Prometheus endpoint, and a task group that runs
// them with the service's own tasks until the context ends or one fails.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/metrics"
	"github.com/attestboot/attestboot/services/run"
)

// Base is the configuration every service shares; services embed it in their Config.
type Base struct {
	// DatabaseURL of the inventory (postgres://… or key=value).
	DatabaseURL string
	// Migrate applies the inventory migrations at start.
	Migrate bool
	// GRPC is the server: listen address, TLS, admin credentials.
	GRPC grpcserver.Config
	// MetricsListen is the address of /metrics and /debug/pprof/; empty disables it.
	MetricsListen string
}

// RegisterFlags registers the shared settings on fs with the current values as defaults.
func (b *Base) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&b.DatabaseURL, "database-url", b.DatabaseURL, "inventory database URL (postgres://...)")
	fs.BoolVar(&b.Migrate, "migrate", b.Migrate, "apply inventory migrations at start")
	b.GRPC.RegisterFlags(fs)
	fs.StringVar(&b.MetricsListen, "metrics-listen", b.MetricsListen, "address of /metrics and /debug/pprof/ (empty: off)")
}

// Store opens the inventory and, when configured, migrates it. close releases the pool.
func (b Base) Store(ctx context.Context) (store *inventory.Store, close func(), err error) {
	if b.DatabaseURL == "" {
		return nil, nil, errors.New("no database URL (-database-url)")
	}
	pool, err := inventory.Open(ctx, b.DatabaseURL)
	if err != nil {
		return nil, nil, err
	}
	if b.Migrate {
		if _, err := inventory.Migrate(ctx, pool); err != nil {
			pool.Close()
			return nil, nil, err
		}
	}
	return inventory.New(pool, inventory.Options{}), pool.Close, nil
}

// Server builds the gRPC server; nodeFacing are added to the configured node-facing services
// (everything else needs an admin credential).
func (b Base) Server(logger *slog.Logger, reg prometheus.Registerer, nodeFacing ...string) (*grpcserver.Server, error) {
	cfg := b.GRPC
	cfg.NodeFacing = append(append([]string(nil), cfg.NodeFacing...), nodeFacing...)
	return grpcserver.New(cfg, logger, reg)
}

// Serve runs the gRPC server, the metrics endpoint and tasks until ctx ends or one fails.
func (b Base) Serve(ctx context.Context, logger *slog.Logger, reg *prometheus.Registry, srv *grpcserver.Server, tasks ...func(context.Context) error) error {
	all := append([]func(context.Context) error{srv.ListenAndServe}, tasks...)
	if b.MetricsListen != "" {
		all = append(all, func(ctx context.Context) error {
			return metrics.ListenAndServe(ctx, b.MetricsListen, reg, logger)
		})
	}
	if err := run.Group(ctx, all...); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
