package inventory

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Scope says whose cloud-init data or secret a row is: the cluster defaults (the zero value),
// one group, or one node.
type Scope struct {
	Group  string
	NodeID string
}

// DefaultsScope is the cluster defaults.
var DefaultsScope = Scope{}

// GroupScope is the scope of a group.
func GroupScope(name string) Scope { return Scope{Group: name} }

// NodeScope is the scope of a node.
func NodeScope(id string) Scope { return Scope{NodeID: id} }

// IsDefaults reports whether s is the cluster defaults.
func (s Scope) IsDefaults() bool { return s.Group == "" && s.NodeID == "" }

// String is "defaults", "group:NAME" or "node:ID". Secrets bind their ciphertext to it.
func (s Scope) String() string {
	switch {
	case s.NodeID != "":
		return "node:" + s.NodeID
	case s.Group != "":
		return "group:" + s.Group
	}
	return "defaults"
}

func (s Scope) check() error {
	if s.Group != "" && s.NodeID != "" {
		return fmt.Errorf("scope with both group %q and node %q: %w", s.Group, s.NodeID, ErrInvalid)
	}
	return nil
}

// scopeParams are the group_name and node_id column values of s (NULL when unset).
func (s Scope) params() (group, node any) {
	if s.Group != "" {
		group = s.Group
	}
	if s.NodeID != "" {
		node = s.NodeID
	}
	return group, node
}

// scopeWhere matches the rows of the scope given as $1 (group) and $2 (node).
const scopeWhere = `group_name IS NOT DISTINCT FROM $1::text AND node_id IS NOT DISTINCT FROM $2::text`

// CloudInitData is the cloud-init input of one scope, as an operator wrote it: templates are
// not rendered and documents not merged here.
type CloudInitData struct {
	Scope         Scope
	MetaData      map[string]any // extra meta-data keys; never nil when read
	UserData      string
	VendorData    string
	NetworkConfig string
	UpdatedAt     time.Time
}

const cloudInitColumns = `COALESCE(group_name, ''), COALESCE(node_id, ''), meta_data, user_data, vendor_data, network_config, updated_at`

func scanCloudInit(row pgx.Row) (CloudInitData, error) {
	var d CloudInitData
	err := row.Scan(&d.Scope.Group, &d.Scope.NodeID, &d.MetaData, &d.UserData, &d.VendorData, &d.NetworkConfig, &d.UpdatedAt)
	if d.MetaData == nil {
		d.MetaData = map[string]any{}
	}
	d.UpdatedAt = d.UpdatedAt.UTC()
	return d, err
}

// GetCloudInitData returns the data of a scope, or ErrNotFound.
func (q *Queries) GetCloudInitData(ctx context.Context, s Scope) (CloudInitData, error) {
	op := fmt.Sprintf("get cloud-init data of %s", s)
	if err := s.check(); err != nil {
		return CloudInitData{}, fmt.Errorf("%s: %w", op, err)
	}
	g, n := s.params()
	d, err := scanCloudInit(q.db.QueryRow(ctx, `SELECT `+cloudInitColumns+` FROM cloud_init_data WHERE `+scopeWhere, g, n))
	if err != nil {
		return CloudInitData{}, dbError(op, err)
	}
	return d, nil
}

// SetCloudInitData creates or replaces the data of d.Scope and returns what is stored. An
// unknown group or node is ErrNotFound.
func (q *Queries) SetCloudInitData(ctx context.Context, d CloudInitData) (CloudInitData, error) {
	op := fmt.Sprintf("set cloud-init data of %s", d.Scope)
	if err := d.Scope.check(); err != nil {
		return CloudInitData{}, fmt.Errorf("%s: %w", op, err)
	}
	meta := d.MetaData
	if meta == nil {
		meta = map[string]any{}
	}
	// Each scope has its own partial unique index, and ON CONFLICT must name the one it hits.
	conflict := `((true)) WHERE group_name IS NULL AND node_id IS NULL`
	switch {
	case d.Scope.Group != "":
		conflict = `(group_name)`
	case d.Scope.NodeID != "":
		conflict = `(node_id)`
	}
	g, n := d.Scope.params()
	stored, err := scanCloudInit(q.db.QueryRow(ctx, `
		INSERT INTO cloud_init_data (group_name, node_id, meta_data, user_data, vendor_data, network_config, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT `+conflict+` DO UPDATE SET meta_data = EXCLUDED.meta_data, user_data = EXCLUDED.user_data,
			vendor_data = EXCLUDED.vendor_data, network_config = EXCLUDED.network_config, updated_at = EXCLUDED.updated_at
		RETURNING `+cloudInitColumns,
		g, n, meta, d.UserData, d.VendorData, d.NetworkConfig, q.now()))
	if err != nil {
		if isForeignKeyViolation(err) {
			return CloudInitData{}, fmt.Errorf("%s: %w", op, ErrNotFound)
		}
		return CloudInitData{}, dbError(op, err)
	}
	return stored, nil
}

// DeleteCloudInitData removes the data of a scope, or returns ErrNotFound.
func (q *Queries) DeleteCloudInitData(ctx context.Context, s Scope) error {
	op := fmt.Sprintf("delete cloud-init data of %s", s)
	if err := s.check(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	g, n := s.params()
	tag, err := q.db.Exec(ctx, `DELETE FROM cloud_init_data WHERE `+scopeWhere, g, n)
	if err != nil {
		return dbError(op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	return nil
}

// CloudInitLayers returns the data that applies to a node in merge order: the cluster
// defaults, then the node's groups by ascending priority (then name, as GroupsOfNode), then the
// node's own. Scopes without data are left out.
func (q *Queries) CloudInitLayers(ctx context.Context, nodeID string) ([]CloudInitData, error) {
	op := fmt.Sprintf("cloud-init layers of node %q", nodeID)
	rows, err := q.db.Query(ctx, cloudInitLayersSQL("$1"), nodeID)
	if err != nil {
		return nil, dbError(op, err)
	}
	layers, err := collectCloudInit(rows)
	if err != nil {
		return nil, dbError(op, err)
	}
	return layers, nil
}

// cloudInitLayersSQL selects the layers of the node whose id is the SQL expression node (a
// parameter, or a subquery as NodeDocsSourceByAddress uses).
func cloudInitLayersSQL(node string) string {
	return `
		SELECT COALESCE(c.group_name, ''), COALESCE(c.node_id, ''), c.meta_data, c.user_data, c.vendor_data,
			c.network_config, c.updated_at
		FROM cloud_init_data c LEFT JOIN groups g ON g.name = c.group_name
		WHERE (c.group_name IS NULL AND c.node_id IS NULL)
		   OR c.node_id = ` + node + `
		   OR c.group_name IN (SELECT group_name FROM group_members WHERE node_id = ` + node + `)
		ORDER BY CASE WHEN c.node_id IS NOT NULL THEN 2 WHEN c.group_name IS NOT NULL THEN 1 ELSE 0 END,
			g.priority, g.name`
}

func collectCloudInit(rows pgx.Rows) ([]CloudInitData, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (CloudInitData, error) { return scanCloudInit(r) })
}
