package inventory_test

import (
	"context"
	"crypto/sha256"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

func TestEnrollment(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	for _, id := range []string{"n1", "n2"} {
		_, err := b.store.CreateNode(ctx, inventory.Node{ID: id, Enabled: true})
		require.NoError(t, err)
	}
	ek1 := sha256.Sum256([]byte("EK one"))
	ek2 := sha256.Sum256([]byte("EK two"))

	e, created, err := b.store.Enroll(ctx, inventory.Enrollment{
		NodeID: "n1", EKSHA256: ek1[:], EKPublic: []byte("pkix"), Source: inventory.SourceAdmin,
	})
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, inventory.Enrollment{NodeID: "n1", EKSHA256: ek1[:], EKPublic: []byte("pkix"),
		Source: inventory.SourceAdmin, CreatedAt: t0}, e)
	require.Nil(t, e.EKCertificate)

	// Same EK again: idempotent, the original enrollment comes back.
	again, created, err := b.store.Enroll(ctx, inventory.Enrollment{NodeID: "n1", EKSHA256: ek1[:], Source: inventory.SourceTOFU})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, e, again)

	// Another EK for the same node: refused.
	_, _, err = b.store.Enroll(ctx, inventory.Enrollment{NodeID: "n1", EKSHA256: ek2[:], Source: inventory.SourceAdmin})
	require.ErrorIs(t, err, inventory.ErrConflict)
	// The same EK for another node: refused.
	_, _, err = b.store.Enroll(ctx, inventory.Enrollment{NodeID: "n2", EKSHA256: ek1[:], Source: inventory.SourceAdmin})
	require.ErrorIs(t, err, inventory.ErrConflict)
	require.ErrorContains(t, err, "ek_enrollments_ek_sha256_key")
	// Unknown node, malformed hash, unknown source.
	_, _, err = b.store.Enroll(ctx, inventory.Enrollment{NodeID: "ghost", EKSHA256: ek2[:], Source: inventory.SourceAdmin})
	require.ErrorIs(t, err, inventory.ErrNotFound)
	_, _, err = b.store.Enroll(ctx, inventory.Enrollment{NodeID: "n2", EKSHA256: ek2[:16], Source: inventory.SourceAdmin})
	require.ErrorIs(t, err, inventory.ErrInvalid)
	_, _, err = b.store.Enroll(ctx, inventory.Enrollment{NodeID: "n2", EKSHA256: ek2[:], Source: "guess"})
	require.ErrorIs(t, err, inventory.ErrInvalid)
	require.ErrorContains(t, err, "ek_enrollments_source_valid")

	got, err := b.store.GetEnrollment(ctx, "n1")
	require.NoError(t, err)
	require.Equal(t, e, got)
	got, err = b.store.GetEnrollmentByEK(ctx, ek1[:])
	require.NoError(t, err)
	require.Equal(t, e, got)
	_, err = b.store.GetEnrollment(ctx, "n2")
	require.ErrorIs(t, err, inventory.ErrNotFound)
	_, err = b.store.GetEnrollmentByEK(ctx, ek2[:])
	require.ErrorIs(t, err, inventory.ErrNotFound)

	// The binding cannot be rewritten in place, whoever tries.
	err = rawErr(t, b, `UPDATE ek_enrollments SET ek_sha256 = $1 WHERE node_id = 'n1'`, ek2[:])
	require.ErrorIs(t, err, inventory.ErrConflict)
	require.ErrorContains(t, err, "ek_enrollments_binding_immutable")
	err = rawErr(t, b, `UPDATE ek_enrollments SET node_id = 'n2' WHERE node_id = 'n1'`)
	require.ErrorContains(t, err, "ek_enrollments_binding_immutable")
	// Attaching a certificate later does not touch the binding and is allowed.
	_, err = b.pool.Exec(ctx, `UPDATE ek_enrollments SET ek_certificate = '\x3082' WHERE node_id = 'n1'`)
	require.NoError(t, err)

	// Delete + enroll is the way to change it.
	require.NoError(t, b.store.DeleteEnrollment(ctx, "n1"))
	require.ErrorIs(t, b.store.DeleteEnrollment(ctx, "n1"), inventory.ErrNotFound)
	e, created, err = b.store.Enroll(ctx, inventory.Enrollment{NodeID: "n1", EKSHA256: ek2[:], Source: inventory.SourceCA,
		EKCertificate: []byte{0x30, 0x82}})
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, ek2[:], e.EKSHA256)
	require.Equal(t, []byte{0x30, 0x82}, e.EKCertificate)
}

func TestEnrolledNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	for _, id := range []string{"n1", "n2"} {
		_, err := b.store.CreateNode(ctx, inventory.Node{ID: id})
		require.NoError(t, err)
	}
	ek := sha256.Sum256([]byte("EK"))
	_, _, err := b.store.Enroll(ctx, inventory.Enrollment{NodeID: "n2", EKSHA256: ek[:], Source: inventory.SourceAdmin})
	require.NoError(t, err)

	got, err := b.store.EnrolledNodes(ctx, []string{"n1", "n2", "ghost"})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"n2": true}, got)

	got, err = b.store.EnrolledNodes(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, got)
}
