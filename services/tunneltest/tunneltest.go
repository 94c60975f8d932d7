// Package tunneltest opens tunnels in the inventory the way tunnelmgr does (a passed
// attestation consumed by OpenTunnel), so that tests of the services around tunnelmgr have
// real open tunnels: metadata serves them, the attestor counts them, attestctl lists them.
package tunneltest

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

// Open opens a tunnel on gateway for nodeID with WireGuard key wgKey (random when nil) and
// returns it. The node must exist.
func Open(t testing.TB, store *inventory.Store, nodeID, gateway string, wgKey []byte) inventory.Tunnel {
	t.Helper()
	ctx := context.Background()
	if wgKey == nil {
		wgKey = make([]byte, 32)
		_, err := rand.Read(wgKey)
		require.NoError(t, err)
	}
	ek := make([]byte, 32)
	_, err := rand.Read(ek)
	require.NoError(t, err)
	b32 := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	sess, err := store.CreateSession(ctx, inventory.Session{NodeID: nodeID, EKSHA256: ek, AKPublic: []byte("tpmt_public"),
		AKSHA256: b32(2), WireGuardPublicKey: wgKey, Nonce: b32(4), SecretSHA256: b32(5)}, time.Minute)
	require.NoError(t, err)
	a, err := store.CreateAttestation(ctx, inventory.Attestation{SessionID: sess.ID, NodeID: nodeID, EKSHA256: ek,
		AKSHA256: b32(2), WireGuardPublicKey: wgKey}, time.Minute)
	require.NoError(t, err)
	var tun inventory.Tunnel
	require.NoError(t, store.InTx(ctx, func(q *inventory.Queries) error {
		if _, err := q.ConsumeAttestation(ctx, a.ID); err != nil {
			return err
		}
		tun, err = q.OpenTunnel(ctx, inventory.Tunnel{Gateway: gateway, NodeID: nodeID, AttestationID: a.ID, WireGuardPublicKey: wgKey}, 10*time.Minute)
		return err
	}))
	return tun
}
