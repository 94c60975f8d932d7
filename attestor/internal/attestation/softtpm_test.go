package attestation_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/attestboot/attestboot/attestor/internal/attestation"
	"github.com/attestboot/attestboot/attestor/internal/ekpolicy"
	attestorv1 "github.com/attestboot/attestboot/proto/attestboot/attestor/v1"
	"github.com/attestboot/attestboot/services/binding"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/nodeattest"
	"github.com/attestboot/attestboot/services/softtpm"
)

// The simulator's in-process TPMs (services/softtpm) must be indistinguishable from real ones
// to the attestor: these tests run the unchanged service against them.

// softNode is a simulated machine whose TPM is a softtpm, opened through the node-side library.
type softNode struct {
	id   string
	chip *softtpm.TPM
	tpm  *nodeattest.TPM
	wg   []byte
}

func newSoftNode(t *testing.T, pool *softtpm.Pool, index int, id string) *softNode {
	t.Helper()
	chip, err := pool.TPM(index)
	require.NoError(t, err)
	ch, err := chip.Open()
	require.NoError(t, err)
	tpm, err := nodeattest.Open(ch, nodeattest.Config{AKAlgorithm: nodeattest.ECDSA})
	require.NoError(t, err)
	t.Cleanup(func() { tpm.Close() })
	wg := make([]byte, 32)
	_, err = rand.Read(wg)
	require.NoError(t, err)
	return &softNode{id: id, chip: chip, tpm: tpm, wg: wg}
}

// addSoftNode creates the node in the inventory, enabled, and enrolls its EK by hash.
func (b bundle) addSoftNode(t *testing.T, n *softNode) {
	t.Helper()
	ctx := context.Background()
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: n.id, Enabled: true})
	require.NoError(t, err)
	sum := n.chip.EKSHA256()
	_, _, err = b.store.Enroll(ctx, inventory.Enrollment{NodeID: n.id, EKSHA256: sum[:], Source: inventory.SourceAdmin})
	require.NoError(t, err)
}

func softPool(t *testing.T) *softtpm.Pool {
	t.Helper()
	pool, err := softtpm.NewPool(softtpm.Config{CacheDir: t.TempDir()})
	require.NoError(t, err)
	return pool
}

func TestSoftTPMAttestationPasses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := softPool(t)

	t.Run("enrolled EK", func(t *testing.T) {
		t.Parallel()
		b := setup(t, attestation.Config{})
		n := newSoftNode(t, pool, 0, "x1000c0s0b0n0")
		b.addSoftNode(t, n)

		res, err := n.tpm.Attest(ctx, b.client, n.id, n.wg)
		require.NoError(t, err)
		a, err := b.store.GetAttestation(ctx, res.AttestationID)
		require.NoError(t, err)
		sum := n.chip.EKSHA256()
		require.Equal(t, n.id, a.NodeID)
		require.Equal(t, sum[:], a.EKSHA256)
		require.Equal(t, n.wg, a.WireGuardPublicKey)
		require.Len(t, b.events(t, n.id, attestation.KindPassed), 1)
		require.Empty(t, b.events(t, n.id, attestation.KindRefused))
	})
	t.Run("EK certificate from the softtpm CA", func(t *testing.T) {
		t.Parallel()
		ca, err := pool.CA()
		require.NoError(t, err)
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		policy, err := ekpolicy.New(ekpolicy.Config{Roots: roots, EnrollByCA: true})
		require.NoError(t, err)
		b := setup(t, attestation.Config{EK: policy})
		n := newSoftNode(t, pool, 1, "x1000c0s0b0n1")
		_, err = b.store.CreateNode(ctx, inventory.Node{ID: n.id, Enabled: true})
		require.NoError(t, err)

		_, err = n.tpm.Attest(ctx, b.client, n.id, n.wg)
		require.NoError(t, err)
		e, err := b.store.GetEnrollment(ctx, n.id)
		require.NoError(t, err)
		require.Equal(t, inventory.SourceCA, e.Source)
		require.Equal(t, n.chip.EKCertificate().Raw, e.EKCertificate)
	})
}

func TestSoftTPMRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := softPool(t)

	// start begins an attestation of node 0; complete builds its answer with the quote of
	// quoter (which may be another TPM) and lets the test change it before sending.
	start := func(t *testing.T) (bundle, *softNode, *attestorv1.BeginAttestationResponse) {
		b := setup(t, attestation.Config{})
		n := newSoftNode(t, pool, 0, "n1")
		b.addSoftNode(t, n)
		begin, err := b.client.BeginAttestation(ctx, n.tpm.BeginRequest(n.id, n.wg))
		require.NoError(t, err)
		return b, n, begin
	}
	complete := func(t *testing.T, n, quoter *softNode, begin *attestorv1.BeginAttestationResponse) *attestorv1.CompleteAttestationRequest {
		secret, err := n.tpm.Activate(begin.GetCredential())
		require.NoError(t, err)
		extra, err := binding.ExtraData(begin.GetNonce(), n.wg, n.id)
		require.NoError(t, err)
		q, pcrs, err := quoter.tpm.Quote(extra)
		require.NoError(t, err)
		return &attestorv1.CompleteAttestationRequest{
			SessionId: begin.GetSessionId(), Secret: secret, Quotes: []*attestorv1.Quote{q}, Pcrs: pcrs,
		}
	}

	t.Run("quote signed by the AK of another TPM", func(t *testing.T) {
		t.Parallel()
		b, n, begin := start(t)
		thief := newSoftNode(t, pool, 1, "n2")
		_, err := b.client.CompleteAttestation(ctx, complete(t, n, thief, begin))
		requireRefused(t, b, err, n.id, codes.PermissionDenied, attestation.ReasonQuoteSignature)
	})
	t.Run("PCR value altered after the quote", func(t *testing.T) {
		t.Parallel()
		b, n, begin := start(t)
		req := complete(t, n, n, begin)
		req.Pcrs[7].Digest = bytes.Repeat([]byte{0xab}, 32)
		_, err := b.client.CompleteAttestation(ctx, req)
		requireRefused(t, b, err, n.id, codes.PermissionDenied, attestation.ReasonQuoteSignature)
	})
	t.Run("credential activated by another TPM", func(t *testing.T) {
		t.Parallel()
		b, n, begin := start(t)
		other := newSoftNode(t, pool, 1, "n2")
		// The other TPM cannot even decrypt the credential made for node 0's EK.
		_, err := other.tpm.Activate(begin.GetCredential())
		require.Error(t, err)
		// Nor can a TPM that claims node 0's identity with its own EK begin at all.
		_, err = b.client.BeginAttestation(ctx, other.tpm.BeginRequest(n.id, other.wg))
		requireRefused(t, b, err, n.id, codes.PermissionDenied, attestation.ReasonEKMismatch)
	})
}
