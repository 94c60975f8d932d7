package attestation_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/attestboot/attestboot/attestor/internal/attestation"
	"github.com/attestboot/attestboot/attestor/internal/ekpolicy"
	attestorv1 "github.com/attestboot/attestboot/proto/attestboot/attestor/v1"
	"github.com/attestboot/attestboot/services/clock"
	"github.com/attestboot/attestboot/services/ekcert"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/nodeattest"
	"github.com/attestboot/attestboot/services/pgtest"
	"github.com/attestboot/attestboot/services/tpmtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// bundle is an attestor serving over TLS on loopback, with its store and clock.
type bundle struct {
	store  *inventory.Store
	pool   *pgxpool.Pool
	clock  *clock.Fake
	client attestorv1.AttestorServiceClient
	reg    *prometheus.Registry // the service's metrics
}

func setup(t testing.TB, cfg attestation.Config) bundle {
	t.Helper()
	pool := pgtest.NewPool(t)
	// EK certificates are checked against the clock, so it starts at the real time.
	fake := clock.NewFake(time.Now().UTC().Truncate(time.Microsecond))
	store := inventory.New(pool, inventory.Options{Clock: fake})
	if cfg.EK == nil {
		p, err := ekpolicy.New(ekpolicy.Config{})
		require.NoError(t, err)
		cfg.EK = p
	}
	level := slog.LevelDebug
	if _, ok := t.(*testing.B); ok {
		level = slog.LevelWarn // a benchmark measures the service, not its request log
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
	reg := prometheus.NewRegistry()
	svc, err := attestation.New(cfg, store, logger, reg)
	require.NoError(t, err)

	gs, err := grpcserver.New(grpcserver.Config{
		StateDir:   t.TempDir(),
		NodeFacing: []string{"attestboot.attestor.v1.AttestorService"},
	}, logger, prometheus.NewRegistry())
	require.NoError(t, err)
	svc.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gs.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	tlsCfg, err := gs.PKI().NodeClientTLS()
	require.NoError(t, err)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return bundle{store: store, pool: pool, clock: fake, client: attestorv1.NewAttestorServiceClient(conn), reg: reg}
}

// node is a simulated machine: its own swtpm, opened through the node-side library.
type node struct {
	id    string
	swtpm *tpmtest.TPM
	tpm   *nodeattest.TPM
	wg    []byte
}

func newNode(t testing.TB, id string, alg nodeattest.Algorithm) *node {
	t.Helper()
	sw := tpmtest.Start(t)
	ch, err := sw.Open()
	require.NoError(t, err)
	tpm, err := nodeattest.Open(ch, nodeattest.Config{AKAlgorithm: alg})
	require.NoError(t, err)
	t.Cleanup(func() { tpm.Close() })
	wg := make([]byte, 32)
	_, err = rand.Read(wg)
	require.NoError(t, err)
	return &node{id: id, swtpm: sw, tpm: tpm, wg: wg}
}

// addNode creates the node in the inventory, enabled, and enrolls its TPM's EK by hash.
func (b bundle) addNode(t testing.TB, n *node) {
	t.Helper()
	ctx := context.Background()
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: n.id, Enabled: true})
	require.NoError(t, err)
	sum, err := ekcert.SHA256PKIX(n.swtpm.EKPublicKey())
	require.NoError(t, err)
	_, _, err = b.store.Enroll(ctx, inventory.Enrollment{NodeID: n.id, EKSHA256: sum[:], Source: inventory.SourceAdmin})
	require.NoError(t, err)
}

func (b bundle) begin(t *testing.T, n *node) (*attestorv1.BeginAttestationResponse, error) {
	t.Helper()
	return b.client.BeginAttestation(context.Background(), n.tpm.BeginRequest(n.id, n.wg))
}

// events returns the node's events of one kind.
func (b bundle) events(t *testing.T, nodeID, kind string) []inventory.Event {
	t.Helper()
	evs, err := b.store.QueryEvents(context.Background(), inventory.EventQuery{NodeID: nodeID, Kinds: []string{kind}})
	require.NoError(t, err)
	return evs
}

func (b bundle) countAttestations(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), `SELECT count(*) FROM attestations`).Scan(&n))
	return n
}
