package storm

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// DBStats are the counters of the inventory database that say what a storm wrote.
type DBStats struct {
	// From pg_stat_database: every transaction (read-only ones too), and rows written.
	XactCommit   int64 `json:"xact_commit"`
	XactRollback int64 `json:"xact_rollback"`
	TupInserted  int64 `json:"tup_inserted"`
	TupUpdated   int64 `json:"tup_updated"`
	TupDeleted   int64 `json:"tup_deleted"`
	// XIDs is the advance of the cluster's transaction id counter: Postgres assigns an id only
	// to a transaction that writes — and to each savepoint in it that writes, so with group
	// commit (inventory.GroupTx) it counts more than the commits.
	XIDs int64 `json:"transaction_ids"`
	// WriteXacts is the number of commit records in the WAL: the committed write transactions,
	// exactly (needs pg_walinspect; -1 without it).
	WriteXacts int64 `json:"write_transactions"`
	// WALFlushed is the WAL position up to which the reading counts commits.
	WALFlushed string `json:"-"`
}

// Sub returns s - before, counter by counter.
func (s DBStats) Sub(before DBStats) DBStats {
	return DBStats{
		XactCommit:   s.XactCommit - before.XactCommit,
		XactRollback: s.XactRollback - before.XactRollback,
		TupInserted:  s.TupInserted - before.TupInserted,
		TupUpdated:   s.TupUpdated - before.TupUpdated,
		TupDeleted:   s.TupDeleted - before.TupDeleted,
		XIDs:         s.XIDs - before.XIDs,
		WriteXacts:   -1,
	}
}

// RowsWritten is rows inserted, updated and deleted.
func (s DBStats) RowsWritten() int64 { return s.TupInserted + s.TupUpdated + s.TupDeleted }

// querier is what the readings need of a connection; *pgx.Conn implements it.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// readDBStats reads the counters in one statement, so the reading costs one transaction.
func readDBStats(ctx context.Context, q querier) (DBStats, error) {
	var s DBStats
	err := q.QueryRow(ctx, `
		SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted,
		       pg_snapshot_xmax(pg_current_snapshot())::text::bigint, pg_current_wal_flush_lsn()::text
		FROM pg_stat_database WHERE datname = current_database()`).
		Scan(&s.XactCommit, &s.XactRollback, &s.TupInserted, &s.TupUpdated, &s.TupDeleted, &s.XIDs, &s.WALFlushed)
	if err != nil {
		return DBStats{}, fmt.Errorf("storm: read pg_stat_database: %w", err)
	}
	return s, nil
}

// walInspectAvailable says whether pg_walinspect is installed in the database (scripts/bench
// creates it).
func walInspectAvailable(ctx context.Context, q querier) bool {
	var n int
	err := q.QueryRow(ctx, `SELECT count(*) FROM pg_extension WHERE extname = 'pg_walinspect'`).Scan(&n)
	return err == nil && n > 0
}

// walCommits counts the commit records written to the WAL between two positions: exactly the
// committed write transactions of the whole cluster (a savepoint writes no commit record of its
// own, a read-only transaction none at all).
func walCommits(ctx context.Context, q querier, from, to string) (int64, error) {
	// pg_walinspect refuses a start at or past the flushed end: nothing was written since.
	var advanced bool
	if err := q.QueryRow(ctx, `SELECT $1::pg_lsn < $2::pg_lsn`, from, to).Scan(&advanced); err != nil {
		return 0, fmt.Errorf("storm: compare WAL positions: %w", err)
	}
	if !advanced {
		return 0, nil
	}
	var n int64
	err := q.QueryRow(ctx, `
		SELECT COALESCE(sum(count), 0)::bigint FROM pg_get_wal_stats($1::pg_lsn, $2::pg_lsn, true)
		WHERE "resource_manager/record_type" = 'Transaction/COMMIT'`, from, to).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("storm: count commit records in the WAL: %w", err)
	}
	return n, nil
}

// Statement is one normalized statement's share of the storm, from pg_stat_statements.
type Statement struct {
	Query   string  `json:"query"`
	Calls   int64   `json:"calls"`
	Rows    int64   `json:"rows"`
	TotalMS float64 `json:"total_exec_ms"`
}

// statementsAvailable says whether pg_stat_statements can be read, and if not, why.
func statementsAvailable(ctx context.Context, q querier) (bool, string) {
	var preload string
	if err := q.QueryRow(ctx, `SELECT current_setting('shared_preload_libraries')`).Scan(&preload); err != nil {
		return false, fmt.Sprintf("cannot read shared_preload_libraries: %v", err)
	}
	if !strings.Contains(preload, "pg_stat_statements") {
		return false, "pg_stat_statements is not in shared_preload_libraries (it is not by default; scripts/bench loads it with PGSS=1)"
	}
	var n int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'`).Scan(&n); err != nil || n == 0 {
		return false, "pg_stat_statements is loaded but the extension is not created in the database (CREATE EXTENSION pg_stat_statements)"
	}
	return true, ""
}

// readStatements reads the inventory database's statements by query id.
func readStatements(ctx context.Context, q querier) (map[int64]Statement, error) {
	rows, err := q.Query(ctx, `
		SELECT queryid, query, calls, rows, total_exec_time
		FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
		WHERE d.datname = current_database() AND queryid IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("storm: read pg_stat_statements: %w", err)
	}
	defer rows.Close()
	out := map[int64]Statement{}
	for rows.Next() {
		var id int64
		var s Statement
		if err := rows.Scan(&id, &s.Query, &s.Calls, &s.Rows, &s.TotalMS); err != nil {
			return nil, fmt.Errorf("storm: read pg_stat_statements: %w", err)
		}
		out[id] = s
	}
	return out, rows.Err()
}

// statementDelta returns the statements that ran between two readings, the most expensive
// first.
func statementDelta(before, after map[int64]Statement) []Statement {
	var out []Statement
	for id, a := range after {
		b := before[id]
		d := Statement{Query: a.Query, Calls: a.Calls - b.Calls, Rows: a.Rows - b.Rows, TotalMS: a.TotalMS - b.TotalMS}
		if d.Calls > 0 {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(x, y Statement) int {
		if c := cmp.Compare(y.TotalMS, x.TotalMS); c != 0 {
			return c
		}
		return strings.Compare(x.Query, y.Query)
	})
	return out
}
