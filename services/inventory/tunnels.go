package inventory

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TunnelState is where a tunnel is in its life.
type TunnelState string

// Tunnel states, as the schema's tunnels_state_valid check allows them.
const (
	TunnelOpen    TunnelState = "open"
	TunnelClosed  TunnelState = "closed"  // phone-home or an admin closed it
	TunnelExpired TunnelState = "expired" // expires_at passed while open
	TunnelFailed  TunnelState = "failed"  // the device refused the peer
)

// ErrPoolExhausted is returned by OpenTunnel when the gateway has no free address.
var ErrPoolExhausted = errors.New("address pool exhausted")

// Tunnel is one node's WireGuard peer on a gateway.
type Tunnel struct {
	ID                 string
	Gateway            string
	NodeID             string
	AttestationID      string
	WireGuardPublicKey []byte
	AddressV4          netip.Addr // invalid when the gateway has no IPv4 pool
	AddressV6          netip.Addr
	State              TunnelState
	OpenedAt           time.Time
	ExpiresAt          time.Time
	ClosedAt           time.Time // zero while open
	CloseReason        string
	PhonedHomeAt       time.Time // zero until the node phoned home through it
}

// Addresses returns the node's tunnel addresses as host prefixes (/32, /128).
func (t Tunnel) Addresses() []netip.Prefix {
	var out []netip.Prefix
	for _, a := range []netip.Addr{t.AddressV4, t.AddressV6} {
		if a.IsValid() {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

const tunnelColumns = `id::text, gateway, node_id, attestation_id::text, wireguard_public_key, address_v4, address_v6,
	state, opened_at, expires_at, closed_at, COALESCE(close_reason, ''), phoned_home_at`

func scanTunnel(row pgx.Row) (Tunnel, error) {
	var (
		t              Tunnel
		a4, a6         *netip.Prefix
		closed, phoned *time.Time
	)
	err := row.Scan(&t.ID, &t.Gateway, &t.NodeID, &t.AttestationID, &t.WireGuardPublicKey, &a4, &a6,
		&t.State, &t.OpenedAt, &t.ExpiresAt, &closed, &t.CloseReason, &phoned)
	if a4 != nil {
		t.AddressV4 = a4.Addr()
	}
	if a6 != nil {
		t.AddressV6 = a6.Addr()
	}
	t.OpenedAt, t.ExpiresAt = t.OpenedAt.UTC(), t.ExpiresAt.UTC()
	if closed != nil {
		t.ClosedAt = closed.UTC()
	}
	if phoned != nil {
		t.PhonedHomeAt = phoned.UTC()
	}
	return t, err
}

func collectTunnels(rows pgx.Rows) ([]Tunnel, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tunnel, error) { return scanTunnel(r) })
}

// OpenTunnel records an open tunnel for t's gateway, node, attestation and key, with the lowest
// free address of each of the gateway's pools (the same offset in both when it has two), expiring
// after ttl, and appends events about it (their Detail gains tunnel_id, gateway and addresses).
// Call it inside InTx. It is ErrPoolExhausted when no address is free, and ErrAddressTaken when
// an OpenTunnelAt committed the address it chose first (the caller may retry).
//
// Replicas sharing a pool serialise on the gateway row, locked in a statement of its own so
// that the allocation after it sees every tunnel committed before the lock was granted. The
// allocation, the insert and the events then go in one round trip, so the lock is held for two
// round trips (that batch and the commit): during a boot storm every open would wait for it, so
// tunnelmgr allocates in its own memory and calls OpenTunnelAt, and comes here only when its
// guesses fail. The partial unique indexes hold even if this code were wrong.
func (q *Queries) OpenTunnel(ctx context.Context, t Tunnel, ttl time.Duration, events ...Event) (Tunnel, error) {
	op := fmt.Sprintf("open tunnel on gateway %q for node %q", t.Gateway, t.NodeID)
	// NO KEY UPDATE: it must not conflict with the KEY SHARE lock every tunnel insert takes on
	// its gateway row (the foreign key), or an OpenTunnelAt waiting for this one's address while
	// this one waits for its row lock is a deadlock.
	g, err := scanGateway(q.db.QueryRow(ctx, `SELECT `+gatewayColumns+` FROM gateways WHERE name = $1 FOR NO KEY UPDATE`, t.Gateway))
	if err != nil {
		return Tunnel{}, dbError(op, err)
	}
	pool, own, column := g.primaryPool()
	// Candidates are 1 and the successor of every used offset; the lowest candidate not in use
	// is the lowest free offset. EXCEPT keeps this one pass over the open tunnels. No free
	// offset inserts nothing.
	offset := `(
		WITH used AS (
			SELECT (` + column + ` - $10::inet) AS off FROM tunnels
			WHERE gateway = $1 AND state = 'open' AND ` + column + ` IS NOT NULL
			UNION ALL
			SELECT ($11::inet - $10::inet) WHERE $11::inet IS NOT NULL
		)
		SELECT min(off) FROM (
			(SELECT 1::bigint AS off UNION SELECT off + 1 FROM used) EXCEPT SELECT off FROM used
		) candidates WHERE off BETWEEN 1 AND $12
	)`
	stored, err := q.insertTunnel(ctx, op, g, t, offset, "", ttl, events, prefixBase(pool), addrParam(own), g.MaxOffset())
	if errors.Is(err, pgx.ErrNoRows) {
		return Tunnel{}, fmt.Errorf("%s: %w (%s)", op, ErrPoolExhausted, pool)
	}
	if addressTaken(err) {
		// An OpenTunnelAt (which takes no lock) committed the lowest free address first.
		return Tunnel{}, fmt.Errorf("%s: %w", op, ErrAddressTaken)
	}
	return stored, err
}

// addressTaken reports whether err is the unique violation of an open tunnel's address.
func addressTaken(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" &&
		(pgErr.ConstraintName == "tunnels_open_address_v4" || pgErr.ConstraintName == "tunnels_open_address_v6")
}

// ErrAddressTaken is returned by OpenTunnelAt when another open tunnel holds the address. It
// wraps ErrConflict.
var ErrAddressTaken = fmt.Errorf("address taken: %w", ErrConflict)

// OpenTunnelAt is OpenTunnel at a given offset into g's pools (the one TunnelOffset gives), with
// no lock: the caller allocates. It is ErrAddressTaken when an open tunnel of g holds that
// address of the primary pool (IPv4 if g has one) already, and ErrPoolExhausted for an offset
// outside the pool. ErrAddressTaken inserts nothing and leaves the transaction usable (the
// insert does nothing on that conflict), so a caller inside InTx may go on to another offset
// without a savepoint. Any other conflict fails the statement, and so the transaction.
func (q *Queries) OpenTunnelAt(ctx context.Context, g Gateway, offset int64, t Tunnel, ttl time.Duration, events ...Event) (Tunnel, error) {
	op := fmt.Sprintf("open tunnel on gateway %q for node %q", g.Name, t.NodeID)
	if offset < 1 || offset > g.MaxOffset() {
		pool, _, _ := g.primaryPool()
		return Tunnel{}, fmt.Errorf("%s: offset %d: %w (%s)", op, offset, ErrPoolExhausted, pool)
	}
	if offset == g.OwnOffset() {
		return Tunnel{}, fmt.Errorf("%s: offset %d is the gateway's own address: %w", op, offset, ErrAddressTaken)
	}
	t.Gateway = g.Name
	_, _, column := g.primaryPool()
	// The index inferred is tunnels_open_address_v4 (or _v6): a conflict there inserts nothing.
	conflict := `ON CONFLICT (gateway, ` + column + `) WHERE state = 'open' DO NOTHING`
	stored, err := q.insertTunnel(ctx, op, g, t, "$10::bigint", conflict, ttl, events, offset)
	if errors.Is(err, pgx.ErrNoRows) {
		return Tunnel{}, fmt.Errorf("%s: offset %d: %w", op, offset, ErrAddressTaken)
	}
	return stored, err
}

// insertTunnel inserts t at the offset the SQL expression offset gives (its arguments are extra,
// numbered from $10), with the events, in one round trip; conflict is the insert's ON CONFLICT
// clause, if any. pgx.ErrNoRows: nothing was inserted (offset was NULL, or the conflict clause
// skipped the row), and neither were the events.
func (q *Queries) insertTunnel(ctx context.Context, op string, g Gateway, t Tunnel, offset, conflict string, ttl time.Duration, events []Event, extra ...any) (Tunnel, error) {
	id, err := uuid.NewRandom()
	if err != nil {
		return Tunnel{}, fmt.Errorf("%s: %w", op, err)
	}
	now := q.now()
	b := &pgx.Batch{}
	args := append([]any{t.Gateway, id.String(), t.NodeID, t.AttestationID, t.WireGuardPublicKey,
		prefixBase(g.IPv4Pool), prefixBase(g.IPv6Pool), now, now.Add(ttl)}, extra...)
	b.Queue(`
		INSERT INTO tunnels (id, gateway, node_id, attestation_id, wireguard_public_key, address_v4, address_v6,
			state, opened_at, expires_at)
		SELECT $2, $1, $3, $4, $5, $6::inet + free.off, $7::inet + free.off, 'open', $8, $9
		FROM (SELECT `+offset+` AS off) free WHERE free.off IS NOT NULL
		`+conflict+`
		RETURNING `+tunnelColumns, args...)
	for _, e := range events {
		at, detail := e.stamped(now)
		b.Queue(`
			INSERT INTO events (at, node_id, kind, service, reason, detail)
			SELECT $1, NULLIF($2, ''), $3, $4, $5, $6::jsonb || jsonb_build_object(
				'tunnel_id', id::text, 'gateway', gateway,
				'addresses', to_jsonb(array_remove(ARRAY[host(address_v4) || '/32', host(address_v6) || '/128'], NULL)))
			FROM tunnels WHERE id = $7`,
			at, e.NodeID, e.Kind, e.Service, e.Reason, detail, id.String())
	}
	br := q.db.SendBatch(ctx, b)
	defer br.Close()
	stored, err := scanTunnel(br.QueryRow())
	if errors.Is(err, pgx.ErrNoRows) {
		return Tunnel{}, err
	}
	if err != nil {
		return Tunnel{}, dbError(op, err)
	}
	if err := execEvents(br, events); err != nil {
		return Tunnel{}, dbError(op, err)
	}
	if err := br.Close(); err != nil {
		return Tunnel{}, dbError(op, err)
	}
	return stored, nil
}

// primaryPool is the pool allocation runs on (IPv4 when the gateway has one; IPv6 follows at
// the same offset), the gateway's own address in it and the tunnels' column of it.
func (g Gateway) primaryPool() (pool netip.Prefix, own netip.Addr, column string) {
	if g.IPv4Pool.IsValid() {
		return g.IPv4Pool, g.AddressV4, "address_v4"
	}
	return g.IPv6Pool, g.AddressV6, "address_v6"
}

// MaxOffset is the highest offset usable in every pool of g.
func (g Gateway) MaxOffset() int64 {
	pool, _, _ := g.primaryPool()
	m := poolMaxOffset(pool)
	if g.IPv4Pool.IsValid() && g.IPv6Pool.IsValid() {
		m = min(m, poolMaxOffset(g.IPv6Pool))
	}
	return m
}

// OwnOffset is the offset of the gateway's own address in its primary pool, or 0.
func (g Gateway) OwnOffset() int64 {
	pool, own, _ := g.primaryPool()
	if !own.IsValid() || !pool.Contains(own) {
		return 0
	}
	return addrOffset(pool, own)
}

// TunnelOffset is the offset of t's address in g's primary pool (what OpenTunnelAt takes), or
// 0 when t has no address there.
func (g Gateway) TunnelOffset(t Tunnel) int64 {
	pool, _, _ := g.primaryPool()
	a := t.AddressV4
	if !g.IPv4Pool.IsValid() {
		a = t.AddressV6
	}
	if !a.IsValid() || !pool.Contains(a) {
		return 0
	}
	return addrOffset(pool, a)
}

// addrOffset is a - the pool's first address, for a in pool (at most 62 bits of it: offsets
// stay within what Postgres' inet arithmetic handles).
func addrOffset(pool netip.Prefix, a netip.Addr) int64 {
	base := pool.Masked().Addr().As16()
	x := a.As16()
	var off uint64
	for i := 8; i < 16; i++ {
		off = off<<8 | uint64(x[i]-base[i])
	}
	return int64(off & (1<<62 - 1))
}

// prefixBase is a pool's first address as a host prefix (an inet Postgres adds offsets to), or
// nil for no pool.
func prefixBase(p netip.Prefix) any {
	if !p.IsValid() {
		return nil
	}
	return netip.PrefixFrom(p.Masked().Addr(), p.Addr().BitLen())
}

// poolMaxOffset is the highest usable host offset of a pool: the IPv4 broadcast address is
// left out, and offsets stay within what Postgres' inet arithmetic (bigint) handles.
func poolMaxOffset(p netip.Prefix) int64 {
	hostBits := p.Addr().BitLen() - p.Bits()
	if hostBits >= 62 {
		return 1<<62 - 1
	}
	n := int64(1)<<hostBits - 1
	if p.Addr().Is4() {
		n-- // broadcast
	}
	return n
}

// GetTunnel returns a tunnel by id.
func (q *Queries) GetTunnel(ctx context.Context, id string) (Tunnel, error) {
	t, err := scanTunnel(q.db.QueryRow(ctx, `SELECT `+tunnelColumns+` FROM tunnels WHERE id = $1`, id))
	if err != nil {
		return Tunnel{}, dbError(fmt.Sprintf("get tunnel %s", id), err)
	}
	return t, nil
}

// TunnelOfAttestation returns the tunnel an attestation opened.
func (q *Queries) TunnelOfAttestation(ctx context.Context, attestationID string) (Tunnel, error) {
	t, err := scanTunnel(q.db.QueryRow(ctx, `SELECT `+tunnelColumns+` FROM tunnels WHERE attestation_id = $1`, attestationID))
	if err != nil {
		return Tunnel{}, dbError(fmt.Sprintf("get tunnel of attestation %s", attestationID), err)
	}
	return t, nil
}

// OpenTunnelOfNode returns the node's newest open tunnel.
func (q *Queries) OpenTunnelOfNode(ctx context.Context, nodeID string) (Tunnel, error) {
	t, err := scanTunnel(q.db.QueryRow(ctx, `
		SELECT `+tunnelColumns+` FROM tunnels WHERE node_id = $1 AND state = 'open'
		ORDER BY opened_at DESC LIMIT 1`, nodeID))
	if err != nil {
		return Tunnel{}, dbError(fmt.Sprintf("get open tunnel of node %q", nodeID), err)
	}
	return t, nil
}

// OpenTunnelByAddress returns the open tunnel of gateway that owns a node tunnel address: the
// metadata service's way from a connection's source address to the attested node.
func (q *Queries) OpenTunnelByAddress(ctx context.Context, gateway string, addr netip.Addr) (Tunnel, error) {
	column := "address_v4"
	if addr.Is6() && !addr.Is4In6() {
		column = "address_v6"
	}
	addr = addr.Unmap()
	t, err := scanTunnel(q.db.QueryRow(ctx, `
		SELECT `+tunnelColumns+` FROM tunnels WHERE gateway = $1 AND state = 'open' AND `+column+` = $2`,
		gateway, addrParam(addr)))
	if err != nil {
		return Tunnel{}, dbError(fmt.Sprintf("get open tunnel of %s on gateway %q", addr, gateway), err)
	}
	return t, nil
}

// OpenTunnels returns every open tunnel of a gateway: what its device must hold.
func (q *Queries) OpenTunnels(ctx context.Context, gateway string) ([]Tunnel, error) {
	rows, err := q.db.Query(ctx, `SELECT `+tunnelColumns+` FROM tunnels WHERE gateway = $1 AND state = 'open'`, gateway)
	if err != nil {
		return nil, dbError(fmt.Sprintf("list open tunnels of gateway %q", gateway), err)
	}
	ts, err := collectTunnels(rows)
	if err != nil {
		return nil, dbError(fmt.Sprintf("list open tunnels of gateway %q", gateway), err)
	}
	return ts, nil
}

// CountOpenTunnels counts a gateway's open tunnels.
func (q *Queries) CountOpenTunnels(ctx context.Context, gateway string) (int64, error) {
	var n int64
	if err := q.db.QueryRow(ctx, `SELECT count(*) FROM tunnels WHERE gateway = $1 AND state = 'open'`, gateway).Scan(&n); err != nil {
		return 0, dbError(fmt.Sprintf("count open tunnels of gateway %q", gateway), err)
	}
	return n, nil
}

// CountAllOpenTunnels counts the open tunnels of every gateway.
func (q *Queries) CountAllOpenTunnels(ctx context.Context) (int64, error) {
	var n int64
	if err := q.db.QueryRow(ctx, `SELECT count(*) FROM tunnels WHERE state = 'open'`).Scan(&n); err != nil {
		return 0, dbError("count open tunnels", err)
	}
	return n, nil
}

// CloseTunnel ends an open tunnel with state (closed, expired or failed) and reason, which
// releases its address. closed is false, with the tunnel as it is, when it had already ended.
func (q *Queries) CloseTunnel(ctx context.Context, id string, state TunnelState, reason string) (t Tunnel, closed bool, err error) {
	op := fmt.Sprintf("close tunnel %s", id)
	t, err = scanTunnel(q.db.QueryRow(ctx, `
		UPDATE tunnels SET state = $2, closed_at = $3, close_reason = $4
		WHERE id = $1 AND state = 'open'
		RETURNING `+tunnelColumns, id, string(state), q.now(), reason))
	if err == nil {
		return t, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Tunnel{}, false, dbError(op, err)
	}
	t, err = q.GetTunnel(ctx, id)
	return t, false, err
}

// ExpireTunnels ends the gateway's open tunnels whose expiry has passed and returns them.
func (q *Queries) ExpireTunnels(ctx context.Context, gateway string) ([]Tunnel, error) {
	now := q.now()
	rows, err := q.db.Query(ctx, `
		UPDATE tunnels SET state = 'expired', closed_at = $2, close_reason = 'expired'
		WHERE gateway = $1 AND state = 'open' AND expires_at <= $2
		RETURNING `+tunnelColumns, gateway, now)
	if err != nil {
		return nil, dbError(fmt.Sprintf("expire tunnels of gateway %q", gateway), err)
	}
	ts, err := collectTunnels(rows)
	if err != nil {
		return nil, dbError(fmt.Sprintf("expire tunnels of gateway %q", gateway), err)
	}
	return ts, nil
}

// MarkPhonedHome records the first phone-home through an open tunnel and returns the tunnel.
func (q *Queries) MarkPhonedHome(ctx context.Context, id string) (Tunnel, error) {
	t, err := scanTunnel(q.db.QueryRow(ctx, `
		UPDATE tunnels SET phoned_home_at = COALESCE(phoned_home_at, $2)
		WHERE id = $1 RETURNING `+tunnelColumns, id, q.now()))
	if err != nil {
		return Tunnel{}, dbError(fmt.Sprintf("mark tunnel %s phoned home", id), err)
	}
	return t, nil
}

// TunnelFilter selects tunnels for ListTunnels, newest first.
type TunnelFilter struct {
	NodeID  string
	Gateway string
	States  []TunnelState
	After   string // page token of the previous page
	Limit   int    // 0 means DefaultPageSize, capped at MaxPageSize
}

// ListTunnels returns a page of tunnels, newest first, and the token of the next page ("" on
// the last).
func (q *Queries) ListTunnels(ctx context.Context, f TunnelFilter) ([]Tunnel, string, error) {
	where := []string{"TRUE"}
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.NodeID != "" {
		add("node_id = $%d", f.NodeID)
	}
	if f.Gateway != "" {
		add("gateway = $%d", f.Gateway)
	}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, s := range f.States {
			states[i] = string(s)
		}
		add("state = ANY($%d)", states)
	}
	if f.After != "" {
		at, id, err := decodeTunnelToken(f.After)
		if err != nil {
			return nil, "", err
		}
		args = append(args, at, id)
		where = append(where, fmt.Sprintf("(opened_at, id) < ($%d, $%d::uuid)", len(args)-1, len(args)))
	}
	limit := pageSize(f.Limit)
	args = append(args, limit+1)
	rows, err := q.db.Query(ctx, `SELECT `+tunnelColumns+` FROM tunnels WHERE `+strings.Join(where, " AND ")+
		fmt.Sprintf(` ORDER BY opened_at DESC, id DESC LIMIT $%d`, len(args)), args...)
	if err != nil {
		return nil, "", dbError("list tunnels", err)
	}
	ts, err := collectTunnels(rows)
	if err != nil {
		return nil, "", dbError("list tunnels", err)
	}
	next := ""
	if len(ts) > limit {
		ts = ts[:limit]
		last := ts[limit-1]
		next = base64.RawURLEncoding.EncodeToString([]byte(last.OpenedAt.Format(time.RFC3339Nano) + "|" + last.ID))
	}
	return ts, next, nil
}

func decodeTunnelToken(tok string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err == nil {
		if at, id, ok := strings.Cut(string(b), "|"); ok {
			if t, err := time.Parse(time.RFC3339Nano, at); err == nil {
				return t, id, nil
			}
		}
	}
	return time.Time{}, "", fmt.Errorf("list tunnels: malformed page token: %w", ErrInvalid)
}
