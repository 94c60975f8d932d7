package admin_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/tpmtest"
)

func TestEnrollment(t *testing.T) {
	t.Parallel()
	// Real EK certificates, as swtpm's manufacturing makes them (RSA and ECC EKs).
	tpms := tpmtest.StartN(t, 2)
	e := setup(t)
	ctx := ctxT(t)
	createNodes(t, e, "n1", "n2", "n3")

	sum0, sum1 := tpms[0].EKSHA256(), tpms[1].EKSHA256()
	cert0 := tpms[0].EKCertificate().Raw
	pub1, err := x509.MarshalPKIXPublicKey(tpms[1].EKPublicKey())
	require.NoError(t, err)

	enroll := func(req *inventoryv1.EnrollNodeRequest) (*inventoryv1.Enrollment, error) {
		t.Helper()
		resp, err := e.client.EnrollNode(ctx, req)
		return resp.GetEnrollment(), err
	}

	// By certificate: the binding is the PKIX SHA-256 of the certified key, as the attestor
	// computes it from what a node presents.
	enr, err := enroll(byCert("n1", cert0))
	require.NoError(t, err)
	require.Equal(t, sum0[:], enr.GetEkSha256())
	require.Equal(t, cert0, enr.GetEkCertificate())
	require.Equal(t, inventoryv1.EnrollmentSource_ENROLLMENT_SOURCE_ADMIN, enr.GetSource())
	got, err := e.client.GetEnrollment(ctx, &inventoryv1.GetEnrollmentRequest{NodeId: "n1"})
	require.NoError(t, err)
	require.Equal(t, enr.GetEkSha256(), got.GetEnrollment().GetEkSha256())
	node, err := e.client.GetNode(ctx, &inventoryv1.GetNodeRequest{Id: "n1"})
	require.NoError(t, err)
	require.True(t, node.GetNode().GetEnrolled())

	// The same EK again, in another form: idempotent, nothing new recorded.
	again, err := enroll(byHash("n1", sum0))
	require.NoError(t, err)
	require.Equal(t, enr.GetCreateTime().AsTime(), again.GetCreateTime().AsTime())

	// Another EK for n1: refused until the enrollment is deleted.
	_, err = enroll(byKey("n1", pub1))
	requireCode(t, err, codes.AlreadyExists, "DeleteEnrollment", hex.EncodeToString(sum0[:]))
	_, err = e.client.DeleteEnrollment(ctx, &inventoryv1.DeleteEnrollmentRequest{NodeId: "n1", Reason: "TPM replaced (ticket 42)"})
	require.NoError(t, err)
	_, err = e.client.GetEnrollment(ctx, &inventoryv1.GetEnrollmentRequest{NodeId: "n1"})
	requireCode(t, err, codes.NotFound)
	_, err = e.client.DeleteEnrollment(ctx, &inventoryv1.DeleteEnrollmentRequest{NodeId: "n1", Reason: "again"})
	requireCode(t, err, codes.NotFound)

	// By public key, after the deletion.
	enr, err = enroll(byKey("n1", pub1))
	require.NoError(t, err)
	require.Equal(t, sum1[:], enr.GetEkSha256())
	require.Empty(t, enr.GetEkCertificate())

	// By hash: the first TPM's EK is free again and goes to n2.
	enr, err = enroll(byHash("n2", sum0))
	require.NoError(t, err)
	require.Equal(t, sum0[:], enr.GetEkSha256())

	// An EK belongs to one node.
	_, err = enroll(byHash("n3", sum1))
	requireCode(t, err, codes.AlreadyExists, `already enrolled for node "n1"`)
	// An ECC EK certificate works as well as an RSA one.
	enr, err = enroll(byCert("n3", tpms[1].ECCEKCertificate().Raw))
	require.NoError(t, err)
	require.Len(t, enr.GetEkSha256(), 32)
	require.NotEqual(t, sum1[:], enr.GetEkSha256())
	// No such node.
	_, err = enroll(byHash("ghost", sha256.Sum256([]byte("unknown EK"))))
	requireCode(t, err, codes.NotFound, "ghost")

	// Deleting a node takes its enrollment along and says which EK it was.
	_, err = e.client.DeleteNode(ctx, &inventoryv1.DeleteNodeRequest{Id: "n1"})
	require.NoError(t, err)

	events := e.events(t, inventory.EventQuery{KindPrefixes: []string{"enrollment.", "node.deleted"}})
	type summary struct{ node, kind, reason, method, ek string }
	var summaries []summary
	for _, ev := range events {
		method, _ := ev.Detail["method"].(string)
		ek, _ := ev.Detail["ek_sha256"].(string)
		summaries = append(summaries, summary{ev.NodeID, ev.Kind, ev.Reason, method, ek})
		require.Equal(t, adminPrincipal, ev.Detail["admin"])
	}
	h := func(s [32]byte) string { return hex.EncodeToString(s[:]) }
	require.Equal(t, []summary{
		{"n1", "enrollment.created", "", "certificate", h(sum0)},
		{"n1", "enrollment.deleted", "TPM replaced (ticket 42)", "", h(sum0)},
		{"n1", "enrollment.created", "", "public_key", h(sum1)},
		{"n2", "enrollment.created", "", "sha256", h(sum0)},
		{"n3", "enrollment.created", "", "certificate", hex.EncodeToString(enr.GetEkSha256())},
		{"n1", "node.deleted", "", "", h(sum1)},
	}, summaries)
	require.Contains(t, events[0].Detail["ek_certificate_issuer"], "CN=")
}

func byCert(node string, der []byte) *inventoryv1.EnrollNodeRequest {
	return &inventoryv1.EnrollNodeRequest{NodeId: node, Ek: &inventoryv1.EnrollNodeRequest_EkCertificate{EkCertificate: der}}
}

func byKey(node string, der []byte) *inventoryv1.EnrollNodeRequest {
	return &inventoryv1.EnrollNodeRequest{NodeId: node, Ek: &inventoryv1.EnrollNodeRequest_EkPublicKey{EkPublicKey: der}}
}

func byHash(node string, sum [32]byte) *inventoryv1.EnrollNodeRequest {
	return &inventoryv1.EnrollNodeRequest{NodeId: node, Ek: &inventoryv1.EnrollNodeRequest_EkSha256{EkSha256: sum[:]}}
}
