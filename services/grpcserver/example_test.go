package grpcserver_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/config"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/logging"
	"github.com/attestboot/attestboot/services/metrics"
	"github.com/attestboot/attestboot/services/run"
)

// Example shows the shape of a service's cmd/<binary>/main.go; a real one moves the body of
// serve into the service package's Run(ctx, cfg).
func Example() {
	var (
		grpcCfg       = grpcserver.Config{Listen: ":8443", StateDir: "/var/lib/attestboot/pki"}
		logCfg        logging.Config
		metricsListen = "127.0.0.1:9443"
	)
	fs := flag.NewFlagSet("attestor", flag.ExitOnError)
	grpcCfg.RegisterFlags(fs)
	logCfg.RegisterFlags(fs)
	fs.StringVar(&metricsListen, "metrics-listen", metricsListen, "Prometheus /metrics address")
	if err := config.Parse(fs, "ATTESTOR", os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, grpcCfg, logCfg, metricsListen); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func serve(ctx context.Context, grpcCfg grpcserver.Config, logCfg logging.Config, metricsListen string) error {
	logger, err := logging.New(os.Stderr, logCfg.Level, logCfg.Format)
	if err != nil {
		return err
	}
	reg := metrics.NewRegistry()
	grpcCfg.NodeFacing = []string{"attestboot.attestor.v1.Attestor"} // everything else: admin
	srv, err := grpcserver.New(grpcCfg, logger, reg)
	if err != nil {
		return err
	}
	// attestorv1.RegisterAttestorServer(srv, handlers) ...
	return run.Group(ctx,
		srv.ListenAndServe,
		func(ctx context.Context) error { return metrics.ListenAndServe(ctx, metricsListen, reg, logger) },
	)
}

func TestFlagsAndEnvironmentFillConfig(t *testing.T) {
	t.Parallel()
	cfg := grpcserver.Config{Listen: ":8443", ShutdownGrace: time.Second}
	fs := flag.NewFlagSet("attestor", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{"-state-dir", "/tmp/x", "-tls-hosts", "a.example,10.0.0.1"}))
	env := map[string]string{
		"ATTESTOR_LISTEN":           "127.0.0.1:9000",
		"ATTESTOR_STATE_DIR":        "/ignored: set on the command line",
		"ATTESTOR_ADMIN_TOKEN":      adminToken,
		"ATTESTOR_ADMIN_IDENTITIES": "alice, spiffe://site/admin",
		"ATTESTOR_SHUTDOWN_GRACE":   "3s",
	}
	require.NoError(t, config.ApplyEnv(fs, "ATTESTOR", func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	require.Equal(t, "127.0.0.1:9000", cfg.Listen)
	require.Equal(t, "/tmp/x", cfg.StateDir)
	require.Equal(t, []string{"a.example", "10.0.0.1"}, cfg.Hosts)
	require.Equal(t, adminToken, cfg.AdminToken)
	require.Equal(t, []string{"alice", "spiffe://site/admin"}, cfg.AdminIdentities)
	require.Equal(t, 3*time.Second, cfg.ShutdownGrace)
	require.NotContains(t, fmt.Sprint(cfg.LogValue()), adminToken)
}
