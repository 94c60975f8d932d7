package inventory

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
)

// Node is a machine that may boot: an id such as an xname, and what the operator knows of it.
type Node struct {
	ID          string
	MAC         net.HardwareAddr // nil when unknown
	Hostname    string           // empty when unset
	Enabled     bool
	Description string
	CreatedAt   time.Time
	UpdatedAt   time.Time
	LastBootAt  time.Time // zero until the node first phones home
}

// NodeUpdate changes the fields that are not nil and leaves the others alone.
type NodeUpdate struct {
	Hostname    *string           // "" clears it
	MAC         *net.HardwareAddr // a nil or empty address clears it
	Description *string
	Enabled     *bool
}

// NodeFilter selects nodes for ListNodes. The zero value lists every node, the first page.
type NodeFilter struct {
	IDPrefix string // only ids starting with this
	Enabled  *bool  // only enabled (true) or disabled (false) nodes
	Group    string // only members of this group
	After    string // the page token returned with the previous page: ids greater than this
	Limit    int    // page size; 0 means DefaultPageSize, capped at MaxPageSize
}

// Page sizes of the List methods.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

func pageSize(n int) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	}
	return n
}

const nodeColumns = `id, mac, COALESCE(hostname, ''), enabled, description, created_at, updated_at, last_boot_at`

func scanNode(row pgx.Row) (Node, error) {
	var (
		n        Node
		lastBoot *time.Time
	)
	if err := row.Scan(&n.ID, &n.MAC, &n.Hostname, &n.Enabled, &n.Description, &n.CreatedAt, &n.UpdatedAt, &lastBoot); err != nil {
		return Node{}, err
	}
	if lastBoot != nil {
		n.LastBootAt = lastBoot.UTC()
	}
	n.CreatedAt, n.UpdatedAt = n.CreatedAt.UTC(), n.UpdatedAt.UTC()
	return n, nil
}

// macParam turns an empty address into NULL.
func macParam(mac net.HardwareAddr) any {
	if len(mac) == 0 {
		return nil
	}
	return mac
}

// CreateNode inserts n; CreatedAt, UpdatedAt and LastBootAt are set by the store. A duplicate
// id or MAC is ErrConflict, a malformed id or hostname ErrInvalid.
func (q *Queries) CreateNode(ctx context.Context, n Node) (Node, error) {
	now := q.now()
	row := q.db.QueryRow(ctx, `
		INSERT INTO nodes (id, mac, hostname, enabled, description, created_at, updated_at)
		VALUES ($1, $2, NULLIF($3, ''), $4, $5, $6, $6)
		RETURNING `+nodeColumns,
		n.ID, macParam(n.MAC), n.Hostname, n.Enabled, n.Description, now)
	created, err := scanNode(row)
	if err != nil {
		return Node{}, dbError(fmt.Sprintf("create node %q", n.ID), err)
	}
	return created, nil
}

// GetNode returns the node with id, or ErrNotFound.
func (q *Queries) GetNode(ctx context.Context, id string) (Node, error) {
	n, err := scanNode(q.db.QueryRow(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE id = $1`, id))
	if err != nil {
		return Node{}, dbError(fmt.Sprintf("get node %q", id), err)
	}
	return n, nil
}

// ListNodes returns one page of nodes ordered by id, and the token of the next page (empty on
// the last page). Paging is by key, so pages stay consistent while nodes are added.
func (q *Queries) ListNodes(ctx context.Context, f NodeFilter) (nodes []Node, next string, err error) {
	limit := pageSize(f.Limit)
	// One row more than the page tells whether another page follows.
	rows, err := q.db.Query(ctx, `
		SELECT `+nodeColumns+`
		FROM nodes n
		WHERE n.id > $1
		  AND ($2 = '' OR starts_with(n.id, $2))
		  AND ($3::boolean IS NULL OR n.enabled = $3)
		  AND ($4 = '' OR EXISTS (
		        SELECT 1 FROM group_members m WHERE m.node_id = n.id AND m.group_name = $4))
		ORDER BY n.id
		LIMIT $5`,
		f.After, f.IDPrefix, f.Enabled, f.Group, limit+1)
	if err != nil {
		return nil, "", dbError("list nodes", err)
	}
	nodes, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Node, error) { return scanNode(r) })
	if err != nil {
		return nil, "", dbError("list nodes", err)
	}
	if len(nodes) > limit {
		nodes = nodes[:limit]
		next = nodes[limit-1].ID
	}
	return nodes, next, nil
}

// UpdateNode applies u to the node with id and returns the result, or ErrNotFound.
func (q *Queries) UpdateNode(ctx context.Context, id string, u NodeUpdate) (Node, error) {
	var mac any
	if u.MAC != nil {
		mac = macParam(*u.MAC)
	}
	row := q.db.QueryRow(ctx, `
		UPDATE nodes SET
		    hostname    = CASE WHEN $2 THEN NULLIF($3::text, '') ELSE hostname END,
		    mac         = CASE WHEN $4 THEN $5::macaddr ELSE mac END,
		    description = COALESCE($6, description),
		    enabled     = COALESCE($7, enabled),
		    updated_at  = $8
		WHERE id = $1
		RETURNING `+nodeColumns,
		id, u.Hostname != nil, deref(u.Hostname), u.MAC != nil, mac, u.Description, u.Enabled, q.now())
	n, err := scanNode(row)
	if err != nil {
		return Node{}, dbError(fmt.Sprintf("update node %q", id), err)
	}
	return n, nil
}

// DisableNode stops the node with id from attesting (its data stays), or ErrNotFound.
func (q *Queries) DisableNode(ctx context.Context, id string) (Node, error) {
	disabled := false
	return q.UpdateNode(ctx, id, NodeUpdate{Enabled: &disabled})
}

// DeleteNode removes the node with id and, by cascade, its memberships, enrollment, sessions,
// attestations, tunnels and data; its events stay. ErrNotFound if there is no such node.
func (q *Queries) DeleteNode(ctx context.Context, id string) error {
	tag, err := q.db.Exec(ctx, `DELETE FROM nodes WHERE id = $1`, id)
	if err != nil {
		return dbError(fmt.Sprintf("delete node %q", id), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete node %q: %w", id, ErrNotFound)
	}
	return nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
