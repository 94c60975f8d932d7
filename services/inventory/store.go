package inventory

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attestboot/attestboot/services/batch"
	"github.com/attestboot/attestboot/services/clock"
)

// Sentinel errors of the store. Errors returned by store methods wrap one of them (compare with
// errors.Is) together with the underlying *pgconn.PgError when there is one (errors.As), and
// their message names the violated constraint.
var (
	// ErrNotFound: the row does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the change collides with existing state (unique or exclusion constraint,
	// foreign key, or a trigger guarding an immutable or single-use row).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the value is not acceptable to the schema (check or not-null constraint,
	// malformed value, out of range).
	ErrInvalid = errors.New("invalid")
)

// Options configures a Store. The zero value is valid.
type Options struct {
	// Clock stamps created_at, updated_at and event times. Default: the system clock.
	Clock clock.Clock
}

func (o *Options) setDefaults() {
	if o.Clock == nil {
		o.Clock = clock.System()
	}
}

// Store is the inventory on a connection pool. Its embedded Queries run directly on the pool
// (each statement is its own transaction); InTx runs several of them atomically.
type Store struct {
	*Queries
	pool  *pgxpool.Pool
	clock clock.Clock
	group *batch.Queue[*groupJob] // GroupTx's callers
}

// New returns a store over pool. The schema must already be migrated (see Migrate).
func New(pool *pgxpool.Pool, opts Options) *Store {
	opts.setDefaults()
	s := &Store{
		Queries: &Queries{db: pool, clock: opts.Clock},
		pool:    pool,
		clock:   opts.Clock,
	}
	s.group = &batch.Queue[*groupJob]{Run: s.runGroup, Max: maxGroup}
	return s
}

// Pool returns the pool the store runs on.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Clock returns the store's clock.
func (s *Store) Clock() clock.Clock { return s.clock }

// InTx runs fn in one transaction and commits if fn returns nil. The transaction is always
// rolled back otherwise, including when fn panics or ctx ends, so a failed multi-step change
// leaves nothing behind. fn must not keep q after returning.
func (s *Store) InTx(ctx context.Context, fn func(q *Queries) error) error {
	return s.InTxOptions(ctx, pgx.TxOptions{}, fn)
}

// InTxOptions is InTx with explicit transaction options (isolation level, read-only).
func (s *Store) InTxOptions(ctx context.Context, opts pgx.TxOptions, fn func(q *Queries) error) error {
	tx, err := s.pool.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	// After a successful Commit this is a no-op (pgx.ErrTxClosed). WithoutCancel: a cancelled
	// ctx must not stop the rollback from reaching the server.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := fn(&Queries{db: tx, clock: s.clock}); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return dbError("commit", err)
	}
	return nil
}

// dbtx is what Queries runs on; *pgxpool.Pool and pgx.Tx implement it.
type dbtx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	// SendBatch sends queued statements in one round trip. Outside a transaction they run in
	// one implicit transaction: all of them take effect, or none.
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Queries holds every store method. The same methods work on the pool (Store embeds a
// Queries) and inside InTx.
type Queries struct {
	db    dbtx
	clock clock.Clock
}

// now is the store's notion of the current time, truncated to what timestamptz keeps so that
// values written and values read back compare equal.
func (q *Queries) now() time.Time { return q.clock.Now().Truncate(time.Microsecond) }

// dbError converts a database error into one wrapping a sentinel error. op says what was being
// done ("create node n1").
func dbError(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("%s: %w", op, err)
	}
	var kind error
	switch {
	// unique, exclusion, foreign key and restrict violations; 23000 is what the schema's
	// triggers raise for immutable and single-use rows.
	case slices.Contains([]string{"23505", "23P01", "23503", "23001", "23000"}, pgErr.Code):
		kind = ErrConflict
	// check and not-null violations, and class 22 (data exception: malformed text
	// representation, value out of range, string too long, ...).
	case pgErr.Code == "23514" || pgErr.Code == "23502" || strings.HasPrefix(pgErr.Code, "22"):
		kind = ErrInvalid
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
	if pgErr.ConstraintName != "" {
		return fmt.Errorf("%s: %w (constraint %s): %w", op, kind, pgErr.ConstraintName, err)
	}
	return fmt.Errorf("%s: %w: %w", op, kind, err)
}

// isForeignKeyViolation reports whether err is a foreign key violation, which insert methods
// turn into ErrNotFound: the row they point at does not exist.
func isForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503"
}

// Open connects a pool to the database at url (a postgres:// URL or key=value DSN) and checks
// that it answers. Pool settings given in url (pool_max_conns, ...) win over the defaults
// chosen here for a service facing boot storms.
func Open(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := PoolConfig(url)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open database %s: %w", cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// PoolConfig parses url into a pool configuration with attestboot's defaults applied where url
// does not set them.
func PoolConfig(url string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error may quote the URL, password included.
		return nil, errors.New("parse database URL: malformed (details withheld: it may contain a password)")
	}
	set := func(key string) bool {
		_, ok := cfg.ConnConfig.RuntimeParams[key]
		return ok
	}
	if !containsParam(url, "pool_max_conns") {
		// pgx's default (max(4, NumCPU)) is low for a service answering thousands of booting
		// nodes, most of whose time is spent waiting on the database.
		cfg.MaxConns = int32(max(8, 4*runtime.NumCPU()))
	}
	if !containsParam(url, "pool_max_conn_idle_time") {
		cfg.MaxConnIdleTime = 5 * time.Minute
	}
	if !containsParam(url, "pool_health_check_period") {
		cfg.HealthCheckPeriod = 30 * time.Second
	}
	if !containsParam(url, "connect_timeout") {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	if !set("application_name") {
		cfg.ConnConfig.RuntimeParams["application_name"] = "attestboot"
	}
	return cfg, nil
}

// containsParam reports whether the connection string sets key, in URL (?key=) or DSN
// (key=value) form.
func containsParam(url, key string) bool { return strings.Contains(url, key+"=") }
