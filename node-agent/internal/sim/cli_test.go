package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/node-agent/internal/agent"
	"github.com/attestboot/attestboot/services/config"
	"github.com/attestboot/attestboot/services/nodeattest"
	"github.com/attestboot/attestboot/services/pki"
	"github.com/attestboot/attestboot/services/testdep"
)

// parse registers the simulation's flags on a fresh set, parses args and builds the Config.
func parse(t *testing.T, args ...string) (*Flags, Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	f := RegisterFlags(fs)
	require.NoError(t, config.Parse(fs, "SIMTEST", args))
	cfg, err := f.Config(&bytes.Buffer{})
	return f, cfg, err
}

func TestFlagsBuildTheConfig(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	_, err := pki.Ensure(state, pki.Options{})
	require.NoError(t, err)
	ca := filepath.Join(state, pki.CACertFile)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600))

	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		f, cfg, err := parse(t, "-ca", ca, "-attestor", "a:1", "-tunnelmgr", "b:2")
		require.NoError(t, err)
		require.Equal(t, 10, cfg.Nodes)
		require.Equal(t, "sim", cfg.Prefix)
		require.Equal(t, 1, cfg.First)
		require.Equal(t, 5*time.Minute, cfg.Deadline)
		require.Equal(t, TPMAuto, cfg.TPMKind)
		require.Empty(t, cfg.TPMCache, "the default depends on the kind, chosen by the node count")
		require.Equal(t, nodeattest.ECDSA, cfg.AKAlgorithm)
		require.Equal(t, "a:1", cfg.Attestor)
		require.Equal(t, "b:2", cfg.TunnelManager)
		require.NotNil(t, cfg.TLS)
		require.Empty(t, cfg.TLS.Certificates, "nodes present no client certificate")
		require.NotNil(t, cfg.Logger)
		require.NotNil(t, cfg.NodeLogger)
		require.Nil(t, cfg.Enroll, "no -enroll")
		admin, token, err := f.Admin()
		require.NoError(t, err)
		require.Nil(t, admin, "no admin credential given")
		require.Empty(t, token)
	})
	t.Run("enroll with a certificate", func(t *testing.T) {
		t.Parallel()
		f, cfg, err := parse(t, "-ca", ca, "-attestor", "a:1", "-tunnelmgr", "b:2", "-nodes", "3", "-rate", "2.5",
			"-prefix", "x", "-first", "7", "-tpm-first", "4", "-ak", "rsa", "-server-name", "svc", "-enroll", "-group", "g",
			"-admin-cert", filepath.Join(state, pki.AdminCertFile), "-admin-key", filepath.Join(state, pki.AdminKeyFile))
		require.NoError(t, err)
		require.Equal(t, 3, cfg.Nodes)
		require.Equal(t, 2.5, cfg.Rate)
		require.Equal(t, "x00007", cfg.NodeID(cfg.First))
		require.Equal(t, 4, cfg.TPMFirst)
		require.Equal(t, nodeattest.RSA, cfg.AKAlgorithm)
		require.Equal(t, "svc", cfg.TLS.ServerName)
		require.NotNil(t, cfg.Enroll)
		require.Equal(t, "g", cfg.Enroll.Group)
		require.Len(t, cfg.Enroll.TLS.Certificates, 1, "the admin's client certificate")
		require.Equal(t, "svc", cfg.Enroll.TLS.ServerName)
		admin, _, err := f.Admin()
		require.NoError(t, err)
		require.Len(t, admin.Certificates, 1)
	})
	t.Run("token file, without -enroll", func(t *testing.T) {
		t.Parallel()
		f, cfg, err := parse(t, "-ca", ca, "-admin-token-file", tokenFile)
		require.NoError(t, err)
		require.Nil(t, cfg.Enroll)
		admin, token, err := f.Admin()
		require.NoError(t, err)
		require.NotNil(t, admin)
		require.Empty(t, admin.Certificates, "the token authenticates")
		require.Equal(t, "s3cret", token)
	})
	t.Run("errors", func(t *testing.T) {
		t.Parallel()
		_, _, err := parse(t, "-ca", filepath.Join(state, "missing.pem"))
		require.Error(t, err)
		_, _, err = parse(t, "-ca", ca, "-node-log-level", "loud")
		require.Error(t, err)
		_, _, err = parse(t, "-ca", ca, "-enroll", "-admin-token-file", filepath.Join(state, "missing"))
		require.Error(t, err)
	})
}

// TestHooksFrameTheStorm runs nodes against an address where nothing listens: they fail, and
// the hooks must still frame their boots, once each, in order.
func TestHooksFrameTheStorm(t *testing.T) {
	t.Parallel()
	testdep.Binaries(t, "swtpm", "swtpm_setup", "swtpm_localca")
	var (
		stormAt, doneAt time.Time
		calls           atomic.Int32
	)
	cfg := Config{
		Nodes: 2, Rate: 20, Prefix: "hook",
		Attestor: "127.0.0.1:1", TunnelManager: "127.0.0.1:1", TLS: &tls.Config{},
		Deadline: 500 * time.Millisecond, Backoff: agent.Backoff{Initial: 50 * time.Millisecond, Max: 100 * time.Millisecond},
		// A cache of its own: nodesim's fixed node-to-TPM mapping would collide with a
		// concurrent nodesim or test on another cache.
		TPMCache: filepath.Join(os.TempDir(), "attestboot-sim-hooks-test"),
		WorkDir:  t.TempDir(),
		OnStorm: func() {
			require.Zero(t, calls.Add(1)-1, "OnStorm first")
			stormAt = time.Now()
		},
		OnDone: func() {
			require.EqualValues(t, 2, calls.Add(1), "OnDone after OnStorm")
			doneAt = time.Now()
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	require.NoError(t, err)
	require.EqualValues(t, 2, calls.Load())
	require.Equal(t, 2, rep.Failed, "nothing listens")
	frame := doneAt.Sub(stormAt)
	require.GreaterOrEqual(t, frame, time.Duration(rep.Wall), "the wall clock lies inside the hooks")
	for _, r := range rep.Results {
		require.GreaterOrEqual(t, frame, time.Duration(r.Started+r.Total), "node %s ended before OnDone", r.ID)
	}
}
