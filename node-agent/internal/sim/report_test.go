package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attestboot/attestboot/node-agent/internal/agent"
)

func ms(n float64) Duration { return Duration(n * float64(time.Millisecond)) }

func TestPercentileNearestRank(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	require.Equal(t, 50*time.Millisecond, percentile(d, 50))
	require.Equal(t, 90*time.Millisecond, percentile(d, 90))
	require.Equal(t, 99*time.Millisecond, percentile(d, 99))
	require.Equal(t, 100*time.Millisecond, percentile(d, 100))
	require.Equal(t, time.Millisecond, percentile(d, 0), "p0 is the smallest sample, not below it")

	// Few samples: p99 of five is the largest, p50 the third; never an interpolated value.
	five := []time.Duration{10, 20, 30, 40, 50}
	require.Equal(t, time.Duration(30), percentile(five, 50))
	require.Equal(t, time.Duration(50), percentile(five, 90))
	require.Equal(t, time.Duration(50), percentile(five, 99))
	require.Equal(t, time.Duration(7), percentile([]time.Duration{7}, 99))
	require.Zero(t, percentile(nil, 50))
}

func TestPhaseStatsSortsAndAverages(t *testing.T) {
	t.Parallel()
	s := phaseStats("attest", []time.Duration{40, 10, 30, 20})
	require.Equal(t, PhaseStats{Name: "attest", Count: 4, P50: 20, P90: 40, P99: 40, Max: 40, Mean: 25}, s)
}

func okResult(id string, total float64, phases ...Phase) NodeResult {
	return NodeResult{ID: id, OK: true, TunnelID: "t-" + id, Total: ms(total), Phases: phases}
}

func failed(id string, err error, phases ...Phase) NodeResult {
	r := NodeResult{ID: id, Phases: phases}
	failedResult(&r, err)
	return r
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	denied := &agent.Error{Class: agent.ClassAttestation, Err: fmt.Errorf("begin: %w", status.Error(codes.PermissionDenied, "no"))}
	fetch := &agent.Error{Class: agent.ClassMetadata, Err: errors.New("GET user-data: HTTP 500")}
	r := Report{Wall: Duration(2 * time.Second), Results: []NodeResult{
		okResult("n1", 100, Phase{"tpm", ms(5)}, Phase{"attest", ms(30)}, Phase{"teardown", ms(1)}),
		okResult("n2", 300, Phase{"tpm", ms(7)}, Phase{"attest", ms(50)}, Phase{"teardown", ms(2)}),
		failed("n3", denied, Phase{"tpm", ms(6)}, Phase{"attest", ms(900)}),
		failed("n4", denied, Phase{"tpm", ms(8)}, Phase{"attest", ms(800)}),
		// A failure after the tunnel was up: the agent's teardown comes after the failed phase.
		failed("n5", fetch, Phase{"tpm", ms(9)}, Phase{"attest", ms(40)}, Phase{"fetch", ms(5000)}, Phase{"teardown", ms(3)}),
		{ID: "n6", OK: true, Total: ms(200), Phases: []Phase{{"zz-new", ms(1)}}},
		// The gateway could not add the peer: the node attested again, then failed for good.
		failed("n7", denied, Phase{"tpm", ms(4)}, Phase{"attest", ms(20)}, Phase{"tunnel", ms(7)}, Phase{"attest", ms(30)}),
	}}
	r.summarize()

	require.Equal(t, 7, r.Nodes)
	require.Equal(t, 3, r.Succeeded)
	require.Equal(t, 4, r.Failed)
	require.InDelta(t, 1.5, r.Throughput, 1e-9, "succeeded nodes per second of wall time")

	var names []string
	byName := map[string]PhaseStats{}
	for _, p := range r.Phases {
		names = append(names, p.Name)
		byName[p.Name] = p
	}
	require.Equal(t, []string{"tpm", "attest", "tunnel", "teardown", "zz-new", "total"}, names, "agent order, unknown phases, then total")
	require.Equal(t, 6, byName["tpm"].Count)
	require.Equal(t, 3, byName["attest"].Count, "the failed attestations do not count as attestation latency")
	require.Equal(t, 1, byName["tunnel"].Count, "a phase a failed node got through counts")
	require.Equal(t, ms(50), byName["attest"].Max)
	require.NotContains(t, names, "fetch", "the only fetch failed")
	require.Equal(t, 3, byName["teardown"].Count, "a failed node's teardown still counts")
	require.Equal(t, 3, byName["total"].Count, "total is over successful boots")
	require.Equal(t, ms(300), byName["total"].Max)
	require.Equal(t, ms(200), byName["total"].P50)

	require.Equal(t, []Failure{
		{Class: "attestation", ExitCode: 11, Reason: "PermissionDenied", Count: 3, Example: denied.Error(), ExampleNode: "n3"},
		{Class: "metadata", ExitCode: 14, Reason: "GET user-data: HTTP 500", Count: 1, Example: fetch.Error(), ExampleNode: "n5"},
	}, r.Failures)

	// Summarizing again gives the same report (no accumulation).
	before := r
	before.Phases = append([]PhaseStats(nil), r.Phases...)
	r.summarize()
	require.Equal(t, before.Phases, r.Phases)
	require.Len(t, r.Failures, 2)
}

func TestSummarizeAddsRepeatedPhases(t *testing.T) {
	t.Parallel()
	// A tunnel that could not be opened sends the node back to attest: its attest and tunnel
	// latencies are the sums, one sample per node.
	r := Report{Wall: Duration(time.Second), Results: []NodeResult{
		okResult("n1", 100, Phase{"attest", ms(10)}, Phase{"tunnel", ms(5)}, Phase{"attest", ms(12)}, Phase{"tunnel", ms(6)}),
		okResult("n2", 50, Phase{"attest", ms(9)}, Phase{"tunnel", ms(4)}),
	}}
	r.summarize()
	require.Equal(t, []PhaseStats{
		{Name: "attest", Count: 2, P50: ms(9), P90: ms(22), P99: ms(22), Max: ms(22), Mean: ms(15.5)},
		{Name: "tunnel", Count: 2, P50: ms(4), P90: ms(11), P99: ms(11), Max: ms(11), Mean: ms(7.5)},
		{Name: "total", Count: 2, P50: ms(50), P90: ms(100), P99: ms(100), Max: ms(100), Mean: ms(75)},
	}, r.Phases)
	require.Equal(t, []Phase{{"attest", ms(10)}, {"tunnel", ms(5)}, {"attest", ms(12)}, {"tunnel", ms(6)}}, r.Results[0].Phases,
		"the node's own record keeps every attempt")
}

func TestReasonOf(t *testing.T) {
	t.Parallel()
	long := errors.New(strings.Repeat("x", 200))
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&agent.Error{Class: agent.ClassTunnel, Err: fmt.Errorf("open: %w", status.Error(codes.ResourceExhausted, "pool"))}, "ResourceExhausted"},
		{&agent.Error{Class: agent.ClassAttestation, Err: fmt.Errorf("x: %w", context.DeadlineExceeded)}, "deadline exceeded"},
		{fmt.Errorf("not started: %w", context.Canceled), "canceled"},
		{&agent.Error{Class: agent.ClassWireGuard, Err: fmt.Errorf("wglocal: %w", errors.New("create netstack: boom"))}, "create netstack: boom"},
		{fmt.Errorf("a: %w", long), strings.Repeat("x", 77) + "..."},
	} {
		require.Equal(t, tc.want, reasonOf(tc.err), "%v", tc.err)
	}
}

func TestFailedResultUsesAgentClasses(t *testing.T) {
	t.Parallel()
	var r NodeResult
	failedResult(&r, &agent.Error{Class: agent.ClassPhoneHome, Err: errors.New("tunnel still open")})
	require.False(t, r.OK)
	require.Equal(t, "phone-home", r.Class)
	require.Equal(t, 16, r.ExitCode)
	require.Equal(t, "phone-home: tunnel still open", r.Error)

	failedResult(&r, errors.New("plain"))
	require.Equal(t, "other", r.Class)
	require.Equal(t, 1, r.ExitCode)
}

func TestReportJSONRoundTrip(t *testing.T) {
	t.Parallel()
	r := Report{TPMKind: "swtpm", Rate: 20, Prepare: ms(1500), Wall: ms(1234.5678), Results: []NodeResult{
		okResult("n1", 12.25, Phase{"tpm", ms(1.5)}),
		failed("n2", &agent.Error{Class: agent.ClassTPM, Err: errors.New("no swtpm")}, Phase{"tpm", ms(2)}),
	}}
	r.summarize()
	var buf bytes.Buffer
	require.NoError(t, r.WriteJSON(&buf))

	var raw map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &raw))
	require.Equal(t, 1234.568, raw["wall_ms"], "durations are milliseconds, microsecond precision")
	require.Equal(t, "swtpm", raw["tpm_kind"])
	require.EqualValues(t, 1, raw["succeeded"])
	phases := raw["phases"].([]any)
	require.Equal(t, "tpm", phases[0].(map[string]any)["name"])
	require.Equal(t, 1.5, phases[0].(map[string]any)["p99_ms"])

	var back Report
	require.NoError(t, json.Unmarshal(buf.Bytes(), &back))
	require.Equal(t, r.Phases, back.Phases)
	require.Equal(t, r.Failures, back.Failures)
	require.Equal(t, r.Results, back.Results)
	require.Equal(t, ms(1234.568), back.Wall)
}

func TestWriteText(t *testing.T) {
	t.Parallel()
	r := Report{TPMKind: "swtpm", Wall: Duration(time.Second), Results: []NodeResult{
		okResult("sim00001", 250, Phase{"tpm", ms(3)}, Phase{"attest", ms(42)}),
		failed("sim00002", &agent.Error{Class: agent.ClassAttestation, Err: status.Error(codes.PermissionDenied, "refused")}, Phase{"tpm", ms(3)}, Phase{"attest", ms(9)}),
	}}
	r.summarize()
	var buf bytes.Buffer
	require.NoError(t, r.WriteText(&buf))
	out := buf.String()
	require.Contains(t, out, "2 nodes (TPM: swtpm), arrival all at once: 1 succeeded, 1 failed in 1s, 1.00 nodes/s")
	require.Regexp(t, `(?m)^\s+attest\s+1\s+42ms\s+42ms\s+42ms\s+42ms\s+42ms\s*$`, out)
	require.Regexp(t, `(?m)^\s+total\s+1\s+250ms`, out)
	require.Contains(t, out, "1  attestation (exit 11): PermissionDenied")
	require.Contains(t, out, "e.g. sim00002:")

	r = Report{TPMKind: "swtpm", Rate: 12.5}
	r.summarize()
	buf.Reset()
	require.NoError(t, r.WriteText(&buf))
	require.Contains(t, buf.String(), "arrival 12.5/s")
	require.Contains(t, buf.String(), "failures: none")
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	base := func() Config {
		return Config{Nodes: 3, Attestor: "a:1", TunnelManager: "b:2", TLS: &tls.Config{}}
	}
	c := base()
	require.NoError(t, c.validate())
	require.Equal(t, "sim", c.Prefix)
	require.Equal(t, 1, c.First)
	require.Equal(t, "sim00001", c.NodeID(c.First))
	require.Equal(t, TPMSwtpm, c.TPMKind, "auto: swtpm for a few nodes")
	require.Equal(t, DefaultTPMCache(TPMSwtpm), c.TPMCache)
	c = base()
	c.Nodes = AutoSoftAbove + 1
	require.NoError(t, c.validate())
	require.Equal(t, TPMSoft, c.TPMKind, "auto: software TPMs beyond AutoSoftAbove")
	require.Equal(t, DefaultTPMCache(TPMSoft), c.TPMCache)
	require.NotEqual(t, DefaultTPMCache(TPMSwtpm), DefaultTPMCache(TPMSoft), "the kinds never share a cache")
	require.Equal(t, 5*time.Minute, c.Deadline)

	for name, mutate := range map[string]func(*Config){
		"no nodes":      func(c *Config) { c.Nodes = 0 },
		"unknown TPM":   func(c *Config) { c.TPMKind = "tpm1.2" },
		"negative rate": func(c *Config) { c.Rate = -1 },
		"no attestor":   func(c *Config) { c.Attestor = "" },
		"no TLS":        func(c *Config) { c.TLS = nil },
		"enroll no TLS": func(c *Config) { c.Enroll = &Enroll{} },
		"enroll no credential": func(c *Config) {
			c.Enroll = &Enroll{TLS: &tls.Config{}}
		},
	} {
		c := base()
		mutate(&c)
		require.Error(t, c.validate(), name)
	}
	c = base()
	c.Enroll = &Enroll{TLS: &tls.Config{}, Token: "t"}
	require.NoError(t, c.validate())
	require.Equal(t, "a:1", c.Enroll.Addr, "the inventory is the attestor's by default")
}

func TestMainRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(ca, []byte("not a certificate"), 0o600))
	for name, args := range map[string][]string{
		"unknown flag":          {"-bogus"},
		"token on command line": {"-admin-token", "secret"},
		"missing CA":            {"-attestor", "a:1", "-tunnelmgr", "b:2", "-ca", filepath.Join(dir, "none.pem")},
		"bad CA":                {"-attestor", "a:1", "-tunnelmgr", "b:2", "-ca", ca},
		"bad log level":         {"-log-level", "loud"},
	} {
		var stderr bytes.Buffer
		require.Equal(t, ExitError, Main(args, io.Discard, &stderr), "%s: %s", name, stderr.String())
	}
	require.Equal(t, ExitOK, Main([]string{"-h"}, io.Discard, io.Discard))
}

func TestWriteTable(t *testing.T) {
	t.Parallel()
	ms := func(n int) Duration { return Duration(time.Duration(n) * time.Millisecond) }
	r := Report{Results: []NodeResult{
		{ID: "sim00001", OK: true, Total: ms(300), Phases: []Phase{{"attest", ms(40)}, {"tunnel", ms(10)}, {"attest", ms(5)}, {"fetch", ms(20)}}},
		{ID: "sim00002", Class: "attestation", Total: ms(50), Phases: []Phase{{"attest", ms(50)}}},
	}}
	var b strings.Builder
	require.NoError(t, r.WriteTable(&b))
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	require.Len(t, lines, 3)
	require.Equal(t, []string{"node", "state", "attest", "ms", "tunnel", "ms", "fetch", "ms", "total", "ms"}, strings.Fields(lines[0]))
	require.Equal(t, []string{"sim00001", "booted", "45.0", "10.0", "20.0", "300.0"}, strings.Fields(lines[1]), "a repeated phase is summed")
	require.Equal(t, []string{"sim00002", "failed:", "attestation", "50.0", "0.0", "0.0", "50.0"}, strings.Fields(lines[2]))
}
