package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

// TestGroupTxSharesOneCommit: callers queued while a shared transaction runs all go into the
// next one — one transaction id for all of them — and each one's write is there afterwards.
func TestGroupTxSharesOneCommit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	const n = 100

	xids := make([]uint64, n)
	release := hold(t, b.store)
	var wg sync.WaitGroup
	errs := make([]error, n)
	var calls atomic.Int64
	for i := range n {
		wg.Go(func() {
			errs[i] = b.store.GroupTx(ctx, func(q *inventory.Queries) error {
				calls.Add(1)
				if _, err := q.CreateNode(ctx, inventory.Node{ID: fmt.Sprintf("g%03d", i), Enabled: true}); err != nil {
					return err
				}
				return q.QueryRowForTest(ctx, "SELECT pg_current_xact_id()::text::bigint").Scan(&xids[i])
			})
		})
	}
	for inventory.GroupQueued(b.store) < n {
		time.Sleep(time.Millisecond)
	}
	release()
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "caller %d", i)
	}
	distinct := map[uint64]bool{}
	for _, x := range xids {
		distinct[x] = true
	}
	require.Len(t, distinct, 1, "the %d callers queued behind a running group share the next transaction", n)
	require.EqualValues(t, n, calls.Load(), "no caller failed: each ran once (no second run with savepoints)")
	var count int
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM nodes WHERE id LIKE 'g%'").Scan(&count))
	require.Equal(t, n, count)
}

// hold starts a GroupTx caller that blocks its group until release is called, so that the
// callers after it queue for the next group; release waits for it to end.
func hold(t *testing.T, s *inventory.Store) (release func()) {
	t.Helper()
	running, unblock, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- s.GroupTx(t.Context(), func(q *inventory.Queries) error {
			close(running)
			<-unblock
			return nil
		})
	}()
	<-running
	return func() {
		close(unblock)
		require.NoError(t, <-done)
	}
}

// TestGroupTxIsolatesFailures: a caller that fails — by its own error, a statement the
// database refuses, or a panic — leaves nothing behind and gets its error; the callers sharing
// its transaction are not touched.
func TestGroupTxIsolatesFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: "taken", Enabled: true})
	require.NoError(t, err)

	errOwn := errors.New("changed my mind")
	var okCalls atomic.Int64
	cases := []func(q *inventory.Queries) error{
		func(q *inventory.Queries) error { // fine
			okCalls.Add(1)
			_, err := q.CreateNode(ctx, inventory.Node{ID: "ok1", Enabled: true})
			return err
		},
		func(q *inventory.Queries) error { // writes, then refuses
			if _, err := q.CreateNode(ctx, inventory.Node{ID: "undone1", Enabled: true}); err != nil {
				return err
			}
			return errOwn
		},
		func(q *inventory.Queries) error { // writes, then a statement fails
			if _, err := q.CreateNode(ctx, inventory.Node{ID: "undone2", Enabled: true}); err != nil {
				return err
			}
			_, err := q.CreateNode(ctx, inventory.Node{ID: "taken", Enabled: true})
			return err
		},
		func(q *inventory.Queries) error { // writes, then panics
			if _, err := q.CreateNode(ctx, inventory.Node{ID: "undone3", Enabled: true}); err != nil {
				return err
			}
			panic("bug")
		},
		func(q *inventory.Queries) error { // fine, after the failures
			_, err := q.CreateNode(ctx, inventory.Node{ID: "ok2", Enabled: true})
			return err
		},
	}
	// Queued behind a caller that waits for all of them, they share one transaction.
	release := hold(t, b.store)
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, fn := range cases {
		// In order: each waits until the one before it queued.
		for inventory.GroupQueued(b.store) < i {
			time.Sleep(time.Millisecond)
		}
		wg.Go(func() { errs[i] = b.store.GroupTx(ctx, fn) })
	}
	for inventory.GroupQueued(b.store) < len(cases) {
		time.Sleep(time.Millisecond)
	}
	release()
	wg.Wait()

	require.NoError(t, errs[0])
	require.ErrorIs(t, errs[1], errOwn)
	require.ErrorIs(t, errs[2], inventory.ErrConflict)
	require.ErrorContains(t, errs[3], "panic: bug")
	require.NoError(t, errs[4])
	rows, err := b.pool.Query(ctx, "SELECT id FROM nodes ORDER BY id")
	require.NoError(t, err)
	var ids []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"ok1", "ok2", "taken"}, ids)
	require.EqualValues(t, 2, okCalls.Load(), "the group ran without savepoints, failed, and ran again with them")
}

// TestGroupTxSkipsEndedCallers: a caller whose context ended while it waited is not run.
func TestGroupTxSkipsEndedCallers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	release := hold(t, b.store)
	gone, cancel := context.WithCancel(ctx)
	ran := false
	done := make(chan error, 1)
	go func() {
		done <- b.store.GroupTx(gone, func(q *inventory.Queries) error { ran = true; return nil })
	}()
	for inventory.GroupQueued(b.store) < 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	release()
	require.ErrorIs(t, <-done, context.Canceled)
	require.False(t, ran)
}

// TestGroupTxOutlivesACancelledCaller: a caller whose context ends while its function runs
// still runs to its end, and the callers sharing its transaction commit (pgx would cut the
// connection for a statement under a cancelled context, ending everybody's transaction).
func TestGroupTxOutlivesACancelledCaller(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := hold(t, b.store)
	gone, cancel := context.WithCancel(t.Context())
	errs := make([]error, 2)
	var wg sync.WaitGroup
	wg.Go(func() {
		errs[0] = b.store.GroupTx(gone, func(q *inventory.Queries) error {
			cancel() // the caller went away after its function started
			_, err := q.CreateNode(gone, inventory.Node{ID: "cancelled", Enabled: true})
			return err
		})
	})
	for inventory.GroupQueued(b.store) < 1 {
		time.Sleep(time.Millisecond)
	}
	wg.Go(func() {
		errs[1] = b.store.GroupTx(t.Context(), func(q *inventory.Queries) error {
			_, err := q.CreateNode(t.Context(), inventory.Node{ID: "other", Enabled: true})
			return err
		})
	})
	for inventory.GroupQueued(b.store) < 2 {
		time.Sleep(time.Millisecond)
	}
	release()
	wg.Wait()
	require.NoError(t, errs[0], "started, it ran to its end")
	require.NoError(t, errs[1])
	for _, id := range []string{"cancelled", "other"} {
		_, err := b.store.GetNode(t.Context(), id)
		require.NoError(t, err, id)
	}
}

// TestAppendEventGroupedInsertsAGroupsEventsTogether: the events of callers queued for one
// group go in with one statement (one command id) of one transaction, beside the group's other
// callers; an event the database refuses fails its own caller only, and the rest still go in.
func TestAppendEventGroupedInsertsAGroupsEventsTogether(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	group := func(kinds []string) []error {
		t.Helper()
		release := hold(t, b.store)
		errs := make([]error, len(kinds)+1)
		var wg sync.WaitGroup
		for i, kind := range kinds {
			wg.Go(func() {
				errs[i] = b.store.AppendEventGrouped(ctx, inventory.Event{
					NodeID: fmt.Sprintf("n%d", i), Kind: kind, Service: "test", Reason: "r", Detail: map[string]any{"i": i},
				})
			})
		}
		wg.Go(func() { // a caller of GroupTx in the same group
			errs[len(kinds)] = b.store.GroupTx(ctx, func(q *inventory.Queries) error {
				_, err := q.CreateNode(ctx, inventory.Node{ID: "beside-" + kinds[0], Enabled: true})
				return err
			})
		})
		for inventory.GroupQueued(b.store) < len(kinds)+1 {
			time.Sleep(time.Millisecond)
		}
		release()
		wg.Wait()
		return errs
	}
	commands := func(kind string) (events, xids, cmds int) {
		t.Helper()
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT xmin::text), count(DISTINCT cmin::text)
			FROM events WHERE kind = $1`, kind).Scan(&events, &xids, &cmds))
		return events, xids, cmds
	}

	const n = 50
	kinds := make([]string, n)
	for i := range kinds {
		kinds[i] = "test.grouped"
	}
	for i, err := range group(kinds) {
		require.NoError(t, err, "caller %d", i)
	}
	events, xids, cmds := commands("test.grouped")
	require.Equal(t, n, events)
	require.Equal(t, 1, xids, "one transaction")
	require.Equal(t, 1, cmds, "one statement")
	got, err := b.store.QueryEvents(ctx, inventory.EventQuery{NodeID: "n7"})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "test", got[0].Service)
	require.Equal(t, "r", got[0].Reason)
	require.EqualValues(t, 7, got[0].Detail["i"])
	require.Equal(t, b.clock.Now(), got[0].At)

	kinds = []string{"test.isolated", "test.isolated", "", "test.isolated"} // "" breaks a CHECK
	errs := group(kinds)
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.ErrorIs(t, errs[2], inventory.ErrInvalid)
	require.NoError(t, errs[3])
	require.NoError(t, errs[4], "the GroupTx caller beside them")
	events, _, _ = commands("test.isolated") // in savepoints: a transaction id each
	require.Equal(t, 3, events, "all but the refused one")
	_, err = b.store.GetNode(ctx, "beside-test.isolated")
	require.NoError(t, err)
}
