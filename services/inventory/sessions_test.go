package inventory_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

func newSession(nodeID string, ek byte) inventory.Session {
	b32 := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	return inventory.Session{
		NodeID: nodeID, EKSHA256: b32(ek), AKPublic: []byte("tpmt_public"), AKSHA256: b32(2),
		WireGuardPublicKey: b32(3), Nonce: b32(4), SecretSHA256: b32(5),
	}
}

func TestSessionsAreSingleUseAndSuperseded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n1", Enabled: true})
	require.NoError(t, err)

	first, err := b.store.CreateSession(ctx, newSession("n1", 1), time.Minute)
	require.NoError(t, err)
	require.Equal(t, inventory.SessionPending, first.State)
	require.Equal(t, t0.Add(time.Minute), first.ExpiresAt)

	// A second session of the same EK supersedes the first.
	second, err := b.store.CreateSession(ctx, newSession("n1", 1), time.Minute)
	require.NoError(t, err)
	_, err = b.store.TakeSession(ctx, first.ID)
	require.ErrorIs(t, err, inventory.ErrSessionEnded)
	require.ErrorContains(t, err, "superseded")

	taken, err := b.store.TakeSession(ctx, second.ID)
	require.NoError(t, err)
	require.Equal(t, inventory.SessionConsumed, taken.State)
	_, err = b.store.TakeSession(ctx, second.ID)
	require.ErrorIs(t, err, inventory.ErrSessionEnded, "a session is taken once")

	_, err = b.store.TakeSession(ctx, "6f1c2a57-0000-4000-8000-000000000000")
	require.ErrorIs(t, err, inventory.ErrNotFound)

	byNode, byEK, err := b.store.CountSessionsSince(ctx, "n1", newSession("n1", 1).EKSHA256, t0)
	require.NoError(t, err)
	require.Equal(t, 2, byNode)
	require.Equal(t, 2, byEK)
	byNode, _, err = b.store.CountSessionsSince(ctx, "n1", nil, t0.Add(time.Second))
	require.NoError(t, err)
	require.Zero(t, byNode, "sessions before since are not counted")
}

func TestSessionExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n1", Enabled: true})
	require.NoError(t, err)
	late, err := b.store.CreateSession(ctx, newSession("n1", 1), time.Minute)
	require.NoError(t, err)

	b.clock.Advance(time.Minute) // expires_at is exclusive
	taken, err := b.store.TakeSession(ctx, late.ID)
	require.NoError(t, err)
	require.Equal(t, inventory.SessionExpired, taken.State, "an expired session is taken as expired")

	swept, err := b.store.CreateSession(ctx, newSession("n1", 2), time.Minute)
	require.NoError(t, err)
	b.clock.Advance(2 * time.Minute)
	n, err := b.store.ExpireSessions(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	_, err = b.store.TakeSession(ctx, swept.ID)
	require.ErrorIs(t, err, inventory.ErrSessionEnded)
	require.ErrorContains(t, err, "expired")
}

func TestAttestationsAreSingleUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n1", Enabled: true})
	require.NoError(t, err)
	sess, err := b.store.CreateSession(ctx, newSession("n1", 1), time.Minute)
	require.NoError(t, err)
	ak := sha256.Sum256(sess.AKPublic)
	a, err := b.store.CreateAttestation(ctx, inventory.Attestation{
		SessionID: sess.ID, NodeID: "n1", EKSHA256: sess.EKSHA256, AKSHA256: ak[:], WireGuardPublicKey: sess.WireGuardPublicKey,
	}, time.Minute)
	require.NoError(t, err)
	require.True(t, a.ConsumedAt.IsZero())

	// One attestation per session.
	_, err = b.store.CreateAttestation(ctx, inventory.Attestation{
		SessionID: sess.ID, NodeID: "n1", EKSHA256: sess.EKSHA256, AKSHA256: ak[:], WireGuardPublicKey: sess.WireGuardPublicKey,
	}, time.Minute)
	require.ErrorIs(t, err, inventory.ErrConflict)

	used, err := b.store.ConsumeAttestation(ctx, a.ID)
	require.NoError(t, err)
	require.Equal(t, t0, used.ConsumedAt)
	_, err = b.store.ConsumeAttestation(ctx, a.ID)
	require.ErrorIs(t, err, inventory.ErrAttestationSpent)

	// An unconsumed one past its expiry is spent too.
	sess2, err := b.store.CreateSession(ctx, newSession("n1", 2), time.Minute)
	require.NoError(t, err)
	a2, err := b.store.CreateAttestation(ctx, inventory.Attestation{
		SessionID: sess2.ID, NodeID: "n1", EKSHA256: sess2.EKSHA256, AKSHA256: ak[:], WireGuardPublicKey: sess2.WireGuardPublicKey,
	}, time.Minute)
	require.NoError(t, err)
	b.clock.Advance(time.Minute)
	_, err = b.store.ConsumeAttestation(ctx, a2.ID)
	require.ErrorIs(t, err, inventory.ErrAttestationSpent)
}

// TestConsumeAttestationFor: only an unconsumed, unexpired attestation of the key, whose node
// is enabled, is consumed; every other one is left as it was.
func TestConsumeAttestationFor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	unconsumed := func(id, why string) {
		t.Helper()
		got, err := b.store.GetAttestation(ctx, id)
		require.NoError(t, err)
		require.True(t, got.ConsumedAt.IsZero(), why)
	}

	a := attested(t, b, "n1", "") // its attestation and key, for node n1
	_, ok, err := b.store.ConsumeAttestationFor(ctx, a.AttestationID, bytes.Repeat([]byte{9}, 32))
	require.NoError(t, err)
	require.False(t, ok, "another key")
	unconsumed(a.AttestationID, "another key")
	_, ok, err = b.store.ConsumeAttestationFor(ctx, "00000000-0000-4000-8000-000000000000", a.WireGuardPublicKey)
	require.NoError(t, err)
	require.False(t, ok, "an unknown id")

	off := false
	_, err = b.store.UpdateNode(ctx, "n1", inventory.NodeUpdate{Enabled: &off})
	require.NoError(t, err)
	_, ok, err = b.store.ConsumeAttestationFor(ctx, a.AttestationID, a.WireGuardPublicKey)
	require.NoError(t, err)
	require.False(t, ok, "a disabled node")
	unconsumed(a.AttestationID, "a disabled node")
	on := true
	_, err = b.store.UpdateNode(ctx, "n1", inventory.NodeUpdate{Enabled: &on})
	require.NoError(t, err)

	used, ok, err := b.store.ConsumeAttestationFor(ctx, a.AttestationID, a.WireGuardPublicKey)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, a.AttestationID, used.ID)
	require.Equal(t, b.clock.Now(), used.ConsumedAt)
	_, ok, err = b.store.ConsumeAttestationFor(ctx, a.AttestationID, a.WireGuardPublicKey)
	require.NoError(t, err)
	require.False(t, ok, "consumed before")

	late := attested(t, b, "n1", "")
	b.clock.Advance(time.Minute) // expires_at is exclusive
	_, ok, err = b.store.ConsumeAttestationFor(ctx, late.AttestationID, late.WireGuardPublicKey)
	require.NoError(t, err)
	require.False(t, ok, "expired")
	unconsumed(late.AttestationID, "expired")
}

func TestBatchedSessionWritesAreAtomic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n1", Enabled: true})
	require.NoError(t, err)
	first, err := b.store.CreateSession(ctx, newSession("n1", 1), time.Minute,
		inventory.Event{NodeID: "n1", Kind: "attestation.begun", Service: "test"})
	require.NoError(t, err)

	// The same EK for a node that does not exist: the insert fails, so the supersede of the
	// first session and the event must not happen either.
	_, err = b.store.CreateSession(ctx, newSession("ghost", 1), time.Minute,
		inventory.Event{NodeID: "ghost", Kind: "attestation.begun", Service: "test"})
	require.Error(t, err)
	taken, err := b.store.TakeSession(ctx, first.ID)
	require.NoError(t, err, "the first session is still pending")
	require.Equal(t, inventory.SessionConsumed, taken.State)
	evs, err := b.store.QueryEvents(ctx, inventory.EventQuery{})
	require.NoError(t, err)
	require.Len(t, evs, 1, "only the successful batch's event")

	// CreateAttestation names the new id in its event, in the same round trip.
	a, err := b.store.CreateAttestation(ctx, inventory.Attestation{SessionID: first.ID, NodeID: "n1",
		EKSHA256: first.EKSHA256, AKSHA256: first.AKSHA256, WireGuardPublicKey: first.WireGuardPublicKey},
		time.Minute, inventory.Event{NodeID: "n1", Kind: "attestation.passed", Service: "test",
			Detail: map[string]any{inventory.AttestationIDKey: ""}})
	require.NoError(t, err)
	evs, err = b.store.QueryEvents(ctx, inventory.EventQuery{Kinds: []string{"attestation.passed"}})
	require.NoError(t, err)
	require.Equal(t, a.ID, evs[0].Detail[inventory.AttestationIDKey])
}

func TestAttestationSubjectAndCompletion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n1", Enabled: true})
	require.NoError(t, err)
	ek := newSession("n1", 1).EKSHA256

	sub, err := b.store.AttestationSubject(ctx, "n1", ek, t0)
	require.NoError(t, err)
	require.Equal(t, inventory.Subject{Enabled: true}, sub)
	_, err = b.store.AttestationSubject(ctx, "ghost", ek, t0)
	require.ErrorIs(t, err, inventory.ErrNotFound)

	_, err = b.store.CreateGroup(ctx, inventory.Group{Name: "tofu", TrustOnFirstUse: true})
	require.NoError(t, err)
	_, err = b.store.CreateGroup(ctx, inventory.Group{Name: "pinned"})
	require.NoError(t, err)
	for _, g := range []string{"tofu", "pinned"} {
		require.NoError(t, b.store.AddGroupMember(ctx, g, "n1"))
	}
	pcr := bytes.Repeat([]byte{9}, 32)
	require.NoError(t, b.store.SetPCRPolicy(ctx, "pinned", inventory.PCRPolicy{7: pcr}))
	_, _, err = b.store.Enroll(ctx, inventory.Enrollment{NodeID: "n1", EKSHA256: ek, Source: inventory.SourceAdmin})
	require.NoError(t, err)
	s, err := b.store.CreateSession(ctx, newSession("n1", 1), time.Minute)
	require.NoError(t, err)

	sub, err = b.store.AttestationSubject(ctx, "n1", ek, t0)
	require.NoError(t, err)
	require.True(t, sub.TrustOnFirstUse)
	require.NotNil(t, sub.Enrollment)
	require.Equal(t, ek, sub.Enrollment.EKSHA256)
	require.Equal(t, 1, sub.SessionsByNode)
	require.Equal(t, 1, sub.SessionsByEK)

	taken, c, err := b.store.TakeSessionForCompletion(ctx, s.ID)
	require.NoError(t, err)
	require.Equal(t, inventory.SessionConsumed, taken.State)
	require.True(t, c.NodeEnabled)
	require.Equal(t, map[string]inventory.PCRPolicy{"pinned": {7: pcr}}, c.Policies)
	_, _, err = b.store.TakeSessionForCompletion(ctx, s.ID)
	require.ErrorIs(t, err, inventory.ErrSessionEnded, "taken once")
}
