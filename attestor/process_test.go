package attestor_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/attestboot/attestboot/attestor"
	attestorv1 "github.com/attestboot/attestboot/proto/attestboot/attestor/v1"
	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/cli"
	"github.com/attestboot/attestboot/services/nodeattest"
	"github.com/attestboot/attestboot/services/pgtest"
	"github.com/attestboot/attestboot/services/pki"
	"github.com/attestboot/attestboot/services/procstat"
	"github.com/attestboot/attestboot/services/proctest"
	"github.com/attestboot/attestboot/services/tpmtest"
)

// childEnv makes this test binary run as the attestor binary, so the tests and the benchmark
// exercise the real process (flags, environment, migrations, TLS) without a separate build.
const childEnv = "ATTESTBOOT_TEST_RUN_ATTESTOR"

func TestMain(m *testing.M) {
	proctest.RunIfChild(childEnv, func() int { return cli.Main(attestor.Command(), os.Args[1:], os.Stderr) })
	os.Exit(pgtest.Main(m))
}

func attestorCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	return cmd
}

// server is a running attestor process with clients for nodes and admins.
type server struct {
	proc  *proctest.Process
	node  attestorv1.AttestorServiceClient
	admin inventoryv1.InventoryServiceClient
	anon  inventoryv1.InventoryServiceClient // admin API without credentials
}

func startAttestor(t testing.TB, dbURL string, extra ...string) server {
	t.Helper()
	addr, state := proctest.FreeAddr(t), t.TempDir()
	args := append([]string{"serve", "-listen", addr, "-state-dir", state, "-metrics-listen", ""}, extra...)
	cmd := attestorCmd(args...)
	cmd.Env = append(cmd.Env, "ATTESTOR_DATABASE_URL="+dbURL)
	if _, ok := t.(*testing.B); ok {
		cmd.Env = append(cmd.Env, "ATTESTOR_LOG_LEVEL=warn")
	}
	proc := proctest.Start(t, cmd, proctest.All(proctest.FileExists(filepath.Join(state, pki.AdminKeyFile)), proctest.Dialable(addr)))

	dial := func(cfg func() (*tls.Config, error)) *grpc.ClientConn {
		tc, err := cfg()
		require.NoError(t, err)
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ca := filepath.Join(state, pki.CACertFile)
	nodeConn := dial(func() (*tls.Config, error) { return pki.NodeClientTLS(ca) })
	adminConn := dial(func() (*tls.Config, error) {
		return pki.AdminClientTLS(ca, filepath.Join(state, pki.AdminCertFile), filepath.Join(state, pki.AdminKeyFile))
	})
	return server{
		proc:  proc,
		node:  attestorv1.NewAttestorServiceClient(nodeConn),
		admin: inventoryv1.NewInventoryServiceClient(adminConn),
		anon:  inventoryv1.NewInventoryServiceClient(nodeConn),
	}
}

// enroll creates a node through the admin API and enrolls its TPM's EK by hash.
func (s server) enroll(t testing.TB, id string, tpm *tpmtest.TPM) {
	t.Helper()
	ctx := context.Background()
	_, err := s.admin.CreateNode(ctx, &inventoryv1.CreateNodeRequest{Node: &inventoryv1.Node{Id: id, Enabled: true}})
	require.NoError(t, err)
	sum := tpm.EKSHA256()
	_, err = s.admin.EnrollNode(ctx, &inventoryv1.EnrollNodeRequest{NodeId: id, Ek: &inventoryv1.EnrollNodeRequest_EkSha256{EkSha256: sum[:]}})
	require.NoError(t, err)
}

func openNode(t testing.TB, tpm *tpmtest.TPM) (*nodeattest.TPM, []byte) {
	t.Helper()
	ch, err := tpm.Open()
	require.NoError(t, err)
	n, err := nodeattest.Open(ch, nodeattest.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	wg := make([]byte, 32)
	_, err = rand.Read(wg)
	require.NoError(t, err)
	return n, wg
}

func TestAttestorProcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// The migrate command alone prepares an empty database.
	url := pgtest.NewEmptyDB(t)
	out, err := attestorCmd("migrate", "-database-url", url).CombinedOutput()
	require.NoError(t, err, "%s", out)

	s := startAttestor(t, url, "-migrate=false")
	_, err = s.anon.ListNodes(ctx, &inventoryv1.ListNodesRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "the admin API refuses callers without credentials")

	tpm := tpmtest.Start(t)
	s.enroll(t, "x1000c0s0b0n0", tpm)
	n, wg := openNode(t, tpm)
	res, err := n.Attest(ctx, s.node, "x1000c0s0b0n0", wg)
	require.NoError(t, err)
	require.NotEmpty(t, res.AttestationID)

	evs, err := s.admin.ListEvents(ctx, &inventoryv1.ListEventsRequest{Filter: &inventoryv1.EventFilter{NodeId: "x1000c0s0b0n0", Kinds: []string{"attestation.passed"}}})
	require.NoError(t, err)
	require.Len(t, evs.GetEvents(), 1)
}

func TestAttestorCommandLine(t *testing.T) {
	t.Parallel()
	out, err := attestorCmd("serve", "-no-such-flag").CombinedOutput()
	require.Equal(t, cli.ExitUsage, proctest.ExitCode(err), "%s", out)
	out, err = attestorCmd("serve", "-listen", "127.0.0.1:0", "-state-dir", t.TempDir()).CombinedOutput()
	require.Equal(t, cli.ExitError, proctest.ExitCode(err), "%s", out)
	require.Contains(t, string(out), "no database URL")
	out, err = attestorCmd("-h").CombinedOutput()
	require.Equal(t, cli.ExitOK, proctest.ExitCode(err))
	require.Contains(t, string(out), "ATTESTOR_<FLAG>")
}

// BenchmarkAttestor runs whole attestations from many concurrent swtpm nodes against an
// attestor process and reports the CPU the attestor and Postgres spend per attestation (TPM
// emulation and the nodes' side excluded) and the attestations per second.
//
//	go test -run '^$' -bench Attestor -benchtime 2000x ./
func BenchmarkAttestor(b *testing.B) {
	for _, nodes := range []int{1, 32} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			url := pgtest.NewDB(b)
			s := startAttestor(b, url, "-max-per-node", "1000000000", "-max-per-ek", "1000000000")
			postmaster := pgtest.ServerPID(b, url)
			tpms := tpmtest.StartN(b, nodes)
			type nd struct {
				id  string
				tpm *nodeattest.TPM
				wg  []byte
			}
			ns := make([]nd, nodes)
			for i, tpm := range tpms {
				id := fmt.Sprintf("bench%04d", i)
				s.enroll(b, id, tpm)
				n, wg := openNode(b, tpm)
				ns[i] = nd{id, n, wg}
			}
			ctx := context.Background()
			var next atomic.Int64
			var wg sync.WaitGroup
			svc0, _ := procstat.Read(s.proc.Pid())
			pg0 := procstat.CPUOfFamily(postmaster)
			start := time.Now()
			b.ResetTimer()
			for _, n := range ns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := n.tpm.Attest(ctx, s.node, n.id, n.wg); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			elapsed := time.Since(start)
			svc1, err := procstat.Read(s.proc.Pid())
			require.NoError(b, err)
			pg := procstat.CPUOfFamily(postmaster) - pg0
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "attest/s")
			b.ReportMetric(float64((svc1.CPU-svc0.CPU).Microseconds())/1000/float64(b.N), "attestor-cpu-ms/op")
			b.ReportMetric(float64(pg.Microseconds())/1000/float64(b.N), "pg-cpu-ms/op")
			b.ReportMetric(float64(svc1.RSS)/(1<<20), "attestor-rss-MiB")
		})
	}
}
