package pgtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestNewDBIsMigrated(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	states, err := inventory.MigrationStatus(context.Background(), pool)
	require.NoError(t, err)
	require.NotEmpty(t, states)
	for _, s := range states {
		require.True(t, s.Applied, "migration %d (%s) not applied", s.Version, s.Name)
		require.False(t, s.Unknown)
	}
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM nodes`).Scan(&n))
	require.Zero(t, n)
}

func TestNewEmptyDBHasNoSchema(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t, pgtest.NewEmptyDB(t))
	var tables int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables))
	require.Zero(t, tables)
}

func TestDatabasesAreIsolatedAndDropped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var name string
	t.Run("write", func(t *testing.T) {
		url := pgtest.NewDB(t)
		pool := pgtest.Pool(t, url)
		_, err := pool.Exec(ctx, `INSERT INTO nodes (id) VALUES ('x1000c0s0b0n0')`)
		require.NoError(t, err)
		require.NoError(t, pool.QueryRow(ctx, `SELECT current_database()`).Scan(&name))
	})
	require.NotEmpty(t, name)

	other := pgtest.NewPool(t)
	var n int
	require.NoError(t, other.QueryRow(ctx, `SELECT count(*) FROM nodes`).Scan(&n))
	require.Zero(t, n, "a new database must not see another test's rows")

	var exists bool
	require.NoError(t, other.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists))
	require.False(t, exists, "database %s must be dropped when its test ends", name)
}

func TestConnectionsAreRealPostgres(t *testing.T) {
	t.Parallel()
	conn, err := pgx.Connect(context.Background(), pgtest.NewDB(t))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var version int
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT current_setting('server_version_num')::int`).Scan(&version))
	require.GreaterOrEqual(t, version, 130000, "gen_random_uuid and DROP DATABASE ... FORCE need Postgres 13+")
}

// TestCreateDBTiming reports what a database costs; it asserts only that creation works, as
// timings are not assertions (CONVENTIONS.md).
func TestCreateDBTiming(t *testing.T) {
	t0 := time.Now()
	pgtest.NewDB(t) // the first also creates and migrates the template, unless a parallel test did
	first := time.Since(t0)
	const n = 5
	var migrated, empty time.Duration
	for range n {
		t0 := time.Now()
		pgtest.NewDB(t)
		migrated += time.Since(t0)
		t0 = time.Now()
		pgtest.NewEmptyDB(t)
		empty += time.Since(t0)
	}
	t.Logf("first NewDB (template creation + migrations): %v; NewDB: %v each; NewEmptyDB: %v each",
		first, migrated/n, empty/n)
}

func BenchmarkNewDB(b *testing.B) {
	pgtest.NewDB(b)
	for b.Loop() {
		pgtest.NewDB(b)
	}
}
