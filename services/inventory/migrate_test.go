package inventory_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/migrations"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/pgtest"
)

// schemaObjects lists the tables, functions and indexes in the public schema except the runner's
// own bookkeeping, so "down to 0" can be checked to leave nothing behind.
func schemaObjects(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT c.relkind::text || ' ' || c.relname
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relname NOT LIKE 'schema_migrations%'
		UNION ALL
		SELECT 'function ' || p.proname
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'public'
		ORDER BY 1`)
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

func TestMigrateUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.NewEmptyDB(t))
	all, err := inventory.LoadMigrations(migrations.FS)
	require.NoError(t, err)
	require.NotEmpty(t, all)

	n, err := inventory.Migrate(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, len(all), n)
	first := schemaObjects(t, pool)
	for _, want := range []string{"r nodes", "r groups", "r group_members", "r group_pcr_policies",
		"r ek_enrollments", "r attestation_sessions", "r attestations", "r gateways", "r tunnels",
		"r cloud_init_data", "r secrets", "r ssh_host_keys", "r events",
		"i tunnels_open_address_v4", "i attestation_sessions_one_pending_per_ek"} {
		require.Contains(t, first, want)
	}

	n, err = inventory.Migrate(ctx, pool)
	require.NoError(t, err)
	require.Zero(t, n, "a migrated database has nothing left to apply")

	// Down one step at a time, so each Down section is run against exactly its Up's state.
	for i := len(all) - 1; i >= 0; i-- {
		n, err := inventory.MigrateDown(ctx, pool, all[i].Version-1)
		require.NoError(t, err, "down from %d", all[i].Version)
		require.Equal(t, 1, n)
	}
	require.Empty(t, schemaObjects(t, pool), "every Down section must drop what its Up created")
	states, err := inventory.MigrationStatus(ctx, pool)
	require.NoError(t, err)
	for _, s := range states {
		require.False(t, s.Applied, "version %d still recorded", s.Version)
	}

	n, err = inventory.Migrate(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, len(all), n)
	require.Equal(t, first, schemaObjects(t, pool), "up again must rebuild the same schema")

	n, err = inventory.MigrateDown(ctx, pool, 0)
	require.NoError(t, err)
	require.Equal(t, len(all), n)
	require.Empty(t, schemaObjects(t, pool))
}

func TestMigrateConcurrentStartsSerialise(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.NewEmptyDB(t)
	const replicas = 4
	applied := make([]int, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		// One pool per "service replica", as in production.
		pool := pgtest.Pool(t, dbURL)
		wg.Go(func() { applied[i], errs[i] = inventory.Migrate(ctx, pool) })
	}
	wg.Wait()
	all, err := inventory.LoadMigrations(migrations.FS)
	require.NoError(t, err)
	total := 0
	for i := range replicas {
		require.NoError(t, errs[i], "replica %d", i)
		total += applied[i]
	}
	require.Equal(t, len(all), total, "each migration must be applied exactly once across replicas")

	pool := pgtest.Pool(t, dbURL)
	var locks int
	require.NoError(t, pool.QueryRow(ctx,
		`SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
		 WHERE l.locktype = 'advisory' AND d.datname = current_database()`).Scan(&locks))
	require.Zero(t, locks, "the advisory lock must be released")
}

func TestMigrationStatusReportsUnknownVersions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	_, err := pool.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES (99999, 'from_the_future')`)
	require.NoError(t, err)
	states, err := inventory.MigrationStatus(ctx, pool)
	require.NoError(t, err)
	last := states[len(states)-1]
	require.Equal(t, inventory.MigrationState{Version: 99999, Name: "from_the_future", Applied: true, AppliedAt: last.AppliedAt, Unknown: true}, last)
	for _, s := range states[:len(states)-1] {
		require.True(t, s.Applied)
	}
	// A newer release migrated this database: this binary has nothing to do, and must not fail.
	n, err := inventory.Migrate(ctx, pool)
	require.NoError(t, err)
	require.Zero(t, n)
	// But it cannot revert what it does not know.
	_, err = inventory.MigrateDown(ctx, pool, 0)
	require.ErrorContains(t, err, "not embedded")
}

func TestMigrateFailureRollsBackThatMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.NewEmptyDB(t))
	fsys := fstest.MapFS{
		"0001_ok.sql": {Data: []byte("-- +goose Up\nCREATE TABLE a (x int);\n-- +goose Down\nDROP TABLE a;\n")},
		"0002_broken.sql": {Data: []byte("-- +goose Up\nCREATE TABLE b (x int);\n" +
			"INSERT INTO b VALUES (1);\nSELECT no_such_function();\n-- +goose Down\nDROP TABLE b;\n")},
	}
	n, err := inventory.MigrateUpFS(ctx, pool, fsys)
	require.Equal(t, 1, n)
	require.ErrorContains(t, err, "0002_broken (up): line 4:", "the error points at the failing line of the file")
	var tables []string
	rows, err := pool.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		tables = append(tables, s)
	}
	require.Equal(t, []string{"a", "schema_migrations"}, tables, "table b must be rolled back with its migration")
}

func TestMigrateNoTransactionAndOrdering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.NewEmptyDB(t))
	fsys := fstest.MapFS{
		"0001_table.sql": {Data: []byte("-- +goose Up\nCREATE TABLE a (x int);\n-- +goose Down\nDROP TABLE a;\n")},
		// CREATE INDEX CONCURRENTLY fails inside a transaction, also an implicit one.
		"0003_index.sql": {Data: []byte("-- +goose NO TRANSACTION\n-- +goose Up\n" +
			"CREATE INDEX CONCURRENTLY a_x ON a (x);\nCREATE INDEX CONCURRENTLY a_x2\n    ON a (x); -- two lines\n" +
			"-- +goose Down\nDROP INDEX CONCURRENTLY a_x2;\nDROP INDEX CONCURRENTLY a_x;\n")},
	}
	n, err := inventory.MigrateUpFS(ctx, pool, fsys)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	var indexes int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE tablename = 'a'`).Scan(&indexes))
	require.Equal(t, 2, indexes)

	// A migration numbered below one already applied is refused, not slipped in.
	fsys["0002_late.sql"] = &fstest.MapFile{Data: []byte("-- +goose Up\nCREATE TABLE late (x int);\n")}
	_, err = inventory.MigrateUpFS(ctx, pool, fsys)
	require.ErrorContains(t, err, "out of order")

	delete(fsys, "0002_late.sql")
	n, err = inventory.MigrateDownFS(ctx, pool, fsys, 1)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE tablename = 'a'`).Scan(&indexes))
	require.Zero(t, indexes)
}

func TestLoadMigrationsParsesGooseFormat(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"0002_fn.sql": {Data: []byte(`-- a comment before Up is fine

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;
-- +goose StatementEnd
-- +goose Down
DROP FUNCTION f();
`)},
		"0001_first.sql": {Data: []byte("-- +goose Up\nSELECT 1;\n")},
		"README.md":      {Data: []byte("not a migration")},
	}
	ms, err := inventory.LoadMigrations(fsys)
	require.NoError(t, err)
	require.Len(t, ms, 2)
	require.Equal(t, int64(1), ms[0].Version)
	require.Equal(t, "first", ms[0].Name)
	require.Empty(t, strings.TrimSpace(ms[0].Down))
	require.Equal(t, int64(2), ms[1].Version)
	require.Contains(t, ms[1].Up, "CREATE FUNCTION f()")
	require.NotContains(t, ms[1].Up, "DROP FUNCTION")
	require.Equal(t, "DROP FUNCTION f();", strings.TrimSpace(ms[1].Down))
}

func TestLoadMigrationsRejectsMalformedFiles(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct{ file, src, want string }{
		"bad name":          {"first.sql", "-- +goose Up\nSELECT 1;", "NNNN_name.sql"},
		"zero version":      {"0000_x.sql", "-- +goose Up\nSELECT 1;", "positive"},
		"no up":             {"0001_x.sql", "SELECT 1;", "SQL before the Up section"},
		"only comments":     {"0001_x.sql", "-- nothing", "no \"-- +goose Up\" section"},
		"empty up":          {"0001_x.sql", "-- +goose Up\n-- +goose Down\nSELECT 1;", "empty Up"},
		"down first":        {"0001_x.sql", "-- +goose Down\nSELECT 1;", "Down section must follow"},
		"two ups":           {"0001_x.sql", "-- +goose Up\nSELECT 1;\n-- +goose Up\n", "unexpected Up"},
		"unclosed block":    {"0001_x.sql", "-- +goose Up\n-- +goose StatementBegin\nSELECT 1;", "without StatementEnd"},
		"stray end":         {"0001_x.sql", "-- +goose Up\nSELECT 1;\n-- +goose StatementEnd", "without StatementBegin"},
		"unknown directive": {"0001_x.sql", "-- +goose Up\n-- +goose ENVSUB ON\nSELECT 1;", "unsupported goose annotation"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := inventory.LoadMigrations(fstest.MapFS{tc.file: {Data: []byte(tc.src)}})
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := inventory.LoadMigrations(fstest.MapFS{
		"0001_a.sql": {Data: []byte("-- +goose Up\nSELECT 1;")},
		"1_b.sql":    {Data: []byte("-- +goose Up\nSELECT 1;")},
	})
	require.ErrorContains(t, err, "share version 1")
}
