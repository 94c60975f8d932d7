package storm

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/attestboot/attestboot/node-agent/internal/sim"
	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
)

func msd(n float64) sim.Duration { return sim.Duration(n * float64(time.Millisecond)) }

func phases(kv ...any) []sim.Phase {
	var out []sim.Phase
	for i := 0; i < len(kv); i += 2 {
		out = append(out, sim.Phase{Name: kv[i].(string), Duration: msd(kv[i+1].(float64))})
	}
	return out
}

func TestCPUFiguresPerNode(t *testing.T) {
	t.Parallel()
	before := map[string]time.Duration{"attestor": 2 * time.Second, Postgres: time.Second}
	after := map[string]time.Duration{"attestor": 2500 * time.Millisecond, Postgres: 3 * time.Second}
	got := cpuFigures([]string{"attestor", Postgres}, before, after, 100)
	require.Equal(t, []ProcessCPU{
		{Name: "attestor", Seconds: 0.5, MSPerNode: 5},
		{Name: Postgres, Seconds: 2, MSPerNode: 20},
	}, got)
	require.Zero(t, perNode(10, 0), "no nodes, no division by zero")
}

func TestDBStatsDeltaPerNode(t *testing.T) {
	t.Parallel()
	before := DBStats{XactCommit: 100, XactRollback: 1, TupInserted: 10, TupUpdated: 5, TupDeleted: 0, XIDs: 700}
	after := DBStats{XactCommit: 1100, XactRollback: 3, TupInserted: 410, TupUpdated: 205, TupDeleted: 100, XIDs: 1100}
	d := after.Sub(before)
	require.Equal(t, DBStats{XactCommit: 1000, XactRollback: 2, TupInserted: 400, TupUpdated: 200, TupDeleted: 100, XIDs: 400, WriteXacts: -1}, d)
	require.EqualValues(t, 700, d.RowsWritten())
	f := dbFigures(d, 100)
	require.InDelta(t, 10.02, f.XactsPerNode, 1e-9)
	require.InDelta(t, 4.0, f.WriteXactsPerNode, 1e-9, "without the WAL's commit count, the transaction ids")
	require.InDelta(t, 7.0, f.RowsPerNode, 1e-9)
	d.WriteXacts = 150
	require.InDelta(t, 1.5, dbFigures(d, 100).WriteXactsPerNode, 1e-9, "the WAL's commit count when there is one")
	d.WriteXacts = 0
	require.Zero(t, dbFigures(d, 100).WriteXactsPerNode, "no commit at all is no commit")
}

func TestStatementDeltaKeepsWhatRanMostExpensiveFirst(t *testing.T) {
	t.Parallel()
	before := map[int64]Statement{
		1: {Query: "SELECT a", Calls: 10, Rows: 10, TotalMS: 5},
		2: {Query: "UPDATE b", Calls: 3, Rows: 3, TotalMS: 1},
	}
	after := map[int64]Statement{
		1: {Query: "SELECT a", Calls: 110, Rows: 110, TotalMS: 15}, // +10 ms
		2: {Query: "UPDATE b", Calls: 3, Rows: 3, TotalMS: 1},      // did not run
		3: {Query: "INSERT c", Calls: 100, Rows: 100, TotalMS: 40}, // new: 40 ms
	}
	got := statementDelta(before, after)
	require.Equal(t, []Statement{
		{Query: "INSERT c", Calls: 100, Rows: 100, TotalMS: 40},
		{Query: "SELECT a", Calls: 100, Rows: 100, TotalMS: 10},
	}, got)
}

// TestStatementFiguresCountEveryStatement: the per-node figures sum all the statements, the
// list keeps the costliest statementLimit.
func TestStatementFiguresCountEveryStatement(t *testing.T) {
	t.Parallel()
	all := make([]Statement, statementLimit+5)
	for i := range all {
		all[i] = Statement{Query: fmt.Sprintf("SELECT %d", i), Calls: 10, TotalMS: 2}
	}
	var d DBFigures
	d.setStatements(all, 5)
	require.InDelta(t, float64(10*len(all))/5, d.StatementsPerNode, 1e-9)
	require.InDelta(t, float64(2*len(all))/5, d.StatementMSPerNode, 1e-9)
	require.Equal(t, all[:statementLimit], d.Statements)
	var text strings.Builder
	require.NoError(t, (&Report{DB: &d}).WriteText(&text))
	require.Contains(t, text.String(), "pg_stat_statements: 60.0 statements/node, 12.00 ms executing/node; the costliest:")
}

func TestMilestoneSeries(t *testing.T) {
	t.Parallel()
	results := []sim.NodeResult{
		{ID: "ok", OK: true, Started: msd(0), Total: msd(100),
			Phases: phases("tpm", 5.0, "attest", 20.0, "tunnel", 10.0, "wireguard", 5.0, "fetch", 30.0, "seed", 1.0, "phone-home", 20.0, "teardown", 9.0)},
		// Attested twice: the tunnel failed once (Unavailable), so attest ends at its second run.
		{ID: "retried", OK: true, Started: msd(50), Total: msd(300),
			Phases: phases("tpm", 5.0, "attest", 20.0, "tunnel", 10.0, "attest", 20.0, "tunnel", 10.0, "fetch", 40.0)},
		// Failed in fetch: attest and tunnel done, fetch not, not booted.
		{ID: "fetchfail", OK: false, Started: msd(10), Total: msd(500),
			Phases: phases("tpm", 5.0, "attest", 20.0, "tunnel", 10.0, "wireguard", 5.0, "fetch", 400.0, "teardown", 1.0)},
		// Failed attesting after a failed tunnel: no milestone at all.
		{ID: "attestfail", OK: false, Started: msd(20), Total: msd(100),
			Phases: phases("tpm", 5.0, "attest", 20.0, "tunnel", 10.0, "attest", 50.0)},
	}
	got := milestoneSeries(results)
	require.Len(t, got, 4)
	want := []Series{
		{Label: "attest done", Times: []float64{0.025, 0.035, 0.105}},
		{Label: "tunnel done", Times: []float64{0.035, 0.045, 0.115}},
		{Label: "fetch done", Times: []float64{0.07, 0.155}},
		{Label: "booted", Times: []float64{0.1, 0.35}},
	}
	for i := range want {
		require.Equal(t, want[i].Label, got[i].Label)
		require.InDeltaSlice(t, want[i].Times, got[i].Times, 1e-9, got[i].Label)
	}
}

func TestParsePIDs(t *testing.T) {
	t.Parallel()
	got, err := ParsePIDs("attestor=12, tunnelmgr=13,metadata=14,postgres=9")
	require.NoError(t, err)
	require.Equal(t, map[string]int{"attestor": 12, "tunnelmgr": 13, "metadata": 14, Postgres: 9}, got)
	require.Equal(t, []string{"attestor", "metadata", "tunnelmgr", Postgres}, names(got), "services by name, Postgres last")
	for _, bad := range []string{"attestor", "attestor=x", "=3", "attestor=0", "a=1,a=2"} {
		_, err := ParsePIDs(bad)
		require.Error(t, err, bad)
	}
}

func TestProcReadings(t *testing.T) {
	t.Parallel()
	// A postmaster-like line whose name holds spaces and parentheses; cutime 250, cstime 50.
	line := "42 (post (gres) x) S 1 1 1 0 -1 4194560 100 0 0 0 7 3 250 50 20 0 1 0 100 1000 7 18446744073709551615"
	d, err := parseReaped(line)
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, d)
	_, err = parseReaped("garbage")
	require.Error(t, err)

	hwm, err := parseVmHWM(strings.NewReader("Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n"))
	require.NoError(t, err)
	require.EqualValues(t, 2<<20, hwm)
	_, err = parseVmHWM(strings.NewReader("Name:\tx\n"))
	require.Error(t, err)

	// The real thing, on this process: the kernel's high-water mark covers what is resident.
	self, err := vmHWM(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, self)
	cpu, err := readCPU(map[string]int{"self": os.Getpid(), Postgres: os.Getppid()})
	require.NoError(t, err)
	require.Contains(t, cpu, "self")
	require.GreaterOrEqual(t, cpu[Postgres], cpu["self"], "a parent's family includes this process")
}

// fakeGateway answers GetGatewayStatus with the counts of a scripted storm.
type fakeGateway struct{ peers chan int64 }

var _ gatewayStatus = (*fakeGateway)(nil)

func (f *fakeGateway) GetGatewayStatus(ctx context.Context, _ *tunnelmgrv1.GetGatewayStatusRequest, _ ...grpc.CallOption) (*tunnelmgrv1.GetGatewayStatusResponse, error) {
	select {
	case n := <-f.peers:
		return &tunnelmgrv1.GetGatewayStatusResponse{Gateway: &tunnelmgrv1.GatewayStatus{PeerCount: n, OpenTunnels: n + 1}}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	default:
		return &tunnelmgrv1.GetGatewayStatusResponse{Gateway: &tunnelmgrv1.GatewayStatus{}}, nil
	}
}

func TestSamplerPeaks(t *testing.T) {
	t.Parallel()
	gw := &fakeGateway{peers: make(chan int64, 8)}
	for _, n := range []int64{3, 40, 17, 0} {
		gw.peers <- n
	}
	s := startSampler(context.Background(), time.Now(), 5*time.Millisecond, map[string]int{"self": os.Getpid(), Postgres: os.Getppid()}, gw)
	require.Eventually(t, func() bool { return len(gw.peers) == 0 }, 5*time.Second, 5*time.Millisecond)
	s.stop()
	peers, open := peak(s.peers)
	require.EqualValues(t, 40, peers)
	require.EqualValues(t, 41, open)
	require.Zero(t, s.peerErrors)
	require.Positive(t, s.peakRSS["self"])
	require.NotContains(t, s.peakRSS, Postgres, "Postgres' shared memory is not a service's RSS")
	for i := 1; i < len(s.peers); i++ {
		require.GreaterOrEqual(t, s.peers[i].At, s.peers[i-1].At)
	}
}

func TestShellJoin(t *testing.T) {
	t.Parallel()
	require.Equal(t, `storm -nodes 10 -database-url 'postgres:///a?host=/tmp/x&port=1' '' 'it'\''s'`,
		shellJoin([]string{"storm", "-nodes", "10", "-database-url", "postgres:///a?host=/tmp/x&port=1", "", "it's"}))
}

func TestMachineCPU(t *testing.T) {
	t.Parallel()
	busy, total, err := parseMachineCPU("cpu  1000 10 500 8000 90 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
	require.NoError(t, err)
	require.Equal(t, 15200*time.Millisecond, busy, "user+nice+system+irq+softirq+steal")
	require.Equal(t, 96100*time.Millisecond, total)
	_, _, err = parseMachineCPU("intr 1 2 3")
	require.Error(t, err)

	before := readings{busy: 10 * time.Second, total: 100 * time.Second, self: time.Second, tpms: 0}
	after := readings{busy: 30 * time.Second, total: 140 * time.Second, self: 6 * time.Second, tpms: 8 * time.Second}
	m := machineFigures([]ProcessCPU{{Seconds: 3}, {Seconds: 1}}, before, after, 1000)
	require.Equal(t, MachineCPU{CapacitySeconds: 40, BusySeconds: 20, ServersSeconds: 4, SimulatorSeconds: 5, SWTPMSeconds: 8,
		OtherSeconds: 3, SimulatorMSPerNode: 5, SWTPMMSPerNode: 8}, m)

	// /proc counts CPU in ticks of 10 ms: a test binary that has barely run may show none yet.
	for start, x := time.Now(), 0; time.Since(start) < 50*time.Millisecond; x++ {
		_ = x * x
	}
	self, tpms, err := clientCPU()
	require.NoError(t, err)
	require.Positive(t, self)
	require.GreaterOrEqual(t, tpms, time.Duration(0))
}
