package inventory

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Secret is one sealed secret. The store never sees its value: Ciphertext and Nonce come from
// the metadata service's AEAD under the key-encryption key KeyID, which stays out of the
// database.
type Secret struct {
	Scope      Scope
	Name       string
	Ciphertext []byte
	Nonce      []byte
	KeyID      string
	// UntilPhoneHome: served only until the node phoned home in the current boot.
	UntilPhoneHome bool
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

const secretColumns = `COALESCE(group_name, ''), COALESCE(node_id, ''), name, ciphertext, nonce, key_id, until_phone_home, created_at, updated_at`

func scanSecret(row pgx.Row) (Secret, error) {
	var s Secret
	err := row.Scan(&s.Scope.Group, &s.Scope.NodeID, &s.Name, &s.Ciphertext, &s.Nonce, &s.KeyID, &s.UntilPhoneHome, &s.CreatedAt, &s.UpdatedAt)
	s.CreatedAt, s.UpdatedAt = s.CreatedAt.UTC(), s.UpdatedAt.UTC()
	return s, err
}

func collectSecrets(rows pgx.Rows) ([]Secret, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Secret, error) { return scanSecret(r) })
}

// PutSecret creates or replaces a secret (keeping its creation time) and returns it. A
// malformed name is ErrInvalid, an unknown group or node ErrNotFound.
func (q *Queries) PutSecret(ctx context.Context, s Secret) (Secret, error) {
	op := fmt.Sprintf("put secret %q of %s", s.Name, s.Scope)
	if err := s.Scope.check(); err != nil {
		return Secret{}, fmt.Errorf("%s: %w", op, err)
	}
	conflict := `(name) WHERE group_name IS NULL AND node_id IS NULL`
	switch {
	case s.Scope.Group != "":
		conflict = `(group_name, name) WHERE group_name IS NOT NULL`
	case s.Scope.NodeID != "":
		conflict = `(node_id, name) WHERE node_id IS NOT NULL`
	}
	g, n := s.Scope.params()
	stored, err := scanSecret(q.db.QueryRow(ctx, `
		INSERT INTO secrets (group_name, node_id, name, ciphertext, nonce, key_id, until_phone_home, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
		ON CONFLICT `+conflict+` DO UPDATE SET ciphertext = EXCLUDED.ciphertext, nonce = EXCLUDED.nonce,
			key_id = EXCLUDED.key_id, until_phone_home = EXCLUDED.until_phone_home, updated_at = EXCLUDED.updated_at
		RETURNING `+secretColumns,
		g, n, s.Name, s.Ciphertext, s.Nonce, s.KeyID, s.UntilPhoneHome, q.now()))
	if err != nil {
		if isForeignKeyViolation(err) {
			return Secret{}, fmt.Errorf("%s: %w", op, ErrNotFound)
		}
		return Secret{}, dbError(op, err)
	}
	return stored, nil
}

// ListSecrets returns the secrets of one scope, or of every scope when scope is nil, ordered by
// scope and name.
func (q *Queries) ListSecrets(ctx context.Context, scope *Scope) ([]Secret, error) {
	var (
		rows pgx.Rows
		err  error
	)
	const order = ` ORDER BY group_name NULLS FIRST, node_id NULLS FIRST, name`
	if scope == nil {
		rows, err = q.db.Query(ctx, `SELECT `+secretColumns+` FROM secrets`+order)
	} else {
		if err := scope.check(); err != nil {
			return nil, fmt.Errorf("list secrets: %w", err)
		}
		g, n := scope.params()
		rows, err = q.db.Query(ctx, `SELECT `+secretColumns+` FROM secrets WHERE `+scopeWhere+order, g, n)
	}
	if err != nil {
		return nil, dbError("list secrets", err)
	}
	ss, err := collectSecrets(rows)
	if err != nil {
		return nil, dbError("list secrets", err)
	}
	return ss, nil
}

// DeleteSecret removes a secret, or returns ErrNotFound.
func (q *Queries) DeleteSecret(ctx context.Context, scope Scope, name string) error {
	op := fmt.Sprintf("delete secret %q of %s", name, scope)
	if err := scope.check(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	g, n := scope.params()
	tag, err := q.db.Exec(ctx, `DELETE FROM secrets WHERE `+scopeWhere+` AND name = $3`, g, n, name)
	if err != nil {
		return dbError(op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	return nil
}

// SecretsOfNode returns the secrets a node may receive, in lookup order: its own, then its
// groups' from the highest priority down (then by name), then the defaults; within a scope by
// name. The first secret of a name in this order is the one a template gets.
func (q *Queries) SecretsOfNode(ctx context.Context, nodeID string) ([]Secret, error) {
	op := fmt.Sprintf("secrets of node %q", nodeID)
	rows, err := q.db.Query(ctx, secretsOfNodeSQL("$1"), nodeID)
	if err != nil {
		return nil, dbError(op, err)
	}
	ss, err := collectSecrets(rows)
	if err != nil {
		return nil, dbError(op, err)
	}
	return ss, nil
}

// secretsOfNodeSQL selects the secrets of the node whose id is the SQL expression node, in
// SecretsOfNode's order.
func secretsOfNodeSQL(node string) string {
	return `
		SELECT COALESCE(s.group_name, ''), COALESCE(s.node_id, ''), s.name, s.ciphertext, s.nonce, s.key_id,
			s.until_phone_home, s.created_at, s.updated_at
		FROM secrets s LEFT JOIN groups g ON g.name = s.group_name
		WHERE (s.group_name IS NULL AND s.node_id IS NULL)
		   OR s.node_id = ` + node + `
		   OR s.group_name IN (SELECT group_name FROM group_members WHERE node_id = ` + node + `)
		ORDER BY CASE WHEN s.node_id IS NOT NULL THEN 0 WHEN s.group_name IS NOT NULL THEN 1 ELSE 2 END,
			g.priority DESC, g.name, s.name`
}

// SecretNames returns the distinct names of the secrets in any scope: what group and default
// templates may refer to, since a per-node secret can fill a group's template.
func (q *Queries) SecretNames(ctx context.Context) ([]string, error) {
	rows, err := q.db.Query(ctx, `SELECT DISTINCT name FROM secrets ORDER BY name`)
	if err != nil {
		return nil, dbError("list secret names", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, dbError("list secret names", err)
	}
	return names, nil
}
