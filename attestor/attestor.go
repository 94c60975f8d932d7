// Package attestor is the attestor service: the node-facing AttestorService (TPM credential
// activation and quotes that bind a WireGuard key) and the admin InventoryService, both served
// over TLS from one process against the shared Postgres inventory.
package attestor

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/attestboot/attestboot/attestor/internal/admin"
	"github.com/attestboot/attestboot/attestor/internal/attestation"
	"github.com/attestboot/attestboot/attestor/internal/ekpolicy"
	"github.com/attestboot/attestboot/services/cli"
	"github.com/attestboot/attestboot/services/daemon"
	"github.com/attestboot/attestboot/services/ekcert"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/metrics"
)

// Config of the attestor process.
type Config struct {
	daemon.Base
	// Attestation limits and lifetimes.
	SessionTTL     time.Duration
	AttestationTTL time.Duration
	RateWindow     time.Duration
	MaxPerNode     int
	MaxPerEK       int
	// MaxInFlight and RetryAfter are the admission control of BeginAttestation (see
	// internal/admission); 0 admits everyone.
	MaxInFlight int
	RetryAfter  time.Duration
	// MaxOpenTunnels shrinks the admission window as open tunnels approach it (see
	// attestation.Config); 0: not counted.
	MaxOpenTunnels int
	// EKRootsDir holds PEM/DER certificates of trusted TPM manufacturer CAs; empty disables
	// EK certificate checks (nodes are then identified by enrolled EK hashes alone).
	EKRootsDir string
	// EnrollByCA enrolls an unenrolled node whose EK certificate chains to EKRootsDir.
	EnrollByCA bool
}

// DefaultConfig is what the flags start from.
func DefaultConfig() Config {
	return Config{
		Base: daemon.Base{
			Migrate:       true,
			GRPC:          grpcserver.Config{Listen: ":7443", StateDir: "/var/lib/attestboot/pki"},
			MetricsListen: "127.0.0.1:9101",
		},
		SessionTTL:     60 * time.Second,
		AttestationTTL: 60 * time.Second,
		RateWindow:     time.Minute,
		MaxPerNode:     10,
		MaxPerEK:       10,
		MaxInFlight:    256,
		RetryAfter:     time.Second,
		MaxOpenTunnels: 1024,
	}
}

// RegisterFlags registers every setting on fs with the current values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Base.RegisterFlags(fs)
	fs.DurationVar(&c.SessionTTL, "session-ttl", c.SessionTTL, "how long a BeginAttestation challenge may be answered")
	fs.DurationVar(&c.AttestationTTL, "attestation-ttl", c.AttestationTTL, "how long a passed attestation may open a tunnel")
	fs.DurationVar(&c.RateWindow, "rate-window", c.RateWindow, "window of the per-node and per-EK attempt limits")
	fs.IntVar(&c.MaxPerNode, "max-per-node", c.MaxPerNode, "BeginAttestation calls allowed per node per window")
	fs.IntVar(&c.MaxInFlight, "max-in-flight", c.MaxInFlight, "attestations this replica runs at once (begun, not completed); beyond, nodes are told to retry later (0: no limit)")
	fs.DurationVar(&c.RetryAfter, "retry-after", c.RetryAfter, "the shortest wait a node turned away by -max-in-flight is told (later ones get later retry slots, up to 30s)")
	fs.IntVar(&c.MaxOpenTunnels, "max-open-tunnels", c.MaxOpenTunnels, "open tunnels (all gateways: boots past attestation, not finished) from half of which -max-in-flight shrinks, to a sixteenth at this many (0: not counted)")
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
	store, closeDB, err := cfg.Store(ctx)
	if err != nil {
		return fmt.Errorf("attestor: %w", err)
	}
	defer closeDB()

	reg := metrics.NewRegistry()
	svc, err := attestation.New(attestation.Config{
		SessionTTL: cfg.SessionTTL, AttestationTTL: cfg.AttestationTTL,
		RateWindow: cfg.RateWindow, MaxPerNode: cfg.MaxPerNode, MaxPerEK: cfg.MaxPerEK,
		MaxInFlight: cfg.MaxInFlight, RetryAfter: cfg.RetryAfter, MaxOpenTunnels: cfg.MaxOpenTunnels,
		EK: ekp,
	}, store, logger, reg)
	if err != nil {
		return fmt.Errorf("attestor: %w", err)
	}
	adm, err := admin.New(store, logger, admin.Config{})
	if err != nil {
		return fmt.Errorf("attestor: %w", err)
	}
	srv, err := cfg.Server(logger, reg, nodeFacing...)
	if err != nil {
		return fmt.Errorf("attestor: %w", err)
	}
	svc.Register(srv)
	adm.Register(srv)
	logger.Info("attestor starting", "listen", cfg.GRPC.Listen, "ek_roots", cfg.EKRootsDir != "", "enroll_by_ca", cfg.EnrollByCA)
	return cfg.Serve(ctx, logger, reg, srv, adm.Run, sweeper(store, logger))
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
