package admin_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestboot/attestboot/attestor/internal/admin"
	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/inventory"
)

// appendEvent writes an event straight into the store, as another service would.
func (e *env) appendEvent(t *testing.T, ev inventory.Event) inventory.Event {
	t.Helper()
	if ev.Service == "" {
		ev.Service = "tunnelmgr"
	}
	stored, err := e.store.AppendEvent(context.Background(), ev)
	require.NoError(t, err)
	return stored
}

func eventIDs(events []*inventoryv1.Event) []int64 {
	var ids []int64
	for _, ev := range events {
		ids = append(ids, ev.GetId())
	}
	return ids
}

func TestListEvents(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := ctxT(t)

	t0 := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	e1 := e.appendEvent(t, inventory.Event{At: at(0), NodeID: "n1", Kind: "attestation.begun"})
	e2 := e.appendEvent(t, inventory.Event{At: at(1), NodeID: "n1", Kind: "attestation.passed"})
	e3 := e.appendEvent(t, inventory.Event{At: at(2), NodeID: "ghost", Kind: "attestation.refused", Reason: "ek_mismatch",
		Detail: map[string]any{"nested": map[string]any{"a": 1}, "list": []any{1, "x"}, "flag": true, "none": nil}})
	e4 := e.appendEvent(t, inventory.Event{At: at(3), Kind: "gateway.started"})
	e5 := e.appendEvent(t, inventory.Event{At: at(4), NodeID: "n1", Kind: "tunnel.opened"})

	list := func(f *inventoryv1.EventFilter) []int64 {
		t.Helper()
		resp, err := e.client.ListEvents(ctx, &inventoryv1.ListEventsRequest{Filter: f})
		require.NoError(t, err)
		require.Empty(t, resp.GetNextPageToken())
		return eventIDs(resp.GetEvents())
	}
	require.Equal(t, []int64{e1.ID, e2.ID, e3.ID, e4.ID, e5.ID}, list(nil))
	require.Equal(t, []int64{e1.ID, e2.ID, e5.ID}, list(&inventoryv1.EventFilter{NodeId: "n1"}))
	require.Equal(t, []int64{e3.ID}, list(&inventoryv1.EventFilter{NodeId: "ghost"}), "events about unknown nodes are kept")
	require.Equal(t, []int64{e1.ID, e2.ID, e3.ID}, list(&inventoryv1.EventFilter{Kinds: []string{"attestation."}}))
	require.Equal(t, []int64{e3.ID, e5.ID}, list(&inventoryv1.EventFilter{Kinds: []string{"tunnel.opened", "attestation.refused"}}))
	require.Equal(t, []int64{e2.ID, e5.ID}, list(&inventoryv1.EventFilter{Kinds: []string{"tunnel.", "attestation.passed"}, NodeId: "n1"}))
	require.Empty(t, list(&inventoryv1.EventFilter{Kinds: []string{"attestation"}}), "only a trailing dot makes a prefix")
	require.Equal(t, []int64{e2.ID, e3.ID}, list(&inventoryv1.EventFilter{Since: timestamppb.New(at(1)), Until: timestamppb.New(at(3))}))

	// Every field comes through, the detail as a Struct.
	resp, err := e.client.ListEvents(ctx, &inventoryv1.ListEventsRequest{Filter: &inventoryv1.EventFilter{NodeId: "ghost"}})
	require.NoError(t, err)
	ev := resp.GetEvents()[0]
	require.Equal(t, "attestation.refused", ev.GetKind())
	require.Equal(t, "tunnelmgr", ev.GetService())
	require.Equal(t, "ek_mismatch", ev.GetReason())
	require.Equal(t, at(2), ev.GetTime().AsTime())
	require.Equal(t, map[string]any{"nested": map[string]any{"a": 1.0}, "list": []any{1.0, "x"}, "flag": true, "none": nil},
		ev.GetDetail().AsMap())

	// Paging: the token appears only while more events match, also when the last page is full.
	pages := func(f *inventoryv1.EventFilter, size int32) (ids []int64, sizes []int) {
		t.Helper()
		req := &inventoryv1.ListEventsRequest{Filter: f, PageSize: size}
		for {
			resp, err := e.client.ListEvents(ctx, req)
			require.NoError(t, err)
			ids = append(ids, eventIDs(resp.GetEvents())...)
			sizes = append(sizes, len(resp.GetEvents()))
			if resp.GetNextPageToken() == "" {
				return ids, sizes
			}
			req.PageToken = resp.GetNextPageToken()
		}
	}
	ids, sizes := pages(nil, 2)
	require.Equal(t, []int64{e1.ID, e2.ID, e3.ID, e4.ID, e5.ID}, ids)
	require.Equal(t, []int{2, 2, 1}, sizes)
	ids, sizes = pages(&inventoryv1.EventFilter{Kinds: []string{"attestation.", "gateway."}}, 2)
	require.Equal(t, []int64{e1.ID, e2.ID, e3.ID, e4.ID}, ids)
	require.Equal(t, []int{2, 2}, sizes, "no empty page after a full last one")
}

// recv receives n events from stream.
func recv(t *testing.T, stream grpc.ServerStreamingClient[inventoryv1.WatchEventsResponse], n int) []*inventoryv1.Event {
	t.Helper()
	var out []*inventoryv1.Event
	for range n {
		resp, err := stream.Recv()
		require.NoError(t, err)
		out = append(out, resp.GetEvent())
	}
	return out
}

// watch starts a watch and waits until it is in place, returning the cursor it starts after.
func watch(t *testing.T, ctx context.Context, e *env, req *inventoryv1.WatchEventsRequest) (grpc.ServerStreamingClient[inventoryv1.WatchEventsResponse], int64) {
	t.Helper()
	stream, err := e.client.WatchEvents(ctx, req)
	require.NoError(t, err)
	md, err := stream.Header()
	require.NoError(t, err)
	values := md.Get(admin.WatchCursorHeader)
	require.Len(t, values, 1)
	cursor, err := strconv.ParseInt(values[0], 10, 64)
	require.NoError(t, err)
	return stream, cursor
}

func TestWatchEvents(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()

	old1 := e.appendEvent(t, inventory.Event{Kind: "a.old"})
	old2 := e.appendEvent(t, inventory.Event{Kind: "b.old"})

	// after_id 0: only what is appended from now on.
	all, cursor := watch(t, ctx, e, &inventoryv1.WatchEventsRequest{})
	require.Equal(t, old2.ID, cursor)
	var want []int64
	for _, kind := range []string{"a.1", "b.1", "a.2", "b.2"} {
		want = append(want, e.appendEvent(t, inventory.Event{Kind: kind, NodeID: "n1"}).ID)
	}
	// An admin change through the API is followed just the same.
	createNodes(t, e, "n9")
	got := recv(t, all, 5)
	require.Equal(t, want, eventIDs(got[:4]))
	require.Equal(t, "node.created", got[4].GetKind())
	require.Equal(t, "n9", got[4].GetNodeId())
	require.Equal(t, "attestor", got[4].GetService())

	// A filter by kind, replaying history from a cursor, then following.
	onlyA, cursor := watch(t, ctx, e, &inventoryv1.WatchEventsRequest{AfterId: old1.ID, Filter: &inventoryv1.EventFilter{Kinds: []string{"a."}}})
	require.Equal(t, old1.ID, cursor)
	later := e.appendEvent(t, inventory.Event{Kind: "a.3"})
	e.appendEvent(t, inventory.Event{Kind: "b.3"})
	got = recv(t, onlyA, 3)
	require.Equal(t, []string{"a.1", "a.2", "a.3"}, []string{got[0].GetKind(), got[1].GetKind(), got[2].GetKind()})
	require.Equal(t, later.ID, got[2].GetId())

	// The unfiltered watch saw a.3 and b.3 too, and nothing else.
	got = recv(t, all, 2)
	require.Equal(t, []string{"a.3", "b.3"}, []string{got[0].GetKind(), got[1].GetKind()})

	// The stream ends on the server when the client goes away.
	cancel()
	_, err := all.Recv()
	requireCode(t, err, codes.Canceled)
	require.Eventually(t, func() bool {
		return countLines(e.logs.String(), `msg="grpc stream" grpc.method=/attestboot.inventory.v1.InventoryService/WatchEvents grpc.code=Canceled`) == 2
	}, 10*time.Second, 20*time.Millisecond, "both watch handlers returned")
}

// TestWatchEventsWaitsForLateCommits: an event whose transaction took its id first but
// committed after a later event must still be delivered, and before it.
func TestWatchEventsWaitsForLateCommits(t *testing.T) {
	t.Parallel()
	e := setupWith(t, admin.Config{PollInterval: 100 * time.Millisecond, WatchDelay: 3 * time.Second})
	ctx := ctxT(t)
	stream, _ := watch(t, ctx, e, &inventoryv1.WatchEventsRequest{})

	appended := make(chan inventory.Event, 1)
	release := make(chan struct{})
	txDone := make(chan error, 1)
	go func() {
		txDone <- e.store.InTx(ctx, func(q *inventory.Queries) error {
			ev, err := q.AppendEvent(ctx, inventory.Event{Kind: "slow", Service: "tunnelmgr"})
			if err != nil {
				return err
			}
			appended <- ev
			<-release
			return nil
		})
	}()
	slow := <-appended
	fast := e.appendEvent(t, inventory.Event{Kind: "fast"})
	require.Greater(t, fast.ID, slow.ID)
	// The watcher sees "fast" alone for a while (several polls), then the
	// slow transaction commits, well within the watch delay (generous: the machine may be busy).
	time.Sleep(300 * time.Millisecond)
	close(release)
	require.NoError(t, <-txDone)

	first := recv(t, stream, 1)[0]
	require.Equal(t, slow.ID, first.GetId(), "a later event overtook one whose transaction was still committing")
	require.Equal(t, fast.ID, recv(t, stream, 1)[0].GetId())
}

// TestWatchEventsEndAtShutdown: open watches do not hold up a graceful shutdown.
func TestWatchEventsEndAtShutdown(t *testing.T) {
	t.Parallel()
	e := setup(t)
	stream, _ := watch(t, ctxT(t), e, &inventoryv1.WatchEventsRequest{})
	require.NoError(t, e.stop())
	_, err := stream.Recv()
	requireCode(t, err, codes.Unavailable, "shutting down")
}

func countLines(s, substr string) int {
	n := 0
	for line := range strings.Lines(s) {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}
