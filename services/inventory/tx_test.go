package inventory_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

// countRows returns how many rows the inventory holds in the tables a node creation touches.
func countRows(t *testing.T, b bundle) (nodes, groups, members, events int) {
	t.Helper()
	require.NoError(t, b.pool.QueryRow(context.Background(), `
		SELECT (SELECT count(*) FROM nodes), (SELECT count(*) FROM groups),
		       (SELECT count(*) FROM group_members), (SELECT count(*) FROM events)`).
		Scan(&nodes, &groups, &members, &events))
	return
}

func TestInTxCommits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	err := b.store.InTx(ctx, func(q *inventory.Queries) error {
		if _, err := q.CreateGroup(ctx, inventory.Group{Name: "compute"}); err != nil {
			return err
		}
		if _, err := q.CreateNode(ctx, inventory.Node{ID: "n1", Enabled: true}); err != nil {
			return err
		}
		// Reads inside the transaction see its own writes.
		if _, err := q.GetNode(ctx, "n1"); err != nil {
			return err
		}
		if err := q.AddGroupMember(ctx, "compute", "n1"); err != nil {
			return err
		}
		_, err := q.AppendEvent(ctx, inventory.Event{NodeID: "n1", Kind: "node.created", Service: "admin"})
		return err
	})
	require.NoError(t, err)
	nodes, groups, members, events := countRows(t, b)
	require.Equal(t, [4]int{1, 1, 1, 1}, [4]int{nodes, groups, members, events})
}

func TestInTxFailureLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: "existing"})
	require.NoError(t, err)

	steps := func(q *inventory.Queries, last func() error) error {
		if _, err := q.CreateGroup(ctx, inventory.Group{Name: "compute"}); err != nil {
			return err
		}
		if _, err := q.CreateNode(ctx, inventory.Node{ID: "n1"}); err != nil {
			return err
		}
		if err := q.AddGroupMember(ctx, "compute", "n1"); err != nil {
			return err
		}
		if _, err := q.AppendEvent(ctx, inventory.Event{NodeID: "n1", Kind: "node.created", Service: "admin"}); err != nil {
			return err
		}
		return last()
	}
	errStop := errors.New("changed my mind")

	for name, tc := range map[string]struct {
		run  func() error
		want error
	}{
		"constraint violation in the last step": {func() error {
			return b.store.InTx(ctx, func(q *inventory.Queries) error {
				return steps(q, func() error {
					_, err := q.CreateNode(ctx, inventory.Node{ID: "existing"})
					return err
				})
			})
		}, inventory.ErrConflict},
		"error returned by the caller": {func() error {
			return b.store.InTx(ctx, func(q *inventory.Queries) error {
				return steps(q, func() error { return errStop })
			})
		}, errStop},
		"context cancelled before commit": {func() error {
			cctx, cancel := context.WithCancel(ctx)
			return b.store.InTx(cctx, func(q *inventory.Queries) error {
				return steps(q, func() error { cancel(); return nil })
			})
		}, context.Canceled},
	} {
		t.Run(name, func(t *testing.T) {
			require.ErrorIs(t, tc.run(), tc.want)
			nodes, groups, members, events := countRows(t, b)
			require.Equal(t, [4]int{1, 0, 0, 0}, [4]int{nodes, groups, members, events},
				"only the node created before the transaction may remain")
		})
	}

	t.Run("panic", func(t *testing.T) {
		require.PanicsWithValue(t, "boom", func() {
			_ = b.store.InTx(ctx, func(q *inventory.Queries) error {
				return steps(q, func() error { panic("boom") })
			})
		})
		nodes, groups, members, events := countRows(t, b)
		require.Equal(t, [4]int{1, 0, 0, 0}, [4]int{nodes, groups, members, events})
	})

	// The pool is healthy afterwards: no connection was left inside an open transaction.
	_, err = b.store.CreateGroup(ctx, inventory.Group{Name: "compute"})
	require.NoError(t, err)
	require.Equal(t, b.pool.Stat().TotalConns(), b.pool.Stat().IdleConns(), "every connection went back to the pool")
}
