// Package attestor is the attestor service: the node-facing AttestorService (TPM credential
// activation and quotes that bind a WireGuard key) and the admin InventoryService, both served
// over TLS from one process against the shared Postgres inventory.
package attestor

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/attestboot/attestboot/attestor/internal/admin"
	"github.com/attestboot/attestboot/attestor/internal/attestation"
	"github.com/attestboot/attestboot/attestor/internal/ekpolicy"
	"github.com/attestboot/attestboot/services/cli"
	"github.com/attestboot/attestboot/services/ekcert"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/metrics"
	"github.com/attestboot/attestboot/services/run"
)

// Config of the attestor process.
type Config struct {
	// DatabaseURL of the inventory (postgres://… or key=value).
	DatabaseURL string
	// Migrate applies the inventory migrations at start (under an advisory lock).
	Migrate bool
	// GRPC is the server: listen address, TLS, admin credentials.
	GRPC grpcserver.Config
	// MetricsListen is the address of the Prometheus /metrics endpoint; empty disables it.
	MetricsListen string
	// Attestation limits and lifetimes.
	SessionTTL     time.Duration
	AttestationTTL time.Duration
	RateWindow     time.Duration
	MaxPerNode     int
	MaxPerEK       int
	// EKRootsDir holds PEM/DER certificates of trusted TPM manufacturer CAs; empty disables
	// EK certificate checks (nodes are then identified by enrolled EK hashes alone).
	EKRootsDir string
	// EnrollByCA enrolls an unenrolled node whose EK certificate chains to EKRootsDir.
	EnrollByCA bool
}

// DefaultConfig is what the flags start from.
func DefaultConfig() Config {
	return Config{
		Migrate:        true,
		GRPC:           grpcserver.Config{Listen: ":7443", StateDir: "/var/lib/attestboot/pki"},
		MetricsListen:  "127.0.0.1:9101",
		SessionTTL:     60 * time.Second,
		AttestationTTL: 60 * time.Second,
		RateWindow:     time.Minute,
		MaxPerNode:     10,
		MaxPerEK:       10,
	}
}

// RegisterFlags registers every setting on fs with the current values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "inventory database URL (postgres://...)")
	fs.BoolVar(&c.Migrate, "migrate", c.Migrate, "apply inventory migrations at start")
	c.GRPC.RegisterFlags(fs)
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "address of the Prometheus /metrics endpoint (empty: off)")
	fs.DurationVar(&c.SessionTTL, "session-ttl", c.SessionTTL, "how long a BeginAttestation challenge may be answered")
	fs.DurationVar(&c.AttestationTTL, "attestation-ttl", c.AttestationTTL, "how long a passed attestation may open a tunnel")
	fs.DurationVar(&c.RateWindow, "rate-window", c.RateWindow, "window of the per-node and per-EK attempt limits")
	fs.IntVar(&c.MaxPerNode, "max-per-node", c.MaxPerNode, "BeginAttestation calls allowed per node per window")
	fs.IntVar(&c.MaxPerEK, "max-per-ek", c.MaxPerEK, "BeginAttestation calls allowed per EK per window")
	fs.StringVar(&c.EKRootsDir, "ek-roots", c.EKRootsDir, "directory of trusted TPM manufacturer CA certificates (empty: no EK certificate checks)")
	fs.BoolVar(&c.EnrollByCA, "enroll-by-ca", c.EnrollByCA, "enroll unenrolled nodes whose EK certificate chains to -ek-roots")
}

// Command is the attestor binary; cmd/attestor runs it with the process arguments.
func Command() cli.Service {
	cfg := DefaultConfig()
	return cli.Service{
		Name:        "attestor",
		EnvPrefix:   "ATTESTOR",
		Flags:       cfg.RegisterFlags,
		DatabaseURL: func() string { return cfg.DatabaseURL },
		Run:         func(ctx context.Context, l *slog.Logger) error { return Run(ctx, cfg, l) },
	}
}

// NodeFacing are the services nodes may call without an admin credential.
var nodeFacing = []string{"attestboot.attestor.v1.AttestorService"}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if cfg.DatabaseURL == "" {
		return errors.New("attestor: no database URL (-database-url)")
	}
	ekCfg := ekpolicy.Config{EnrollByCA: cfg.EnrollByCA}
	if cfg.EKRootsDir != "" {
		roots, err := ekcert.LoadRoots(cfg.EKRootsDir)
		if err != nil {
			return fmt.Errorf("attestor: EK roots: %w", err)
		}
		ekCfg.Roots = roots
	}
	ekp, err := ekpolicy.New(ekCfg)
	if err != nil {
		return fmt.Errorf("attestor: %w", err)
	}

	pool, err := inventory.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("attestor: %w", err)
	}
	defer pool.Close()
	if cfg.Migrate {
		if _, err := inventory.Migrate(ctx, pool); err != nil {
			return fmt.Errorf("attestor: %w", err)
		}
	}
	store := inventory.New(pool, inventory.Options{})

	reg := metrics.NewRegistry()
	svc, err := attestation.New(attestation.Config{
		SessionTTL: cfg.SessionTTL, AttestationTTL: cfg.AttestationTTL,
		RateWindow: cfg.RateWindow, MaxPerNode: cfg.MaxPerNode, MaxPerEK: cfg.MaxPerEK,
		EK: ekp,
	}, store, logger, reg)
	if err != nil {
		return fmt.Errorf("attestor: %w", err)
	}
	adm, err := admin.New(store, logger, admin.Config{})
	if err != nil {
		return fmt.Errorf("attestor: %w", err)
	}
	grpcCfg := cfg.GRPC
	grpcCfg.NodeFacing = append(grpcCfg.NodeFacing, nodeFacing...)
	srv, err := grpcserver.New(grpcCfg, logger, reg)
	if err != nil {
		return fmt.Errorf("attestor: %w", err)
	}
	svc.Register(srv)
	adm.Register(srv)

	tasks := []func(context.Context) error{srv.ListenAndServe, adm.Run, sweeper(store, logger)}
	if cfg.MetricsListen != "" {
		tasks = append(tasks, func(ctx context.Context) error {
			return metrics.ListenAndServe(ctx, cfg.MetricsListen, reg, logger)
		})
	}
	logger.Info("attestor starting", "listen", grpcCfg.Listen, "ek_roots", cfg.EKRootsDir != "", "enroll_by_ca", cfg.EnrollByCA)
	return run.Group(ctx, tasks...)
}

// sweeper marks abandoned sessions expired so the inventory shows them for what they are; a
// session past its TTL is refused whether or not it was swept.
func sweeper(store *inventory.Store, logger *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if n, err := store.ExpireSessions(ctx); err != nil && ctx.Err() == nil {
					logger.Warn("expire attestation sessions", "err", err)
				} else if n > 0 {
					logger.Debug("expired attestation sessions", "count", n)
				}
			}
		}
	}
}
