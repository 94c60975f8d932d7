package inventory

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// HostKey is an SSH host public key a node reported when it phoned home.
type HostKey struct {
	NodeID     string
	Hostname   string // the node's hostname when read (empty when unset); not stored with the key
	Type       string // "ssh-ed25519", "ecdsa-sha2-nistp256", ...
	PublicKey  string // the whole public key line
	ReportedAt time.Time
}

// ReplaceHostKeys makes keys the node's host keys: a node reports all of them at every boot,
// so keys of types it no longer reports are removed. Call it inside InTx. An unknown node is
// ErrNotFound, a malformed key type ErrInvalid.
func (q *Queries) ReplaceHostKeys(ctx context.Context, nodeID string, keys []HostKey) error {
	op := fmt.Sprintf("replace host keys of node %q", nodeID)
	if _, err := q.db.Exec(ctx, `DELETE FROM ssh_host_keys WHERE node_id = $1`, nodeID); err != nil {
		return dbError(op, err)
	}
	now := q.now()
	for _, k := range keys {
		if _, err := q.db.Exec(ctx, `
			INSERT INTO ssh_host_keys (node_id, key_type, public_key, reported_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (node_id, key_type) DO UPDATE SET public_key = EXCLUDED.public_key, reported_at = EXCLUDED.reported_at`,
			nodeID, k.Type, k.PublicKey, now); err != nil {
			if isForeignKeyViolation(err) {
				return fmt.Errorf("%s: %w", op, ErrNotFound)
			}
			return dbError(op, err)
		}
	}
	return nil
}

// ListHostKeys returns the host keys of one node, or of every node when nodeID is empty,
// ordered by node and type.
func (q *Queries) ListHostKeys(ctx context.Context, nodeID string) ([]HostKey, error) {
	rows, err := q.db.Query(ctx, `
		SELECT k.node_id, COALESCE(n.hostname, ''), k.key_type, k.public_key, k.reported_at
		FROM ssh_host_keys k JOIN nodes n ON n.id = k.node_id
		WHERE $1 = '' OR k.node_id = $1
		ORDER BY k.node_id, k.key_type`, nodeID)
	if err != nil {
		return nil, dbError("list host keys", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (HostKey, error) {
		var k HostKey
		err := r.Scan(&k.NodeID, &k.Hostname, &k.Type, &k.PublicKey, &k.ReportedAt)
		k.ReportedAt = k.ReportedAt.UTC()
		return k, err
	})
	if err != nil {
		return nil, dbError("list host keys", err)
	}
	return keys, nil
}

// MarkNodeBooted records that the node completed a boot now (nodes.last_boot_at).
func (q *Queries) MarkNodeBooted(ctx context.Context, nodeID string) (Node, error) {
	n, err := scanNode(q.db.QueryRow(ctx, `UPDATE nodes SET last_boot_at = $2 WHERE id = $1 RETURNING `+nodeColumns, nodeID, q.now()))
	if err != nil {
		return Node{}, dbError(fmt.Sprintf("mark node %q booted", nodeID), err)
	}
	return n, nil
}
