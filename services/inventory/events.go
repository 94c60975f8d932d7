package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Event is one entry of the append-only event log: a boot step or a refusal.
type Event struct {
	ID      int64     // assigned by the database, increasing
	At      time.Time // when it happened; the store's clock when zero
	NodeID  string    // the node concerned, possibly one that does not exist; empty for none
	Kind    string    // what happened, e.g. "attestation.refused"
	Service string    // which service recorded it, e.g. "attestor"
	Reason  string    // why, for refusals; never a secret
	Detail  map[string]any
}

// EventQuery selects events for QueryEvents. The zero value returns the oldest events.
type EventQuery struct {
	NodeID       string    // only this node's events
	Kinds        []string  // only these kinds...
	KindPrefixes []string  // ...or kinds starting with one of these ("tunnel."); neither: any kind
	Since        time.Time // only events at or after this time
	Until        time.Time // only events before this time
	AfterID      int64     // only events with a greater id: the cursor of a follower
	Limit        int       // at most this many; 0 means DefaultPageSize, capped at MaxPageSize
}

// stamped returns what e records: its time, or now when it has none, and its detail, or an
// empty object when it has none.
func (e Event) stamped(now time.Time) (time.Time, map[string]any) {
	at, detail := e.At, e.Detail
	if at.IsZero() {
		at = now
	}
	if detail == nil {
		detail = map[string]any{}
	}
	return at, detail
}

const eventColumns = `id, at, COALESCE(node_id, ''), kind, service, reason, detail`

func scanEvent(row pgx.Row) (Event, error) {
	var e Event
	err := row.Scan(&e.ID, &e.At, &e.NodeID, &e.Kind, &e.Service, &e.Reason, &e.Detail)
	e.At = e.At.UTC()
	return e, err
}

// AppendEvent records e and returns it with its id and time. Called inside InTx, the event is
// recorded only if the transaction commits, together with the change it describes. Nothing is
// notified: followers poll (migrations/0008 says why).
func (q *Queries) AppendEvent(ctx context.Context, e Event) (Event, error) {
	at, detail := e.stamped(q.now())
	row := q.db.QueryRow(ctx, `
		INSERT INTO events (at, node_id, kind, service, reason, detail)
		VALUES ($1, NULLIF($2, ''), $3, $4, $5, $6)
		RETURNING `+eventColumns,
		at, e.NodeID, e.Kind, e.Service, e.Reason, detail)
	stored, err := scanEvent(row)
	if err != nil {
		return Event{}, dbError(fmt.Sprintf("append event %q", e.Kind), err)
	}
	return stored, nil
}

// appendEvents records events in one statement (none: no statement), each timed at now unless
// it carries its own time.
func (q *Queries) appendEvents(ctx context.Context, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	now := q.now()
	n := len(events)
	ats := make([]time.Time, n)
	nodes, kinds, services, reasons, details := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, e := range events {
		var detail map[string]any
		ats[i], detail = e.stamped(now)
		b, err := json.Marshal(detail)
		if err != nil {
			return fmt.Errorf("append event %q: detail: %w", e.Kind, err)
		}
		nodes[i], kinds[i], services[i], reasons[i], details[i] = e.NodeID, e.Kind, e.Service, e.Reason, string(b)
	}
	_, err := q.db.Exec(ctx, `
		INSERT INTO events (at, node_id, kind, service, reason, detail)
		SELECT at, NULLIF(node_id, ''), kind, service, reason, detail::jsonb
		FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
			AS e(at, node_id, kind, service, reason, detail)`,
		ats, nodes, kinds, services, reasons, details)
	return dbError(fmt.Sprintf("append %d events", n), err)
}

const insertEvent = `INSERT INTO events (at, node_id, kind, service, reason, detail)
	VALUES ($1, NULLIF($2, ''), $3, $4, $5, $6)`

// queueEvents adds events to a batch, timed at now unless they carry their own time.
func queueEvents(b *pgx.Batch, now time.Time, events []Event) {
	for _, e := range events {
		at, detail := e.stamped(now)
		b.Queue(insertEvent, at, e.NodeID, e.Kind, e.Service, e.Reason, detail)
	}
}

// execEvents reads the results of events queued by queueEvents.
func execEvents(br pgx.BatchResults, events []Event) error {
	for _, e := range events {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("append event %q: %w", e.Kind, err)
		}
	}
	return nil
}

// QueryEvents returns the events matching f in ascending id order. A follower passes the id of
// the last event it saw as AfterID.
//
// Ids are assigned when a transaction inserts, not when it commits, so a follower may see id 11
// before a slower transaction commits id 10. A follower that must not miss any event reads only
// events older than a few seconds (Until) and lets such late commits land first.
func (q *Queries) QueryEvents(ctx context.Context, f EventQuery) ([]Event, error) {
	// The WHERE clause holds only the conditions asked for: the events table is the largest in
	// the inventory, and "($n IS NULL OR col = $n)" would keep the planner off its indexes once
	// it switches to a generic plan.
	where := []string{"id > $1"}
	args := []any{f.AfterID}
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.NodeID != "" {
		add("node_id = $%d", f.NodeID)
	}
	var kinds []string
	if len(f.Kinds) > 0 {
		args = append(args, f.Kinds)
		kinds = append(kinds, fmt.Sprintf("kind = ANY ($%d::text[])", len(args)))
	}
	if len(f.KindPrefixes) > 0 {
		args = append(args, likePrefixes(f.KindPrefixes))
		kinds = append(kinds, fmt.Sprintf("kind LIKE ANY ($%d::text[])", len(args)))
	}
	if len(kinds) > 0 {
		where = append(where, "("+strings.Join(kinds, " OR ")+")")
	}
	if !f.Since.IsZero() {
		add("at >= $%d", f.Since)
	}
	if !f.Until.IsZero() {
		add("at < $%d", f.Until)
	}
	args = append(args, pageSize(f.Limit))
	sql := `SELECT ` + eventColumns + `
		FROM events
		WHERE ` + strings.Join(where, " AND ") + `
		ORDER BY id
		LIMIT $` + strconv.Itoa(len(args))
	rows, err := q.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, dbError("query events", err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) { return scanEvent(r) })
	if err != nil {
		return nil, dbError("query events", err)
	}
	return events, nil
}

// likePrefixes turns prefixes into LIKE patterns matching what starts with them, escaping the
// pattern characters: kinds such as "group.trust_on_first_use" contain underscores.
func likePrefixes(prefixes []string) []string {
	escape := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	patterns := make([]string, len(prefixes))
	for i, p := range prefixes {
		patterns[i] = escape.Replace(p) + "%"
	}
	return patterns
}

// LastEventID returns the largest event id in the log, 0 when it is empty: where a follower
// that wants only new events starts.
func (q *Queries) LastEventID(ctx context.Context) (int64, error) {
	var id int64
	if err := q.db.QueryRow(ctx, `SELECT COALESCE(max(id), 0) FROM events`).Scan(&id); err != nil {
		return 0, dbError("last event id", err)
	}
	return id, nil
}
