package admin_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/attestboot/attestboot/attestor/internal/admin"
	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/pgtest"
	"github.com/attestboot/attestboot/services/pki"
	"github.com/attestboot/attestboot/services/run"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// env is one admin API served over TLS by grpcserver on its own database, with an admin client.
type env struct {
	client inventoryv1.InventoryServiceClient // authenticated with the admin client certificate
	store  *inventory.Store
	pool   *pgxpool.Pool
	addr   string
	pki    *pki.Bundle
	logs   *lockedBuffer
	// stop shuts the server down (and is called at cleanup); it reports what the tasks returned.
	stop func() error
}

// testConfig makes watchers quick enough for tests while still exercising the hold-back.
var testConfig = admin.Config{PollInterval: 200 * time.Millisecond, WatchDelay: 150 * time.Millisecond}

func setup(t *testing.T) *env { return setupWith(t, testConfig) }

func setupWith(t *testing.T, cfg admin.Config) *env {
	t.Helper()
	pool := pgtest.NewPool(t)
	store := inventory.New(pool, inventory.Options{})
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	adm, err := admin.New(store, logger, cfg)
	require.NoError(t, err)
	// No NodeFacing entry: every InventoryService method is admin-only.
	srv, err := grpcserver.New(grpcserver.Config{
		StateDir:      filepath.Join(t.TempDir(), "pki"),
		ShutdownGrace: 5 * time.Second,
	}, logger, nil)
	require.NoError(t, err)
	adm.Register(srv)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	tasks := []func(context.Context) error{func(ctx context.Context) error { return srv.Serve(ctx, lis) }, adm.Run}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run.Group(ctx, tasks...) }()
	var once sync.Once
	var result error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(30 * time.Second):
				result = errors.New("the server did not stop")
			}
		})
		return result
	}
	t.Cleanup(func() { require.NoError(t, stop()) })

	e := &env{store: store, pool: pool, addr: lis.Addr().String(), pki: srv.PKI(), logs: logs, stop: stop}
	tc, err := e.pki.AdminClientTLS()
	require.NoError(t, err)
	e.client = inventoryv1.NewInventoryServiceClient(e.dial(t, credentials.NewTLS(tc)))
	return e
}

func (e *env) dial(t *testing.T, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(creds))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// events returns what the event log holds, read directly from the store.
func (e *env) events(t *testing.T, q inventory.EventQuery) []inventory.Event {
	t.Helper()
	q.Limit = inventory.MaxPageSize
	events, err := e.store.QueryEvents(context.Background(), q)
	require.NoError(t, err)
	return events
}

func (e *env) kinds(t *testing.T, q inventory.EventQuery) []string {
	t.Helper()
	var out []string
	for _, ev := range e.events(t, q) {
		out = append(out, ev.Kind)
	}
	return out
}

// count returns the number of rows of a table.
func (e *env) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n))
	return n
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// requireCode checks the gRPC code of err and that its message contains each of msgs.
func requireCode(t *testing.T, err error, code codes.Code, msgs ...string) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a gRPC status: %v", err)
	require.Equal(t, code, st.Code(), "status: %v", st)
	for _, m := range msgs {
		require.Contains(t, st.Message(), m)
	}
}

// adminPrincipal is what events record for the development PKI's admin certificate.
var adminPrincipal = "certificate:" + pki.AdminCommonName

// lockedBuffer is an io.Writer for a logger shared by concurrent calls.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func createNodes(t *testing.T, e *env, ids ...string) {
	t.Helper()
	for _, id := range ids {
		_, err := e.client.CreateNode(ctxT(t), &inventoryv1.CreateNodeRequest{Node: &inventoryv1.Node{Id: id, Enabled: true}})
		require.NoError(t, err, id)
	}
}

func nodeID(i int) string { return fmt.Sprintf("x1000c0s%02db0n0", i) }
