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
	// WriteXacts is the advance of the cluster's transaction id counter: Postgres assigns an
	// id only to a transaction that writes, so this counts write transactions exactly, and,
	// unlike pg_stat_database, without waiting for backends to flush their statistics.
	WriteXacts int64 `json:"write_transactions"`
}

// Sub returns s - before, counter by counter.
func (s DBStats) Sub(before DBStats) DBStats {
	return DBStats{
		XactCommit:   s.XactCommit - before.XactCommit,
		XactRollback: s.XactRollback - before.XactRollback,
		TupInserted:  s.TupInserted - before.TupInserted,
		TupUpdated:   s.TupUpdated - before.TupUpdated,
		TupDeleted:   s.TupDeleted - before.TupDeleted,
		WriteXacts:   s.WriteXacts - before.WriteXacts,
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
		       pg_snapshot_xmax(pg_current_snapshot())::text::bigint
		FROM pg_stat_database WHERE datname = current_database()`).
		Scan(&s.XactCommit, &s.XactRollback, &s.TupInserted, &s.TupUpdated, &s.TupDeleted, &s.WriteXacts)
	if err != nil {
		return DBStats{}, fmt.Errorf("storm: read pg_stat_database: %w", err)
	}
	return s, nil
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
// first, at most limit of them.
func statementDelta(before, after map[int64]Statement, limit int) []Statement {
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
	return out[:min(limit, len(out))]
}
