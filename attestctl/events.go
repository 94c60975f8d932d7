package attestctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
)

// parseWhen reads a point in time: RFC 3339, or a duration meaning that long ago ("10m").
// "all" and "" mean no bound (nil).
func parseWhen(s string, now time.Time) (*timestamppb.Timestamp, error) {
	switch s {
	case "", "all":
		return nil, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return timestamppb.New(now.Add(-d)), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return timestamppb.New(t), nil
		}
	}
	return nil, fmt.Errorf("time %q: want RFC 3339 (2025-01-02T15:04:05Z), a date, or a duration ago (10m, 2h)", s)
}

func runEvents(a *app, args []string) error {
	fs := a.flags("events", "events [--node ID] [--kind K,...] [--since T] [--until T] [--follow]")
	node := fs.String("node", "", "only events about this node")
	kinds := fs.String("kind", "", "only these `kinds`, comma-separated; a kind ending in '.' matches a prefix (attestation.)")
	since := fs.String("since", "1h", "only events at or after `T`: RFC 3339, a date, a duration ago (10m), or all")
	until := fs.String("until", "", "only events before `T` (same forms)")
	follow := fs.Bool("follow", false, "after the matching events, print new ones as they happen until interrupted")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	now := time.Now()
	filter := &inventoryv1.EventFilter{NodeId: *node}
	for k := range strings.SplitSeq(*kinds, ",") {
		if k = strings.TrimSpace(k); k != "" {
			filter.Kinds = append(filter.Kinds, k)
		}
	}
	var err error
	if filter.Since, err = parseWhen(*since, now); err != nil {
		return usagef("events --since: %v", err)
	}
	if filter.Until, err = parseWhen(*until, now); err != nil {
		return usagef("events --until: %v", err)
	}
	if *follow && filter.Until != nil {
		return usagef("events: --follow and --until exclude each other")
	}

	var all []*inventoryv1.Event
	last, err := a.listEvents(filter, func(e *inventoryv1.Event) error {
		if *follow {
			return a.printEventLine(e)
		}
		all = append(all, e)
		return nil
	})
	if err != nil {
		return err
	}
	if !*follow {
		if a.cfg.JSON {
			return a.printProto(&inventoryv1.ListEventsResponse{Events: all})
		}
		t := a.table("TIME", "NODE", "KIND", "SERVICE", "REASON", "DETAIL")
		for _, e := range all {
			t.row(fmtTime(e.GetTime()), e.GetNodeId(), e.GetKind(), e.GetService(), e.GetReason(), detailString(e))
		}
		return t.flush()
	}
	// Watching starts after the last event listed; the time bound no longer applies to new ones.
	filter.Since = nil
	err = a.followEvents(a.ctx, filter, last, a.printEventLine)
	if errors.Is(err, context.Canceled) || a.ctx.Err() != nil {
		return nil
	}
	return err
}

// listEvents pages through the matching events, oldest first, and returns the last id seen.
func (a *app) listEvents(filter *inventoryv1.EventFilter, fn func(*inventoryv1.Event) error) (int64, error) {
	req := &inventoryv1.ListEventsRequest{Filter: filter, PageSize: 1000}
	var last int64
	for {
		var res *inventoryv1.ListEventsResponse
		err := a.inv("list events", func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
			res, err = c.ListEvents(ctx, req)
			return err
		})
		if err != nil {
			return last, err
		}
		for _, e := range res.GetEvents() {
			last = max(last, e.GetId())
			if err := fn(e); err != nil {
				return last, err
			}
		}
		if req.PageToken = res.GetNextPageToken(); req.PageToken == "" || len(res.GetEvents()) == 0 {
			return last, nil
		}
	}
}

// followEvents streams events after afterID to fn until the context ends, reconnecting (from
// the last event seen) when the attestor goes away, so a restart during a storm loses nothing.
func (a *app) followEvents(ctx context.Context, filter *inventoryv1.EventFilter, afterID int64, fn func(*inventoryv1.Event) error) error {
	c, err := a.inventory()
	if err != nil {
		return err
	}
	for {
		stream, err := c.WatchEvents(ctx, &inventoryv1.WatchEventsRequest{Filter: filter, AfterId: afterID})
		for err == nil {
			var res *inventoryv1.WatchEventsResponse
			if res, err = stream.Recv(); err == nil {
				afterID = max(afterID, res.GetEvent().GetId())
				err = fn(res.GetEvent())
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if status.Code(err) != codes.Unavailable {
			return a.rpcErr(svcAttestor, "watch events", err)
		}
		fmt.Fprintf(a.env.Stderr, "attestctl: event stream interrupted (%v); reconnecting\n", status.Convert(err).Message())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (a *app) printEventLine(e *inventoryv1.Event) error {
	if a.cfg.JSON {
		return a.printProtoLine(e)
	}
	node := e.GetNodeId()
	if node == "" {
		node = "-"
	}
	line := fmt.Sprintf("%-25s  %-16s  %-28s  %-9s  %s", fmtTime(e.GetTime()), node, e.GetKind(), e.GetService(), e.GetReason())
	if d := detailString(e); d != "" {
		line += "  " + d
	}
	_, err := fmt.Fprintln(a.env.Stdout, strings.TrimRight(line, " "))
	return err
}

// detailString prints an event's details as key=value pairs in key order.
func detailString(e *inventoryv1.Event) string {
	m := e.GetDetail().AsMap()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		v := m[k]
		s, ok := v.(string)
		if !ok {
			b, _ := json.Marshal(v)
			s = string(b)
		}
		parts = append(parts, k+"="+s)
	}
	return strings.Join(parts, " ")
}
