package storm

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/node-agent/internal/agent"
	"github.com/attestboot/attestboot/node-agent/internal/sim"
	"github.com/attestboot/attestboot/services/pki"
	"github.com/attestboot/attestboot/services/testdep"
)

// helpFlags runs main with -h and returns the flag names its usage lists.
func helpFlags(t *testing.T, main func([]string, *bytes.Buffer, *bytes.Buffer) int) ([]string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	require.Equal(t, ExitOK, main([]string{"-h"}, &stdout, &stderr))
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z-]+)`).FindAllStringSubmatch(stderr.String(), -1) {
		names = append(names, m[1])
	}
	return names, stderr.String()
}

func TestStormTakesNodesimFlags(t *testing.T) {
	t.Parallel()
	storm, usage := helpFlags(t, func(a []string, o, e *bytes.Buffer) int { return Main(a, o, e) })
	nodesim, _ := helpFlags(t, func(a []string, o, e *bytes.Buffer) int { return sim.Main(a, o, e) })

	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	sim.RegisterFlags(fs)
	var shared []string
	fs.VisitAll(func(f *flag.Flag) { shared = append(shared, f.Name) })
	require.Contains(t, shared, "nodes")
	require.Contains(t, shared, "admin-token")
	for _, name := range shared {
		require.Contains(t, storm, name)
		require.Contains(t, nodesim, name)
	}
	own := slices.DeleteFunc(slices.Clone(storm), func(n string) bool { return slices.Contains(shared, n) })
	require.ElementsMatch(t, []string{"pids", "database-url", "json", "svg", "sample-every", "stats-settle", "cpuprofile"}, own)
	require.NotContains(t, storm, "table", "nodesim's per-node table is not storm's")
	require.Contains(t, usage, "admin client certificate: for -enroll and the gateway's peer count (env STORM_ADMIN_CERT)")
	require.Contains(t, usage, "(secret: environment only) (env STORM_ADMIN_TOKEN)")
}

func TestMainRefusesEnrollWithoutCredentials(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	_, err := pki.Ensure(state, pki.Options{})
	require.NoError(t, err)
	var stdout, stderr bytes.Buffer
	code := Main([]string{"-ca", filepath.Join(state, pki.CACertFile), "-attestor", "a:1", "-tunnelmgr", "b:2", "-enroll"}, &stdout, &stderr)
	require.Equal(t, ExitError, code)
	require.Contains(t, stderr.String(), "storm: bad configuration: -enroll needs -admin-cert and -admin-key, or an admin token")
}

// TestRunReadsAroundTheStorm runs a storm of nodes that cannot reach anything: the readings
// must still be taken through the simulator's hooks, with its progress log silenced.
func TestRunReadsAroundTheStorm(t *testing.T) {
	t.Parallel()
	testdep.Binaries(t, "swtpm", "swtpm_setup", "swtpm_localca")
	started := 0
	cfg := Config{
		Sim: sim.Config{
			Nodes: 2, Prefix: "stormhook",
			Attestor: "127.0.0.1:1", TunnelManager: "127.0.0.1:1", TLS: &tls.Config{},
			Deadline: 300 * time.Millisecond, Backoff: agent.Backoff{Initial: 50 * time.Millisecond, Max: 100 * time.Millisecond},
			TPMCache: filepath.Join(os.TempDir(), "attestboot-storm-hooks-test"),
			WorkDir:  t.TempDir(),
			OnStorm:  func() { started++ },
		},
		PIDs:        map[string]int{"self": os.Getpid()},
		SampleEvery: 20 * time.Millisecond,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, 1, started, "the caller's own hook still runs")
	require.Equal(t, 2, rep.Failed)
	require.Positive(t, rep.WallSeconds)
	require.Len(t, rep.CPU, 1)
	require.Equal(t, "self", rep.CPU[0].Name)
	require.Len(t, rep.Memory, 1)
	require.Positive(t, rep.Memory[0].PeakRSSBytes, "sampled between the hooks")
}
