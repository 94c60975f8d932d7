package inventory_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

func TestEventsAppendAndQuery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	appendAt := func(at time.Duration, node, kind string) inventory.Event {
		t.Helper()
		b.clock.Set(t0.Add(at))
		e, err := b.store.AppendEvent(ctx, inventory.Event{NodeID: node, Kind: kind, Service: "attestor",
			Reason: "because", Detail: map[string]any{"step": kind}})
		require.NoError(t, err)
		return e
	}
	e1 := appendAt(0, "n1", "attestation.begun")
	e2 := appendAt(time.Second, "n1", "attestation.passed")
	e3 := appendAt(2*time.Second, "ghost", "attestation.refused") // no such node: still recorded
	e4 := appendAt(3*time.Second, "", "gateway.started")
	e5 := appendAt(4*time.Second, "n1", "tunnel.opened")

	require.Greater(t, e1.ID, int64(0))
	require.Equal(t, inventory.Event{ID: e1.ID, At: t0, NodeID: "n1", Kind: "attestation.begun", Service: "attestor",
		Reason: "because", Detail: map[string]any{"step": "attestation.begun"}}, e1)
	require.Empty(t, e4.NodeID)

	ids := func(q inventory.EventQuery) []int64 {
		t.Helper()
		events, err := b.store.QueryEvents(ctx, q)
		require.NoError(t, err)
		out := make([]int64, len(events))
		for i, e := range events {
			out[i] = e.ID
		}
		return out
	}
	require.Equal(t, []int64{e1.ID, e2.ID, e3.ID, e4.ID, e5.ID}, ids(inventory.EventQuery{}))
	require.Equal(t, []int64{e1.ID, e2.ID, e5.ID}, ids(inventory.EventQuery{NodeID: "n1"}))
	require.Equal(t, []int64{e3.ID}, ids(inventory.EventQuery{NodeID: "ghost"}))
	require.Equal(t, []int64{e2.ID, e3.ID}, ids(inventory.EventQuery{Kinds: []string{"attestation.passed", "attestation.refused"}}))
	require.Equal(t, []int64{e2.ID, e3.ID}, ids(inventory.EventQuery{Since: t0.Add(time.Second), Until: t0.Add(3 * time.Second)}))
	require.Equal(t, []int64{e4.ID, e5.ID}, ids(inventory.EventQuery{AfterID: e3.ID}))
	require.Equal(t, []int64{e1.ID, e2.ID}, ids(inventory.EventQuery{Limit: 2}))
	require.Equal(t, []int64{e5.ID}, ids(inventory.EventQuery{NodeID: "n1", Kinds: []string{"tunnel.opened"}, AfterID: e1.ID, Since: t0, Until: t0.Add(time.Hour)}))
	require.Empty(t, ids(inventory.EventQuery{AfterID: e5.ID}))

	// An explicit time is kept.
	at := t0.Add(-time.Hour)
	e, err := b.store.AppendEvent(ctx, inventory.Event{At: at, Kind: "import", Service: "admin"})
	require.NoError(t, err)
	require.True(t, e.At.Equal(at))
	require.Equal(t, map[string]any{}, e.Detail)

	_, err = b.store.AppendEvent(ctx, inventory.Event{Kind: "", Service: "attestor"})
	require.ErrorIs(t, err, inventory.ErrInvalid)
	require.ErrorContains(t, err, "events_kind_nonempty")
}

func TestEventsAreAppendOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	e, err := b.store.AppendEvent(ctx, inventory.Event{NodeID: "n1", Kind: "attestation.refused", Service: "attestor"})
	require.NoError(t, err)

	for _, sql := range []string{
		`UPDATE events SET reason = 'nothing to see' WHERE id = $1`,
		`DELETE FROM events WHERE id = $1`,
	} {
		err := rawErr(t, b, sql, e.ID)
		require.ErrorIs(t, err, inventory.ErrConflict, sql)
		require.ErrorContains(t, err, "events_append_only")
	}
	events, err := b.store.QueryEvents(ctx, inventory.EventQuery{})
	require.NoError(t, err)
	require.Equal(t, []inventory.Event{e}, events)
}

func TestEventAppendedInFailedTxIsNotRecorded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	err := b.store.InTx(ctx, func(q *inventory.Queries) error {
		if _, err := q.AppendEvent(ctx, inventory.Event{NodeID: "n1", Kind: "node.created", Service: "admin"}); err != nil {
			return err
		}
		_, err := q.CreateNode(ctx, inventory.Node{ID: "not valid!"})
		return err
	})
	require.ErrorIs(t, err, inventory.ErrInvalid)
	events, err := b.store.QueryEvents(ctx, inventory.EventQuery{})
	require.NoError(t, err)
	require.Empty(t, events, "the event of a rolled-back change must go with it")
}

func TestEventKindPrefixesAndLastID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	last, err := b.store.LastEventID(ctx)
	require.NoError(t, err)
	require.Zero(t, last, "empty log")

	ids := map[string]int64{}
	for _, kind := range []string{"tunnel.opened", "group.trust_on_first_use", "groupXtrust", "group.trustXonXfirst", "attestation.passed", "tunnel%odd"} {
		e, err := b.store.AppendEvent(ctx, inventory.Event{Kind: kind, Service: "attestor"})
		require.NoError(t, err)
		ids[kind] = e.ID
	}
	kinds := func(q inventory.EventQuery) []string {
		t.Helper()
		events, err := b.store.QueryEvents(ctx, q)
		require.NoError(t, err)
		var out []string
		for _, e := range events {
			out = append(out, e.Kind)
		}
		return out
	}
	require.Equal(t, []string{"tunnel.opened"}, kinds(inventory.EventQuery{KindPrefixes: []string{"tunnel."}}))
	// LIKE's wildcards in a prefix match only themselves.
	require.Equal(t, []string{"group.trust_on_first_use"}, kinds(inventory.EventQuery{KindPrefixes: []string{"group.trust_"}}))
	require.Equal(t, []string{"tunnel%odd"}, kinds(inventory.EventQuery{KindPrefixes: []string{"tunnel%"}}))
	// Exact kinds and prefixes add up.
	require.Equal(t, []string{"tunnel.opened", "attestation.passed"},
		kinds(inventory.EventQuery{Kinds: []string{"attestation.passed"}, KindPrefixes: []string{"tunnel."}}))

	last, err = b.store.LastEventID(ctx)
	require.NoError(t, err)
	require.Equal(t, ids["tunnel%odd"], last)
}
