package inventory

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"
)

// Gateway is a WireGuard gateway interface owned by one tunnelmgr instance, with the pools its
// nodes' tunnel addresses come from.
type Gateway struct {
	Name             string
	PublicKey        []byte       // WireGuard public key, 32 bytes
	Endpoint         string       // host:port nodes dial
	IPv4Pool         netip.Prefix // invalid when the gateway has no IPv4 pool
	IPv6Pool         netip.Prefix
	AddressV4        netip.Addr // the gateway's own tunnel addresses; invalid when unset
	AddressV6        netip.Addr
	MetadataURL      string
	KeepaliveSeconds int
	CreatedAt        time.Time
	UpdatedAt        time.Time
	LastSeenAt       time.Time
}

const gatewayColumns = `name, public_key, endpoint, ipv4_pool, ipv6_pool, address_v4, address_v6, metadata_url,
	keepalive_seconds, created_at, updated_at, last_seen_at`

func scanGateway(row pgx.Row) (Gateway, error) {
	var (
		g      Gateway
		p4, p6 *netip.Prefix
		a4, a6 *netip.Prefix
		seen   *time.Time
	)
	err := row.Scan(&g.Name, &g.PublicKey, &g.Endpoint, &p4, &p6, &a4, &a6, &g.MetadataURL,
		&g.KeepaliveSeconds, &g.CreatedAt, &g.UpdatedAt, &seen)
	if p4 != nil {
		g.IPv4Pool = *p4
	}
	if p6 != nil {
		g.IPv6Pool = *p6
	}
	if a4 != nil {
		g.AddressV4 = a4.Addr()
	}
	if a6 != nil {
		g.AddressV6 = a6.Addr()
	}
	g.CreatedAt, g.UpdatedAt = g.CreatedAt.UTC(), g.UpdatedAt.UTC()
	if seen != nil {
		g.LastSeenAt = seen.UTC()
	}
	return g, err
}

func prefixParam(p netip.Prefix) any {
	if !p.IsValid() {
		return nil
	}
	return p.Masked()
}

func addrParam(a netip.Addr) any {
	if !a.IsValid() {
		return nil
	}
	return netip.PrefixFrom(a, a.BitLen())
}

// UpsertGateway registers a gateway or updates its key, endpoint, pools and addresses (a
// tunnelmgr instance does this at every start) and marks it seen now.
func (q *Queries) UpsertGateway(ctx context.Context, g Gateway) (Gateway, error) {
	now := q.now()
	row := q.db.QueryRow(ctx, `
		INSERT INTO gateways (name, public_key, endpoint, ipv4_pool, ipv6_pool, address_v4, address_v6,
			metadata_url, keepalive_seconds, created_at, updated_at, last_seen_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10)
		ON CONFLICT (name) DO UPDATE SET public_key = EXCLUDED.public_key, endpoint = EXCLUDED.endpoint,
			ipv4_pool = EXCLUDED.ipv4_pool, ipv6_pool = EXCLUDED.ipv6_pool,
			address_v4 = EXCLUDED.address_v4, address_v6 = EXCLUDED.address_v6,
			metadata_url = EXCLUDED.metadata_url, keepalive_seconds = EXCLUDED.keepalive_seconds,
			updated_at = EXCLUDED.updated_at, last_seen_at = EXCLUDED.last_seen_at
		RETURNING `+gatewayColumns,
		g.Name, g.PublicKey, g.Endpoint, prefixParam(g.IPv4Pool), prefixParam(g.IPv6Pool),
		addrParam(g.AddressV4), addrParam(g.AddressV6), g.MetadataURL, g.KeepaliveSeconds, now)
	stored, err := scanGateway(row)
	if err != nil {
		return Gateway{}, dbError(fmt.Sprintf("register gateway %q", g.Name), err)
	}
	return stored, nil
}

// GetGateway returns a gateway by name.
func (q *Queries) GetGateway(ctx context.Context, name string) (Gateway, error) {
	g, err := scanGateway(q.db.QueryRow(ctx, `SELECT `+gatewayColumns+` FROM gateways WHERE name = $1`, name))
	if err != nil {
		return Gateway{}, dbError(fmt.Sprintf("get gateway %q", name), err)
	}
	return g, nil
}
