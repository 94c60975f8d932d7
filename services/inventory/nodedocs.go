package inventory

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"
)

// NodeDocsSource is everything a node's cloud-init documents are made of, as the metadata
// service reads it for a request arriving through a tunnel.
type NodeDocsSource struct {
	Tunnel  Tunnel
	Node    Node
	Groups  []Group         // as GroupsOfNode orders them
	Layers  []CloudInitData // as CloudInitLayers orders them
	Secrets []Secret        // as SecretsOfNode orders them
}

// NodeDocsSourceByAddress reads the open tunnel of gateway that owns addr, its node, and the
// node's groups, cloud-init layers and secrets, in one round trip: one batch whose statements
// find the node through the tunnel themselves, in a read-only repeatable-read transaction so
// that they all see the same tunnel. It is ErrNotFound when no open tunnel owns the address.
//
// It is a Store method, not a Queries one, because the batch carries its own BEGIN and COMMIT.
func (s *Store) NodeDocsSourceByAddress(ctx context.Context, gateway string, addr netip.Addr) (NodeDocsSource, error) {
	op := fmt.Sprintf("node documents source of %s on gateway %q", addr, gateway)
	column := "address_v4"
	if addr.Is6() && !addr.Is4In6() {
		column = "address_v6"
	}
	addr = addr.Unmap()
	where := `gateway = $1 AND state = 'open' AND ` + column + ` = $2`
	node := `(SELECT node_id FROM tunnels WHERE ` + where + `)`
	args := []any{gateway, addrParam(addr)}

	var src NodeDocsSource
	b := &pgx.Batch{}
	b.Queue(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`)
	b.Queue(`SELECT `+tunnelColumns+` FROM tunnels WHERE `+where, args...).QueryRow(func(r pgx.Row) error {
		var err error
		src.Tunnel, err = scanTunnel(r)
		return err
	})
	b.Queue(`SELECT `+nodeColumns+` FROM nodes WHERE id = `+node, args...).QueryRow(func(r pgx.Row) error {
		var err error
		src.Node, err = scanNode(r)
		return err
	})
	b.Queue(`
		SELECT g.name, g.priority, g.description, g.trust_on_first_use, g.created_at, g.updated_at
		FROM groups g JOIN group_members m ON m.group_name = g.name
		WHERE m.node_id = `+node+`
		ORDER BY g.priority, g.name`, args...).Query(func(rows pgx.Rows) error {
		var err error
		src.Groups, err = collectGroups(rows)
		return err
	})
	b.Queue(cloudInitLayersSQL(node), args...).Query(func(rows pgx.Rows) error {
		var err error
		src.Layers, err = collectCloudInit(rows)
		return err
	})
	b.Queue(secretsOfNodeSQL(node), args...).Query(func(rows pgx.Rows) error {
		var err error
		src.Secrets, err = collectSecrets(rows)
		return err
	})
	b.Queue(`COMMIT`)
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return NodeDocsSource{}, dbError(op, err)
	}
	return src, nil
}

// TunnelRef is what a request through a tunnel must re-check before a cached read of its data
// may answer it: which tunnel owns the address now, and whether it has phoned home.
type TunnelRef struct {
	ID           string
	PhonedHomeAt time.Time // zero until the node phoned home
}

// OpenTunnelRefsByAddress returns the id and phone-home time of the open tunnel of gateway
// that owns each of addrs, in one statement per address family: metadata looks up the tunnels
// behind the requests that arrive together at once. The map is keyed by address, IPv4-mapped
// IPv6 addresses unmapped; an address no open tunnel owns is absent from it.
func (q *Queries) OpenTunnelRefsByAddress(ctx context.Context, gateway string, addrs []netip.Addr) (map[netip.Addr]TunnelRef, error) {
	var v4, v6 []netip.Prefix
	for _, a := range addrs {
		switch a = a.Unmap(); {
		case a.Is4():
			v4 = append(v4, netip.PrefixFrom(a, 32))
		case a.Is6():
			v6 = append(v6, netip.PrefixFrom(a, 128))
		} // the zero Addr owns no tunnel
	}
	refs := make(map[netip.Addr]TunnelRef, len(addrs))
	for column, family := range map[string][]netip.Prefix{"address_v4": v4, "address_v6": v6} {
		if len(family) == 0 {
			continue
		}
		rows, err := q.db.Query(ctx, `SELECT `+column+`, id::text, phoned_home_at FROM tunnels
			WHERE gateway = $1 AND state = 'open' AND `+column+` = ANY($2)`, gateway, family)
		if err != nil {
			return nil, dbError(fmt.Sprintf("get the open tunnels of %d addresses on gateway %q", len(family), gateway), err)
		}
		var (
			addr   netip.Prefix
			ref    TunnelRef
			phoned *time.Time
		)
		_, err = pgx.ForEachRow(rows, []any{&addr, &ref.ID, &phoned}, func() error {
			ref.PhonedHomeAt = time.Time{}
			if phoned != nil {
				ref.PhonedHomeAt = phoned.UTC()
			}
			refs[addr.Addr()] = ref
			return nil
		})
		if err != nil {
			return nil, dbError(fmt.Sprintf("get the open tunnels of %d addresses on gateway %q", len(family), gateway), err)
		}
	}
	return refs, nil
}
