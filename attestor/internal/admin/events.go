package admin

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/inventory"
)

// WatchCursorHeader is the response header WatchEvents sends once the watch is in place: the
// id after which it delivers events, in decimal. A client that waits for it knows that events
// appended from then on will reach it.
const WatchCursorHeader = "attestboot-watch-after-id"

const (
	// watchBatch is how many events a watcher reads per query while catching up.
	watchBatch = 500
	// minWatchGap spaces a watcher's queries: during a boot storm events held back become due
	// by the thousand per second, and one query per gap delivers them all.
	minWatchGap = 50 * time.Millisecond
)

func (s *Server) ListEvents(ctx context.Context, req *inventoryv1.ListEventsRequest) (*inventoryv1.ListEventsResponse, error) {
	q, err := eventQuery(req.GetFilter())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if q.Limit, err = pageSize(req.GetPageSize()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	filter := eventFilterDigest(q)
	after, err := decodePageToken(req.GetPageToken(), "ListEvents", filter)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if after != "" {
		if q.AfterID, err = strconv.ParseInt(after, 10, 64); err != nil || q.AfterID <= 0 {
			return nil, s.toStatus(ctx, invalidf("page_token: not a token returned by a previous ListEvents call"))
		}
	}
	events, err := s.store.QueryEvents(ctx, q)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &inventoryv1.ListEventsResponse{Events: make([]*inventoryv1.Event, len(events))}
	for i, e := range events {
		if resp.Events[i], err = eventProto(e); err != nil {
			return nil, s.toStatus(ctx, err)
		}
	}
	if len(events) == q.Limit {
		// A full page: the token is promised only if more events matched, and the store caps
		// its limit at the largest page size, so ask for one more separately.
		last := events[len(events)-1].ID
		more := q
		more.AfterID, more.Limit = last, 1
		next, err := s.store.QueryEvents(ctx, more)
		if err != nil {
			return nil, s.toStatus(ctx, err)
		}
		if len(next) > 0 {
			resp.NextPageToken = encodePageToken("ListEvents", strconv.FormatInt(last, 10), filter)
		}
	}
	return resp, nil
}

func eventFilterDigest(q inventory.EventQuery) string {
	return filterDigest(q.NodeID, q.Kinds, q.KindPrefixes, q.Since, q.Until)
}

// WatchEvents sends the matching events after the cursor, in id order, as they appear. It
// reads the log every PollInterval, and again when an event it holds back becomes due: events
// are not notified, which would wake every listening session of the inventory at every commit
// of a boot storm (migrations/0008). Events are held back for WatchDelay
// (see Config) so that a transaction that took a lower id but committed later is not skipped.
// The stream ends when the client goes away or Run returns. The WatchCursorHeader header
// tells the client when the watch is in place.
func (s *Server) WatchEvents(req *inventoryv1.WatchEventsRequest, stream grpc.ServerStreamingServer[inventoryv1.WatchEventsResponse]) error {
	ctx := stream.Context()
	q, err := eventQuery(req.GetFilter())
	if err != nil {
		return s.toStatus(ctx, err)
	}
	if req.GetAfterId() < 0 {
		return s.toStatus(ctx, invalidf("after_id %d: must not be negative", req.GetAfterId()))
	}
	q.AfterID, q.Limit = req.GetAfterId(), watchBatch
	if q.AfterID == 0 {
		// From now: whatever is in the log already is history, ListEvents' business.
		if q.AfterID, err = s.store.LastEventID(ctx); err != nil {
			return s.toStatus(ctx, err)
		}
	}

	if err := stream.SendHeader(metadata.Pairs(WatchCursorHeader, strconv.FormatInt(q.AfterID, 10))); err != nil {
		return s.toStatus(ctx, err)
	}

	w := watcher{s: s, stream: stream, q: q}
	poll := time.NewTicker(s.cfg.PollInterval)
	defer poll.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		started := time.Now()
		wait, err := w.catchUp(ctx)
		if err != nil {
			return s.toStatus(ctx, err)
		}
		var retryC <-chan time.Time
		if wait > 0 {
			retry.Reset(wait)
			retryC = retry.C
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.stopped:
			return status.Error(codes.Unavailable, "the server is shutting down; watch again after reconnecting")
		case <-poll.C:
		case <-retryC:
		}
		if gap := minWatchGap - time.Since(started); gap > 0 {
			select {
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			case <-time.After(gap):
			}
		}
	}
}

// watcher is the state of one WatchEvents stream.
type watcher struct {
	s      *Server
	stream grpc.ServerStreamingServer[inventoryv1.WatchEventsResponse]
	q      inventory.EventQuery // AfterID is the cursor: the last event sent
	// held is the first event not yet sent because it is too recent, and when this watcher
	// first saw it.
	held     int64
	heldSeen time.Time
}

// catchUp sends every matching event after the cursor that has settled. It returns how long
// to wait for the first one that has not (0 when none is held back).
func (w *watcher) catchUp(ctx context.Context) (time.Duration, error) {
	for {
		now := w.s.store.Clock().Now()
		events, err := w.s.store.QueryEvents(ctx, w.q)
		if err != nil {
			return 0, err
		}
		for _, e := range events {
			if wait := w.settle(now, e); wait > 0 {
				return wait, nil
			}
			msg, err := eventProto(e)
			if err != nil {
				return 0, err
			}
			if err := w.stream.Send(&inventoryv1.WatchEventsResponse{Event: msg}); err != nil {
				return 0, err
			}
			w.q.AfterID = e.ID
		}
		if len(events) < w.q.Limit {
			return 0, nil
		}
	}
}

// settle returns how much longer e must be held back: it may go once it is WatchDelay old by
// its time stamp, or once this watcher has seen it for WatchDelay, whichever comes first. The
// second bound keeps an event stamped by a clock running ahead from stalling the stream.
func (w *watcher) settle(now time.Time, e inventory.Event) time.Duration {
	delay := w.s.cfg.WatchDelay
	if w.held != e.ID {
		w.held, w.heldSeen = e.ID, now
	}
	ready := e.At.Add(delay)
	if bySight := w.heldSeen.Add(delay); bySight.Before(ready) {
		ready = bySight
	}
	if !now.Before(ready) {
		return 0
	}
	return ready.Sub(now)
}

func eventProto(e inventory.Event) (*inventoryv1.Event, error) {
	detail, err := structpb.NewStruct(e.Detail)
	if err != nil {
		return nil, fmt.Errorf("event %d: detail: %w", e.ID, err)
	}
	return &inventoryv1.Event{
		Id:      e.ID,
		Time:    timestamppb.New(e.At),
		NodeId:  e.NodeID,
		Kind:    e.Kind,
		Service: e.Service,
		Reason:  e.Reason,
		Detail:  detail,
	}, nil
}
