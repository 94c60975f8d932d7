package tpmtest

import (
	"errors"
	"log/slog"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/attestboot/attestboot/services/testdep"
)

// Start starts one swtpm TPM for the test, from the default cache, and stops it at cleanup.
// Without the swtpm programs the test fails under CI=true and is skipped elsewhere.
func Start(t testing.TB) *TPM {
	t.Helper()
	return StartN(t, 1)[0]
}

// StartN starts n TPMs with distinct EKs; see Start.
func StartN(t testing.TB, n int) []*TPM {
	t.Helper()
	return StartWithConfig(t, Config{}, n)
}

// StartWithConfig starts n TPMs from a Pool made with cfg (Logger defaults to the test log).
func StartWithConfig(t testing.TB, cfg Config, n int) []*TPM {
	t.Helper()
	testdep.Binaries(t, "swtpm", "swtpm_setup", "swtpm_localca")
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	pool, err := NewPool(cfg)
	if errors.Is(err, ErrMissingBinary) {
		testdep.Missing(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	tpms := make([]*TPM, n)
	g, ctx := errgroup.WithContext(t.Context())
	for i := range n {
		g.Go(func() error {
			tpm, err := pool.StartAny(ctx)
			if err != nil {
				return err
			}
			tpms[i] = tpm
			return nil
		})
	}
	err = g.Wait()
	for _, tpm := range tpms {
		if tpm == nil {
			continue
		}
		t.Cleanup(func() {
			if err := tpm.Stop(); err != nil {
				t.Errorf("stop swtpm: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	return tpms
}
