package inventory

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Group is a set of nodes sharing policy (PCR pins, trust on first use) and cloud-init data.
// When a node is in several groups, higher Priority wins.
type Group struct {
	Name        string
	Priority    int
	Description string
	// TrustOnFirstUse lets members enroll the first EK they present: an explicit opt-in.
	TrustOnFirstUse bool
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// GroupUpdate changes the fields that are not nil and leaves the others alone.
type GroupUpdate struct {
	Priority        *int
	Description     *string
	TrustOnFirstUse *bool
}

// PCRPolicy maps a PCR index (0–23) to the SHA-256 bank value a quote must show.
type PCRPolicy map[int][]byte

const groupColumns = `name, priority, description, trust_on_first_use, created_at, updated_at`

func scanGroup(row pgx.Row) (Group, error) {
	var g Group
	err := row.Scan(&g.Name, &g.Priority, &g.Description, &g.TrustOnFirstUse, &g.CreatedAt, &g.UpdatedAt)
	g.CreatedAt, g.UpdatedAt = g.CreatedAt.UTC(), g.UpdatedAt.UTC()
	return g, err
}

func collectGroups(rows pgx.Rows) ([]Group, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Group, error) { return scanGroup(r) })
}

// CreateGroup inserts g. A duplicate name is ErrConflict, a malformed one ErrInvalid.
func (q *Queries) CreateGroup(ctx context.Context, g Group) (Group, error) {
	row := q.db.QueryRow(ctx, `
		INSERT INTO groups (name, priority, description, trust_on_first_use, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $5)
		RETURNING `+groupColumns,
		g.Name, g.Priority, g.Description, g.TrustOnFirstUse, q.now())
	created, err := scanGroup(row)
	if err != nil {
		return Group{}, dbError(fmt.Sprintf("create group %q", g.Name), err)
	}
	return created, nil
}

// GetGroup returns the group called name, or ErrNotFound.
func (q *Queries) GetGroup(ctx context.Context, name string) (Group, error) {
	g, err := scanGroup(q.db.QueryRow(ctx, `SELECT `+groupColumns+` FROM groups WHERE name = $1`, name))
	if err != nil {
		return Group{}, dbError(fmt.Sprintf("get group %q", name), err)
	}
	return g, nil
}

// ListGroups returns every group ordered by name. Groups are few (tens), so there is no paging.
func (q *Queries) ListGroups(ctx context.Context) ([]Group, error) {
	rows, err := q.db.Query(ctx, `SELECT `+groupColumns+` FROM groups ORDER BY name`)
	if err != nil {
		return nil, dbError("list groups", err)
	}
	groups, err := collectGroups(rows)
	if err != nil {
		return nil, dbError("list groups", err)
	}
	return groups, nil
}

// UpdateGroup applies u to the group called name and returns the result, or ErrNotFound.
func (q *Queries) UpdateGroup(ctx context.Context, name string, u GroupUpdate) (Group, error) {
	row := q.db.QueryRow(ctx, `
		UPDATE groups SET
		    priority           = COALESCE($2, priority),
		    description        = COALESCE($3, description),
		    trust_on_first_use = COALESCE($4, trust_on_first_use),
		    updated_at         = $5
		WHERE name = $1
		RETURNING `+groupColumns,
		name, u.Priority, u.Description, u.TrustOnFirstUse, q.now())
	g, err := scanGroup(row)
	if err != nil {
		return Group{}, dbError(fmt.Sprintf("update group %q", name), err)
	}
	return g, nil
}

// DeleteGroup removes the group called name with its memberships, PCR policy and data (the
// member nodes stay), or returns ErrNotFound.
func (q *Queries) DeleteGroup(ctx context.Context, name string) error {
	tag, err := q.db.Exec(ctx, `DELETE FROM groups WHERE name = $1`, name)
	if err != nil {
		return dbError(fmt.Sprintf("delete group %q", name), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete group %q: %w", name, ErrNotFound)
	}
	return nil
}

// AddGroupMember puts the node in the group; adding an existing member is a no-op.
// ErrNotFound if the group or the node does not exist.
func (q *Queries) AddGroupMember(ctx context.Context, group, nodeID string) error {
	_, err := q.db.Exec(ctx, `
		INSERT INTO group_members (group_name, node_id) VALUES ($1, $2)
		ON CONFLICT DO NOTHING`,
		group, nodeID)
	op := fmt.Sprintf("add node %q to group %q", nodeID, group)
	if isForeignKeyViolation(err) {
		return fmt.Errorf("%s: the group or the node does not exist: %w", op, ErrNotFound)
	}
	return dbError(op, err)
}

// RemoveGroupMember takes the node out of the group, or returns ErrNotFound if it was not in it.
func (q *Queries) RemoveGroupMember(ctx context.Context, group, nodeID string) error {
	tag, err := q.db.Exec(ctx, `DELETE FROM group_members WHERE group_name = $1 AND node_id = $2`, group, nodeID)
	op := fmt.Sprintf("remove node %q from group %q", nodeID, group)
	if err != nil {
		return dbError(op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: not a member: %w", op, ErrNotFound)
	}
	return nil
}

// ListGroupMembers returns the ids of the group's nodes in order, or ErrNotFound if there is no
// such group.
func (q *Queries) ListGroupMembers(ctx context.Context, group string) ([]string, error) {
	op := fmt.Sprintf("list members of group %q", group)
	// The LEFT JOIN yields one row with a NULL node for an empty group and none for a missing
	// group, so both cases cost one round trip.
	rows, err := q.db.Query(ctx, `
		SELECT m.node_id
		FROM groups g LEFT JOIN group_members m ON m.group_name = g.name
		WHERE g.name = $1
		ORDER BY m.node_id`,
		group)
	if err != nil {
		return nil, dbError(op, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[*string])
	if err != nil {
		return nil, dbError(op, err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	members := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != nil {
			members = append(members, *id)
		}
	}
	return members, nil
}

// GroupsOfNode returns the groups the node belongs to in merge order: ascending priority, then
// name, so that applying them in turn lets the highest priority win. A node in no group, or an
// unknown node, has none.
func (q *Queries) GroupsOfNode(ctx context.Context, nodeID string) ([]Group, error) {
	rows, err := q.db.Query(ctx, `
		SELECT g.name, g.priority, g.description, g.trust_on_first_use, g.created_at, g.updated_at
		FROM groups g JOIN group_members m ON m.group_name = g.name
		WHERE m.node_id = $1
		ORDER BY g.priority, g.name`,
		nodeID)
	op := fmt.Sprintf("groups of node %q", nodeID)
	if err != nil {
		return nil, dbError(op, err)
	}
	groups, err := collectGroups(rows)
	if err != nil {
		return nil, dbError(op, err)
	}
	return groups, nil
}

// SetPCRPolicy replaces the group's PCR policy with p (an empty p removes it) in one
// statement, so it is atomic even outside InTx. ErrNotFound if there is no such group,
// ErrInvalid for a PCR outside 0–23 or a value that is not 32 bytes.
func (q *Queries) SetPCRPolicy(ctx context.Context, group string, p PCRPolicy) error {
	op := fmt.Sprintf("set PCR policy of group %q", group)
	pcrs := slices.Sorted(maps.Keys(p))
	indexes := make([]int16, len(pcrs))
	values := make([][]byte, len(pcrs))
	for i, pcr := range pcrs {
		if pcr < 0 || pcr > 23 {
			return fmt.Errorf("%s: PCR %d outside 0-23: %w", op, pcr, ErrInvalid)
		}
		indexes[i], values[i] = int16(pcr), p[pcr]
	}
	// Locking the group row serialises concurrent replacements of the same policy; upserting
	// the wanted PCRs and deleting the others never touches one row twice.
	var found bool
	err := q.db.QueryRow(ctx, `
		WITH g AS (
		    SELECT name FROM groups WHERE name = $1 FOR UPDATE
		), removed AS (
		    DELETE FROM group_pcr_policies p
		    USING g
		    WHERE p.group_name = g.name AND p.pcr <> ALL ($2::smallint[])
		), upserted AS (
		    INSERT INTO group_pcr_policies (group_name, pcr, sha256)
		    SELECT g.name, v.pcr, v.sha256
		    FROM g, unnest($2::smallint[], $3::bytea[]) AS v (pcr, sha256)
		    ON CONFLICT (group_name, pcr) DO UPDATE SET sha256 = EXCLUDED.sha256
		)
		SELECT EXISTS (SELECT 1 FROM g)`,
		group, indexes, values).Scan(&found)
	if err != nil {
		return dbError(op, err)
	}
	if !found {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	return nil
}

// GetPCRPolicy returns the group's PCR policy (empty when none is set), or ErrNotFound if
// there is no such group.
func (q *Queries) GetPCRPolicy(ctx context.Context, group string) (PCRPolicy, error) {
	op := fmt.Sprintf("get PCR policy of group %q", group)
	rows, err := q.db.Query(ctx, `
		SELECT p.pcr, p.sha256
		FROM groups g LEFT JOIN group_pcr_policies p ON p.group_name = g.name
		WHERE g.name = $1`,
		group)
	if err != nil {
		return nil, dbError(op, err)
	}
	policy := PCRPolicy{}
	found := false
	var (
		pcr    *int16
		sha256 []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&pcr, &sha256}, func() error {
		found = true
		if pcr != nil {
			policy[int(*pcr)] = sha256
		}
		return nil
	})
	if err != nil {
		return nil, dbError(op, err)
	}
	if !found {
		return nil, fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	return policy, nil
}

// GroupNamesOfNodes returns, for each of the nodes that belongs to a group, the names of its
// groups, highest priority first, then by name (the order an operator reads them in). Nodes in
// no group, and unknown nodes, are absent from the map. One query serves a whole page of nodes.
func (q *Queries) GroupNamesOfNodes(ctx context.Context, nodeIDs []string) (map[string][]string, error) {
	out := make(map[string][]string)
	if len(nodeIDs) == 0 {
		return out, nil
	}
	rows, err := q.db.Query(ctx, `
		SELECT m.node_id, g.name
		FROM group_members m JOIN groups g ON g.name = m.group_name
		WHERE m.node_id = ANY ($1::text[])
		ORDER BY m.node_id, g.priority DESC, g.name`,
		nodeIDs)
	if err != nil {
		return nil, dbError("groups of nodes", err)
	}
	var node, group string
	_, err = pgx.ForEachRow(rows, []any{&node, &group}, func() error {
		out[node] = append(out[node], group)
		return nil
	})
	if err != nil {
		return nil, dbError("groups of nodes", err)
	}
	return out, nil
}
