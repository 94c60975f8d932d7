package storm

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/pgtest"
)

// TestDBStatsCountWhatWasWritten writes known rows in two transactions on one connection and
// reads the counters from another, as the storm does with the services' connections.
func TestDBStatsCountWhatWasWritten(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewEmptyDB(t)
	connect := func() *pgx.Conn {
		c, err := pgx.Connect(ctx, url)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	reader, writer := connect(), connect()
	// The commits must reach the flushed WAL, where the commit count reads them, now.
	_, err := writer.Exec(ctx, `SET synchronous_commit = on`)
	require.NoError(t, err)
	_, err = writer.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v int)`)
	require.NoError(t, err)
	require.False(t, walInspectAvailable(ctx, reader))
	_, err = writer.Exec(ctx, `CREATE EXTENSION pg_walinspect`)
	require.NoError(t, err)
	require.True(t, walInspectAvailable(ctx, reader))
	// The table's creation wrote catalog rows; flush them before the baseline.
	flush := func() {
		_, err := writer.Exec(ctx, `SELECT pg_stat_force_next_flush()`)
		require.NoError(t, err)
		_, err = writer.Exec(ctx, `SELECT 1`)
		require.NoError(t, err)
	}
	flush()

	before, err := readDBStats(ctx, reader)
	require.NoError(t, err)
	tx, err := writer.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `INSERT INTO t SELECT g, 0 FROM generate_series(1, 10) g`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	tx, err = writer.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `UPDATE t SET v = 1 WHERE id <= 3`)
	require.NoError(t, err)
	// A savepoint that writes takes a transaction id of its own, but adds no commit.
	sp, err := tx.Begin(ctx)
	require.NoError(t, err)
	_, err = sp.Exec(ctx, `DELETE FROM t WHERE id > 8`)
	require.NoError(t, err)
	require.NoError(t, sp.Commit(ctx))
	require.NoError(t, tx.Commit(ctx))
	flush()

	var d, after DBStats
	require.Eventually(t, func() bool {
		after, err = readDBStats(ctx, reader)
		require.NoError(t, err)
		d = after.Sub(before)
		return d.TupDeleted == 2
	}, 15*time.Second, 100*time.Millisecond, "the writer's statistics never arrived")
	require.EqualValues(t, 10, d.TupInserted)
	require.EqualValues(t, 3, d.TupUpdated)
	require.EqualValues(t, 15, d.RowsWritten())
	require.EqualValues(t, 3, d.XIDs, "two writing transactions and a writing savepoint took transaction ids; reads took none")
	require.EqualValues(t, -1, d.WriteXacts, "commits are counted from the WAL, not by Sub")
	commits, err := walCommits(ctx, reader, before.WALFlushed, after.WALFlushed)
	require.NoError(t, err)
	require.EqualValues(t, 2, commits, "two commit records: the savepoint has none, the reads none")
	commits, err = walCommits(ctx, reader, after.WALFlushed, after.WALFlushed)
	require.NoError(t, err)
	require.Zero(t, commits, "no WAL written, no commit")
	require.GreaterOrEqual(t, d.XactCommit, int64(4), "both writes and the flushing reads committed")

	ok, note := statementsAvailable(ctx, reader)
	require.False(t, ok, "the test server does not preload pg_stat_statements")
	require.Contains(t, note, "shared_preload_libraries")
}
