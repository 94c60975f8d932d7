package inventory

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Group commit: under a boot storm thousands of small, independent write transactions (an
// event, a tunnel close, a phone-home) arrive at once, and each commit is a WAL flush. GroupTx
// runs them in a transaction they share, so many callers' writes cost one commit while each
// caller still gets its own all-or-nothing outcome. A group first runs without savepoints (two
// round trips per caller fewer, and no subtransactions: past 64 of them every snapshot in the
// database gets slower); only when one of its callers fails is it rolled back and run again
// with a savepoint per caller. The events of AppendEventGrouped's callers (refusals and
// deliveries: four in ten of the grouped writes of a 10,000-node storm) go in together, one
// statement per group.

const (
	// maxGroup bounds the callers of one shared transaction: its locks are held, and its
	// callers wait, until the last of them has run.
	maxGroup = 256
	// groupTimeout bounds one shared transaction.
	groupTimeout = 30 * time.Second
)

// groupJob is one caller of GroupTx, or of AppendEventGrouped.
type groupJob struct {
	ctx context.Context
	fn  func(q *Queries) error
	// event is AppendEventGrouped's: a group inserts all of its events in one statement, and
	// runs fn (which appends the event alone) only when it runs with savepoints.
	event *Event
	done  chan error
}

// GroupTx runs fn atomically, like InTx, but in a transaction shared with other concurrent
// callers of GroupTx (group commit): if fn returns an error (or a statement fails, or it
// panics) its changes are rolled back and the others' are not. GroupTx returns when the shared
// transaction has committed — fn's changes are then durable like InTx's — or with fn's error,
// or with the commit's error, in which case nothing of fn's stayed.
//
// fn may run twice: when a caller of its group fails, the group is rolled back and run again
// with each caller in a savepoint. So fn must do nothing but database work and setting its
// results (which the second run sets again).
//
// The price is latency: fn waits for the callers queued before it. Use it for short writes
// whose callers are many and independent; fn must not wait for anything but the database, and
// must not take locks others hold for long (they would be held by the whole group).
// fn must not call GroupTx itself. If ctx ends before fn starts, fn is not run; once started,
// its statements run under the group's context whatever context fn passes them, so that one
// caller's cancellation cannot break the others' transaction.
func (s *Store) GroupTx(ctx context.Context, fn func(q *Queries) error) error {
	j := &groupJob{ctx: ctx, fn: fn, done: make(chan error, 1)}
	s.group.Add(j)
	return <-j.done
}

func (s *Store) runGroup(jobs []*groupJob) {
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	if !s.runGroupTx(ctx, jobs, false) {
		s.runGroupTx(ctx, jobs, true)
	}
}

// errCallerFailed ends a group run without savepoints: one of its callers failed.
var errCallerFailed = errors.New("a caller of the group failed")

// runGroupTx runs the group in one transaction, answers every caller and reports true. With
// savepoints, each caller's failure is its own. Without, the first caller that fails rolls
// everything back and no one is answered: it reports false, and the group must run again with
// savepoints.
func (s *Store) runGroupTx(ctx context.Context, jobs []*groupJob, savepoints bool) bool {
	errs := make([]error, len(jobs))
	ran := 0
	err := s.InTx(ctx, func(q *Queries) error {
		var events []Event
		for i, j := range jobs {
			errs[i] = j.ctx.Err()
			if errs[i] == nil && j.event != nil && !savepoints {
				events = append(events, *j.event)
			}
		}
		if err := q.appendEvents(ctx, events); err != nil {
			return errCallerFailed
		}
		for i, j := range jobs {
			if errs[i] != nil {
				continue
			}
			if j.event != nil && !savepoints {
				ran++ // inserted above
				continue
			}
			if errs[i] = j.ctx.Err(); errs[i] != nil {
				continue // ended while the callers before it ran
			}
			if savepoints {
				errs[i] = q.Savepoint(ctx, func(q *Queries) error { return runCaller(ctx, q, j) })
			} else if err := runCaller(ctx, q, j); err != nil {
				return errCallerFailed
			}
			if errs[i] == nil {
				ran++
			}
		}
		return nil
	})
	if errors.Is(err, errCallerFailed) {
		return false
	}
	for i, j := range jobs {
		switch {
		case errs[i] != nil:
			j.done <- errs[i]
		case err != nil:
			j.done <- fmt.Errorf("group transaction of %d: %w", ran, err)
		default:
			j.done <- nil
		}
	}
	return true
}

// runCaller runs j's fn in the group's transaction q, its statements under the group's
// context; a panic becomes its error.
func runCaller(ctx context.Context, q *Queries, j *groupJob) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return j.fn(&Queries{db: groupDB{db: q.db, ctx: ctx}, clock: q.clock})
}

// Savepoint runs fn in a savepoint of q's transaction (q must be InTx's or GroupTx's), released
// if fn succeeds and rolled back otherwise — also when fn panics: the panic becomes fn's error
// — so that a statement expected to fail sometimes (a unique violation) does not abort the
// transaction around it.
func (q *Queries) Savepoint(ctx context.Context, fn func(q *Queries) error) (err error) {
	tx, ok := q.db.(interface {
		Begin(context.Context) (pgx.Tx, error)
	})
	if _, pool := q.db.(*pgxpool.Pool); !ok || pool {
		return errors.New("savepoint: not in a transaction")
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return dbError("savepoint", err)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
			if rerr := sp.Rollback(ctx); rerr != nil {
				err = errors.Join(err, dbError("rollback to savepoint", rerr))
			}
		}
	}()
	if err := fn(&Queries{db: sp, clock: q.clock}); err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return errors.Join(err, dbError("rollback to savepoint", rerr))
		}
		return err
	}
	return dbError("release savepoint", sp.Commit(ctx))
}

// AppendEventGrouped records e through GroupTx: for the events of many independent callers
// (refusals, deliveries), which need their own record but not their own commit. The events of
// one group are inserted together, in one statement; if that fails, each caller's is tried
// alone, so that one bad event fails only its own caller.
func (s *Store) AppendEventGrouped(ctx context.Context, e Event) error {
	j := &groupJob{ctx: ctx, event: &e, done: make(chan error, 1)}
	j.fn = func(q *Queries) error {
		_, err := q.AppendEvent(ctx, e)
		return err
	}
	s.group.Add(j)
	return <-j.done
}

// groupDB runs a GroupTx caller's statements under the group's context instead of the one the
// caller passes: pgx answers a cancelled context by cutting the connection, which would end
// every caller's transaction, not only the cancelled one's.
type groupDB struct {
	db  dbtx
	ctx context.Context
}

func (g groupDB) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return g.db.Exec(g.ctx, sql, args...)
}

func (g groupDB) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	return g.db.Query(g.ctx, sql, args...)
}

func (g groupDB) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	return g.db.QueryRow(g.ctx, sql, args...)
}

func (g groupDB) SendBatch(_ context.Context, b *pgx.Batch) pgx.BatchResults {
	return g.db.SendBatch(g.ctx, b)
}

// Begin opens a savepoint (Queries.Savepoint inside a GroupTx caller).
func (g groupDB) Begin(context.Context) (pgx.Tx, error) {
	tx, ok := g.db.(interface {
		Begin(context.Context) (pgx.Tx, error)
	})
	if !ok {
		return nil, errors.New("savepoint: not in a transaction")
	}
	return tx.Begin(g.ctx)
}
