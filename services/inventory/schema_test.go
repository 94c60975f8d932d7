package inventory_test

// Invariants the schema holds by itself, exercised with raw SQL for the tables whose store code
// comes later (sessions, attestations, gateways, tunnels, cloud-init data, secrets).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// tunnelFixture is a node with everything a tunnel needs: group, enrollment, gateway.
type tunnelFixture struct {
	b      bundle
	node   string
	ek     []byte
	seq    byte
	opened time.Time
}

func newTunnelFixture(t *testing.T, b bundle, node string) *tunnelFixture {
	t.Helper()
	ctx := context.Background()
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: node, Enabled: true})
	require.NoError(t, err)
	if _, err := b.store.GetGroup(ctx, "compute"); err != nil {
		_, err = b.store.CreateGroup(ctx, inventory.Group{Name: "compute"})
		require.NoError(t, err)
	}
	require.NoError(t, b.store.AddGroupMember(ctx, "compute", node))
	ek := sha256.Sum256([]byte("EK of " + node))
	_, _, err = b.store.Enroll(ctx, inventory.Enrollment{NodeID: node, EKSHA256: ek[:], Source: inventory.SourceAdmin})
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `
		INSERT INTO gateways (name, public_key, endpoint, ipv4_pool, ipv6_pool, address_v4)
		VALUES ('gw1', $1, 'gw1.example:51820', '10.100.0.0/16', 'fd00:100::/64', '10.100.0.1')
		ON CONFLICT DO NOTHING`, key(0xee))
	require.NoError(t, err)
	return &tunnelFixture{b: b, node: node, ek: ek[:], opened: t0}
}

// attest inserts a consumed session and its attestation for wireguard key wg, as the attestor
// will, and returns the attestation id.
func (f *tunnelFixture) attest(t *testing.T, wg []byte) string {
	t.Helper()
	ctx := context.Background()
	f.seq++
	var session, attestation string
	require.NoError(t, f.b.pool.QueryRow(ctx, `
		INSERT INTO attestation_sessions (node_id, ek_sha256, ak_public, ak_sha256, wireguard_public_key,
		                                  nonce, secret_sha256, state, created_at, expires_at, ended_at)
		VALUES ($1, $2, '\x0001', $3, $4, $5, $6, 'consumed', $7::timestamptz, $7::timestamptz + interval '1 minute', $7::timestamptz)
		RETURNING id`,
		f.node, f.ek, key(0xa0), wg, key(f.seq), key(0x5e), t0).Scan(&session))
	require.NoError(t, f.b.pool.QueryRow(ctx, `
		INSERT INTO attestations (session_id, node_id, ek_sha256, ak_sha256, wireguard_public_key, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6::timestamptz, $6::timestamptz + interval '1 minute')
		RETURNING id`,
		session, f.node, f.ek, key(0xa0), wg, t0).Scan(&attestation))
	return attestation
}

func (f *tunnelFixture) insertTunnel(t *testing.T, addr string, wg []byte) (string, error) {
	t.Helper()
	att := f.attest(t, wg)
	var id string
	err := f.b.pool.QueryRow(context.Background(), `
		INSERT INTO tunnels (gateway, node_id, attestation_id, wireguard_public_key, address_v4, opened_at, expires_at)
		VALUES ('gw1', $1, $2, $3, $4, $5::timestamptz, $5::timestamptz + interval '10 minutes')
		RETURNING id`,
		f.node, att, wg, addr, f.opened).Scan(&id)
	return id, err
}

func (f *tunnelFixture) openTunnel(t *testing.T, addr string) string {
	t.Helper()
	f.seq++
	id, err := f.insertTunnel(t, addr, key(0x40+f.seq))
	require.NoError(t, err)
	return id
}

// rawErr runs raw SQL and maps its error as store methods do.
func rawErr(t *testing.T, b bundle, sql string, args ...any) error {
	t.Helper()
	_, err := b.pool.Exec(context.Background(), sql, args...)
	return inventory.DBError("raw SQL", err)
}

func TestTunnelOpenAddressIsUniquePerGateway(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	fx := newTunnelFixture(t, b, "n1")

	first := fx.openTunnel(t, "10.100.0.2")
	_, err := fx.insertTunnel(t, "10.100.0.2", key(0x77))
	require.ErrorContains(t, err, "tunnels_open_address_v4", "two open tunnels may not share an address on one gateway")

	// Not with another mask either: only host addresses are accepted.
	_, err = fx.insertTunnel(t, "10.100.0.2/24", key(0x78))
	require.ErrorContains(t, err, "tunnels_address_v4_host")

	// Nor may one WireGuard key have two open tunnels on a gateway.
	_, err = fx.insertTunnel(t, "10.100.0.3", key(0x60))
	require.NoError(t, err)
	var wg []byte
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT wireguard_public_key FROM tunnels WHERE id = $1`, first).Scan(&wg))
	_, err = fx.insertTunnel(t, "10.100.0.4", wg)
	require.ErrorContains(t, err, "tunnels_open_wireguard_public_key")

	// Once closed, the address is free again.
	_, err = b.pool.Exec(ctx, `UPDATE tunnels SET state = 'closed', closed_at = $2, close_reason = 'phoned home' WHERE id = $1`,
		first, t0.Add(time.Minute))
	require.NoError(t, err)
	second := fx.openTunnel(t, "10.100.0.2")
	require.NotEqual(t, first, second)

	// One attestation opens at most one tunnel.
	var att string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT attestation_id FROM tunnels WHERE id = $1`, second).Scan(&att))
	err = rawErr(t, b, `
		INSERT INTO tunnels (gateway, node_id, attestation_id, wireguard_public_key, address_v4, opened_at, expires_at)
		VALUES ('gw1', 'n1', $1, $2, '10.100.0.9', $3::timestamptz, $3::timestamptz + interval '1 minute')`, att, key(0x99), t0)
	require.ErrorIs(t, err, inventory.ErrConflict)
	require.ErrorContains(t, err, "tunnels_attestation_id_key")
}

func TestTunnelStateChecks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	fx := newTunnelFixture(t, b, "n1")
	id := fx.openTunnel(t, "10.100.0.2")

	for name, tc := range map[string]struct{ sql, constraint string }{
		"closed without closed_at": {`UPDATE tunnels SET state = 'closed' WHERE id = $1`, "tunnels_closed_unless_open"},
		"open with closed_at":      {`UPDATE tunnels SET closed_at = now() WHERE id = $1`, "tunnels_closed_unless_open"},
		"unknown state":            {`UPDATE tunnels SET state = 'half-open', closed_at = now() WHERE id = $1`, "tunnels_state_valid"},
		"expiry before opening":    {`UPDATE tunnels SET expires_at = opened_at - interval '1 second' WHERE id = $1`, "tunnels_expiry_after_open"},
		"no address":               {`UPDATE tunnels SET address_v4 = NULL WHERE id = $1`, "tunnels_address_required"},
		"v6 in v4 column":          {`UPDATE tunnels SET address_v4 = 'fd00:100::2' WHERE id = $1`, "tunnels_address_v4_host"},
	} {
		t.Run(name, func(t *testing.T) {
			err := rawErr(t, b, tc.sql, id)
			require.ErrorIs(t, err, inventory.ErrInvalid)
			require.ErrorContains(t, err, tc.constraint)
		})
	}
	_, err := b.pool.Exec(ctx, `UPDATE tunnels SET state = 'expired', closed_at = expires_at, close_reason = 'ttl' WHERE id = $1`, id)
	require.NoError(t, err)

	// A gateway with tunnels cannot be deleted out from under them.
	err = rawErr(t, b, `DELETE FROM gateways WHERE name = 'gw1'`)
	require.ErrorIs(t, err, inventory.ErrConflict)
}

func TestGatewayChecks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for name, tc := range map[string]struct{ sql, constraint string }{
		"no pool":         {`INSERT INTO gateways (name, public_key, endpoint) VALUES ('g', $1, 'h:1')`, "gateways_pool_required"},
		"short key":       {`INSERT INTO gateways (name, public_key, endpoint, ipv4_pool) VALUES ('g', '\x01', 'h:1', '10.0.0.0/8')`, "gateways_public_key_length"},
		"endpoint port":   {`INSERT INTO gateways (name, public_key, endpoint, ipv4_pool) VALUES ('g', $1, 'h', '10.0.0.0/8')`, "gateways_endpoint_format"},
		"v6 pool in v4":   {`INSERT INTO gateways (name, public_key, endpoint, ipv4_pool) VALUES ('g', $1, 'h:1', 'fd00::/64')`, "gateways_ipv4_pool_family"},
		"negative keepal": {`INSERT INTO gateways (name, public_key, endpoint, ipv4_pool, keepalive_seconds) VALUES ('g', $1, '[fd00::1]:51820', '10.0.0.0/8', -1)`, "gateways_keepalive_range"},
	} {
		t.Run(name, func(t *testing.T) {
			var args []any
			if bytes.Contains([]byte(tc.sql), []byte("$1")) {
				args = append(args, key(1))
			}
			err := rawErr(t, b, tc.sql, args...)
			require.ErrorIs(t, err, inventory.ErrInvalid)
			require.ErrorContains(t, err, tc.constraint)
		})
	}
}

func TestSessionsAndAttestationsAreSingleUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	fx := newTunnelFixture(t, b, "n1")

	insertPending := func(wg byte) (string, error) {
		var id string
		err := b.pool.QueryRow(ctx, `
			INSERT INTO attestation_sessions (node_id, ek_sha256, ak_public, ak_sha256, wireguard_public_key,
			                                  nonce, secret_sha256, created_at, expires_at)
			VALUES ('n1', $1, '\x01', $2, $3, $2, $2, $4::timestamptz, $4::timestamptz + interval '30 seconds')
			RETURNING id`, fx.ek, key(0xaa), key(wg), t0).Scan(&id)
		return id, err
	}
	s1, err := insertPending(1)
	require.NoError(t, err)
	_, err = insertPending(2)
	require.ErrorContains(t, err, "attestation_sessions_one_pending_per_ek", "one pending session per EK")

	_, err = b.pool.Exec(ctx, `UPDATE attestation_sessions SET state = 'consumed', ended_at = $2 WHERE id = $1`, s1, t0)
	require.NoError(t, err)
	err = rawErr(t, b, `UPDATE attestation_sessions SET state = 'pending', ended_at = NULL WHERE id = $1`, s1)
	require.ErrorIs(t, err, inventory.ErrConflict)
	require.ErrorContains(t, err, "attestation_sessions_single_use")

	// The pending slot is free once the first session ended.
	s2, err := insertPending(3)
	require.NoError(t, err)
	err = rawErr(t, b, `UPDATE attestation_sessions SET nonce = $2 WHERE id = $1`, s2, key(9))
	require.ErrorContains(t, err, "attestation_sessions_single_use", "a pending session is immutable except for its state")
	err = rawErr(t, b, `UPDATE attestation_sessions SET state = 'expired' WHERE id = $1`, s2)
	require.ErrorContains(t, err, "attestation_sessions_ended_unless_pending")

	var att string
	require.NoError(t, b.pool.QueryRow(ctx, `
		INSERT INTO attestations (session_id, node_id, ek_sha256, ak_sha256, wireguard_public_key, created_at, expires_at)
		VALUES ($1, 'n1', $2, $3, $4, $5::timestamptz, $5::timestamptz + interval '1 minute') RETURNING id`,
		s1, fx.ek, key(0xaa), key(1), t0).Scan(&att))
	err = rawErr(t, b, `
		INSERT INTO attestations (session_id, node_id, ek_sha256, ak_sha256, wireguard_public_key, created_at, expires_at)
		VALUES ($1, 'n1', $2, $3, $4, $5::timestamptz, $5::timestamptz + interval '1 minute')`, s1, fx.ek, key(0xaa), key(1), t0)
	require.ErrorIs(t, err, inventory.ErrConflict, "one attestation per session")

	// Consuming is "UPDATE ... WHERE consumed_at IS NULL": exactly one of two racers wins.
	consume := `UPDATE attestations SET consumed_at = $2 WHERE id = $1 AND consumed_at IS NULL`
	tag, err := b.pool.Exec(ctx, consume, att, t0)
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())
	tag, err = b.pool.Exec(ctx, consume, att, t0)
	require.NoError(t, err)
	require.Zero(t, tag.RowsAffected())
	// And the trigger refuses to reset or rewrite a consumed attestation.
	err = rawErr(t, b, `UPDATE attestations SET consumed_at = NULL WHERE id = $1`, att)
	require.ErrorIs(t, err, inventory.ErrConflict)
	require.ErrorContains(t, err, "attestations_single_use")
}

func TestCloudInitAndSecretScopes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n1"})
	require.NoError(t, err)
	_, err = b.store.CreateGroup(ctx, inventory.Group{Name: "g1"})
	require.NoError(t, err)

	_, err = b.pool.Exec(ctx, `INSERT INTO cloud_init_data (user_data) VALUES ('#cloud-config')`)
	require.NoError(t, err)
	err = rawErr(t, b, `INSERT INTO cloud_init_data (user_data) VALUES ('#cloud-config')`)
	require.ErrorContains(t, err, "cloud_init_data_defaults", "one cluster-defaults row")
	_, err = b.pool.Exec(ctx, `INSERT INTO cloud_init_data (group_name) VALUES ('g1')`)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `INSERT INTO cloud_init_data (node_id) VALUES ('n1')`)
	require.NoError(t, err)
	err = rawErr(t, b, `INSERT INTO cloud_init_data (node_id) VALUES ('n1')`)
	require.ErrorIs(t, err, inventory.ErrConflict)
	err = rawErr(t, b, `INSERT INTO cloud_init_data (group_name, node_id) VALUES ('g1', 'n1')`)
	require.ErrorContains(t, err, "cloud_init_data_one_scope")
	err = rawErr(t, b, `INSERT INTO cloud_init_data (node_id, meta_data) VALUES ('n1', '[1]')`)
	require.ErrorIs(t, err, inventory.ErrInvalid)

	insertSecret := func(group, node any) error {
		return rawErr(t, b, `INSERT INTO secrets (name, group_name, node_id, ciphertext, nonce, key_id)
			VALUES ('munge.key', $1, $2, '\x01', '\x02', 'k1')`, group, node)
	}
	// The same name once per scope.
	require.NoError(t, insertSecret(nil, nil))
	require.NoError(t, insertSecret("g1", nil))
	require.NoError(t, insertSecret(nil, "n1"))
	require.ErrorContains(t, insertSecret(nil, nil), "secrets_defaults_name")
	require.ErrorContains(t, insertSecret("g1", nil), "secrets_group_name")
	require.ErrorContains(t, insertSecret(nil, "n1"), "secrets_node_name")
	require.ErrorContains(t, insertSecret("g1", "n1"), "secrets_one_scope")
	err = rawErr(t, b, `INSERT INTO secrets (name, ciphertext, nonce, key_id) VALUES ('../x', '\x01', '\x02', 'k1')`)
	require.ErrorContains(t, err, "secrets_name_format")

	_, err = b.pool.Exec(ctx, `INSERT INTO ssh_host_keys (node_id, key_type, public_key) VALUES ('n1', 'ssh-ed25519', 'AAAA')`)
	require.NoError(t, err)
	require.NoError(t, b.store.DeleteGroup(ctx, "g1"))
	require.NoError(t, b.store.DeleteNode(ctx, "n1"))
	var left int
	require.NoError(t, b.pool.QueryRow(ctx,
		`SELECT (SELECT count(*) FROM cloud_init_data) + (SELECT count(*) FROM secrets) + (SELECT count(*) FROM ssh_host_keys)`).Scan(&left))
	require.Equal(t, 2, left, "only the cluster-default document and secret outlive the group and node")
}
