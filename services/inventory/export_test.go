package inventory

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Hooks for the external test package.
var (
	// MigrateUpFS and MigrateDownFS run the migration runner over a test file system.
	MigrateUpFS   = migrateUp
	MigrateDownFS = migrateDown
	// DBError maps a raw driver error the way store methods do, for tests that exercise the
	// schema with SQL the store does not (yet) offer.
	DBError = dbError
)

// GroupQueued is how many GroupTx callers wait for the next shared transaction.
func GroupQueued(s *Store) int { return s.group.Len() }

// QueryRowForTest runs raw SQL on q (the pool, a transaction or a savepoint).
func (q *Queries) QueryRowForTest(ctx context.Context, sql string, args ...any) pgx.Row {
	return q.db.QueryRow(ctx, sql, args...)
}
