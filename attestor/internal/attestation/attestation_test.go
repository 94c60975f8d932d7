package attestation_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/attestboot/attestboot/attestor/internal/attestation"
	"github.com/attestboot/attestboot/attestor/internal/ekpolicy"
	attestorv1 "github.com/attestboot/attestboot/proto/attestboot/attestor/v1"
	"github.com/attestboot/attestboot/services/binding"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/nodeattest"
	"github.com/attestboot/attestboot/services/tpmtest"
	"github.com/attestboot/attestboot/services/tunneltest"
)

func TestAttestationPasses(t *testing.T) {
	t.Parallel()
	for _, alg := range []nodeattest.Algorithm{nodeattest.ECDSA, nodeattest.RSA} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			b := setup(t, attestation.Config{})
			n := newNode(t, "x1000c0s0b0n0", alg)
			b.addNode(t, n)

			res, err := n.tpm.Attest(context.Background(), b.client, n.id, n.wg)
			require.NoError(t, err)
			require.Equal(t, b.clock.Now().Add(60*time.Second), res.ExpiresAt)

			a, err := b.store.GetAttestation(context.Background(), res.AttestationID)
			require.NoError(t, err)
			sum := n.swtpm.EKSHA256()
			require.Equal(t, n.id, a.NodeID)
			require.Equal(t, sum[:], a.EKSHA256)
			require.Equal(t, n.wg, a.WireGuardPublicKey, "the attestation is bound to the quoted WireGuard key")
			require.True(t, a.ConsumedAt.IsZero())
			require.Len(t, b.events(t, n.id, attestation.KindBegun), 1)
			passed := b.events(t, n.id, attestation.KindPassed)
			require.Len(t, passed, 1)
			require.Equal(t, res.AttestationID, passed[0].Detail["attestation_id"])
			require.Empty(t, b.events(t, n.id, attestation.KindRefused))
		})
	}
}

// requireRefused checks the caller saw only the code, the event log names the precise reason,
// and no attestation was recorded.
func requireRefused(t *testing.T, b bundle, err error, nodeID string, code codes.Code, reason string) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, code, st.Code(), "%v", err)
	require.NotContains(t, st.Message(), reason, "the caller must not learn the reason")
	evs := b.events(t, nodeID, attestation.KindRefused)
	require.NotEmpty(t, evs, "a refusal is an event")
	require.Equal(t, reason, evs[len(evs)-1].Reason)
	require.Zero(t, b.countAttestations(t), "a refusal records no attestation")
}

func TestBeginRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("unknown node", func(t *testing.T) {
		t.Parallel()
		b := setup(t, attestation.Config{})
		n := newNode(t, "ghost", nodeattest.ECDSA)
		_, err := b.begin(t, n)
		requireRefused(t, b, err, n.id, codes.PermissionDenied, attestation.ReasonNodeUnknown)
	})
	t.Run("unenrolled node", func(t *testing.T) {
		t.Parallel()
		b := setup(t, attestation.Config{})
		n := newNode(t, "n1", nodeattest.ECDSA)
		_, err := b.store.CreateNode(ctx, inventory.Node{ID: n.id, Enabled: true})
		require.NoError(t, err)
		_, err = b.begin(t, n)
		requireRefused(t, b, err, n.id, codes.PermissionDenied, attestation.ReasonNotEnrolled)
		_, err = b.store.GetEnrollment(ctx, n.id)
		require.ErrorIs(t, err, inventory.ErrNotFound, "nothing enrolled by a refusal")
	})
	t.Run("disabled node", func(t *testing.T) {
		t.Parallel()
		b := setup(t, attestation.Config{})
		n := newNode(t, "n1", nodeattest.ECDSA)
		b.addNode(t, n)
		_, err := b.store.DisableNode(ctx, n.id)
		require.NoError(t, err)
		_, err = b.begin(t, n)
		requireRefused(t, b, err, n.id, codes.PermissionDenied, attestation.ReasonNodeDisabled)
	})
	t.Run("TPM B presents itself as node A", func(t *testing.T) {
		t.Parallel()
		b := setup(t, attestation.Config{})
		a := newNode(t, "node-a", nodeattest.ECDSA)
		b.addNode(t, a)
		impostor := newNode(t, "node-a", nodeattest.ECDSA) // another TPM claiming A's id
		_, err := b.begin(t, impostor)
		requireRefused(t, b, err, a.id, codes.PermissionDenied, attestation.ReasonEKMismatch)
	})
	t.Run("EK certificate from an untrusted CA", func(t *testing.T) {
		t.Parallel()
		policy, err := ekpolicy.New(ekpolicy.Config{Roots: otherCA(t)})
		require.NoError(t, err)
		b := setup(t, attestation.Config{EK: policy})
		n := newNode(t, "n1", nodeattest.ECDSA)
		b.addNode(t, n)
		_, err = b.begin(t, n)
		requireRefused(t, b, err, n.id, codes.PermissionDenied, attestation.ReasonEKCertUntrusted)
	})
	t.Run("EK certificate whose key differs from the EK", func(t *testing.T) {
		t.Parallel()
		b := setup(t, attestation.Config{})
		n := newNode(t, "n1", nodeattest.ECDSA)
		other := newNode(t, "n2", nodeattest.ECDSA)
		b.addNode(t, n)
		req := n.tpm.BeginRequest(n.id, n.wg)
		req.EndorsementKey.Certificate = other.swtpm.EKCertificate().Raw
		_, err := b.client.BeginAttestation(ctx, req)
		requireRefused(t, b, err, n.id, codes.PermissionDenied, attestation.ReasonEKCertMismatch)
	})
	t.Run("non-restricted signing key as the AK", func(t *testing.T) {
		t.Parallel()
		b := setup(t, attestation.Config{})
		n := newNode(t, "n1", nodeattest.ECDSA)
		b.addNode(t, n)
		req := n.tpm.BeginRequest(n.id, n.wg)
		req.AttestationKey = unrestrictedKey(t)
		_, err := b.client.BeginAttestation(ctx, req)
		requireRefused(t, b, err, n.id, codes.PermissionDenied, attestation.ReasonAKUnfit)
	})
	t.Run("malformed WireGuard key", func(t *testing.T) {
		t.Parallel()
		b := setup(t, attestation.Config{})
		n := newNode(t, "n1", nodeattest.ECDSA)
		b.addNode(t, n)
		_, err := b.client.BeginAttestation(ctx, n.tpm.BeginRequest(n.id, n.wg[:31]))
		requireRefused(t, b, err, n.id, codes.InvalidArgument, attestation.ReasonInvalidRequest)
	})
	t.Run("too many attempts", func(t *testing.T) {
		t.Parallel()
		b := setup(t, attestation.Config{MaxPerNode: 3, MaxPerEK: 3})
		n := newNode(t, "n1", nodeattest.ECDSA)
		b.addNode(t, n)
		for range 3 {
			_, err := b.begin(t, n)
			require.NoError(t, err)
		}
		_, err := b.begin(t, n)
		requireRefused(t, b, err, n.id, codes.ResourceExhausted, attestation.ReasonRateLimitedNode)
		// The window slides: a minute later the node may try again.
		b.clock.Advance(61 * time.Second)
		_, err = b.begin(t, n)
		require.NoError(t, err)
	})
}

// TestAdmissionControl: beyond -max-in-flight sessions, BeginAttestation turns nodes away with
// ResourceExhausted and a retry hint, before any work and without a session; a completed
// session, or a Begin that was refused, frees its place.
func TestAdmissionControl(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, attestation.Config{MaxInFlight: 1, RetryAfter: 3 * time.Second})
	n1, n2 := newNode(t, "n1", nodeattest.ECDSA), newNode(t, "n2", nodeattest.ECDSA)
	b.addNode(t, n1)
	b.addNode(t, n2)

	// A refused Begin gives its place back at once.
	_, err := b.client.BeginAttestation(ctx, n1.tpm.BeginRequest("unknown", n1.wg))
	require.Equal(t, codes.PermissionDenied, status.Code(err))

	require.Zero(t, inFlight(t, b))
	begin, err := b.begin(t, n1)
	require.NoError(t, err)
	require.EqualValues(t, 1, inFlight(t, b), "the gauge shows the session in flight")
	_, err = b.begin(t, n2)
	requireRefused(t, b, err, n2.id, codes.ResourceExhausted, attestation.ReasonOverloaded)
	var hint *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if h, ok := d.(*errdetails.RetryInfo); ok {
			hint = h
		}
	}
	require.NotNil(t, hint, "the refusal says when to retry")
	require.Equal(t, 3*time.Second, hint.GetRetryDelay().AsDuration())
	require.Empty(t, b.events(t, n2.id, attestation.KindBegun), "no session for a node turned away")

	req, err := n1.tpm.CompleteRequest(begin, n1.id, n1.wg)
	require.NoError(t, err)
	_, err = b.client.CompleteAttestation(ctx, req)
	require.NoError(t, err)
	require.Zero(t, inFlight(t, b))
	_, err = b.begin(t, n2)
	require.NoError(t, err, "the completed session freed its place")
}

// inFlight reads the attestboot_attestations_in_flight gauge of b's service.
func inFlight(t *testing.T, b bundle) float64 {
	t.Helper()
	return gauge(t, b, "attestboot_attestations_in_flight")
}

// gauge reads a gauge of b's service.
func gauge(t *testing.T, b bundle, name string) float64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s gauge", name)
	return 0
}

// TestAdmissionFollowsOpenTunnels: at -max-open-tunnels open tunnels (any gateway) the window
// shrinks to a sixteenth of -max-in-flight, and opens again once they have closed.
func TestAdmissionFollowsOpenTunnels(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, attestation.Config{MaxInFlight: 16, MaxOpenTunnels: 2})
	_, err := b.store.UpsertGateway(ctx, inventory.Gateway{
		Name: "gw", PublicKey: bytes.Repeat([]byte{7}, 32), Endpoint: "127.0.0.1:51820",
		IPv4Pool: netip.MustParsePrefix("100.64.0.0/24"), AddressV4: netip.MustParseAddr("100.64.0.1"),
	})
	require.NoError(t, err)
	var tunnels []inventory.Tunnel
	for _, id := range []string{"busy1", "busy2"} {
		_, err := b.store.CreateNode(ctx, inventory.Node{ID: id, Enabled: true})
		require.NoError(t, err)
		tunnels = append(tunnels, tunneltest.Open(t, b.store, id, "gw", nil))
	}
	n1, n2 := newNode(t, "n1", nodeattest.ECDSA), newNode(t, "n2", nodeattest.ECDSA)
	b.addNode(t, n1)
	b.addNode(t, n2)

	_, err = b.begin(t, n1)
	require.NoError(t, err, "a sixteenth of 16 places: one")
	require.EqualValues(t, 1, gauge(t, b, "attestboot_attestation_admission_limit"))
	_, err = b.begin(t, n2)
	require.Equal(t, codes.ResourceExhausted, status.Code(err))
	evs := b.events(t, n2.id, attestation.KindRefused)
	require.Len(t, evs, 1)
	require.Equal(t, attestation.ReasonOverloaded, evs[0].Reason)

	for _, tun := range tunnels {
		_, _, err := b.store.CloseTunnel(ctx, tun.ID, inventory.TunnelClosed, "phone_home")
		require.NoError(t, err)
	}
	// Open tunnels are counted at most every half second: the next Begin after that sees none.
	time.Sleep(600 * time.Millisecond)
	_, err = b.begin(t, n2)
	require.NoError(t, err, "the tunnels closed: the whole window again")
	require.EqualValues(t, 16, gauge(t, b, "attestboot_attestation_admission_limit"))
}

func TestCompleteRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// started is a node that passed BeginAttestation.
	type started struct {
		b     bundle
		n     *node
		begin *attestorv1.BeginAttestationResponse
	}
	start := func(t *testing.T) started {
		b := setup(t, attestation.Config{})
		n := newNode(t, "n1", nodeattest.ECDSA)
		b.addNode(t, n)
		begin, err := b.begin(t, n)
		require.NoError(t, err)
		return started{b, n, begin}
	}
	// quoteOver builds a complete request with a correct activation but a quote over extra data
	// of the test's choosing.
	quoteOver := func(t *testing.T, s started, quoter *node, nonce, wg []byte, nodeID string) *attestorv1.CompleteAttestationRequest {
		secret, err := s.n.tpm.Activate(s.begin.GetCredential())
		require.NoError(t, err)
		extra, err := binding.ExtraData(nonce, wg, nodeID)
		require.NoError(t, err)
		q, pcrs, err := quoter.tpm.Quote(extra)
		require.NoError(t, err)
		return &attestorv1.CompleteAttestationRequest{
			SessionId: s.begin.GetSessionId(), Secret: secret, Quotes: []*attestorv1.Quote{q}, Pcrs: pcrs,
		}
	}
	other := func(b []byte) []byte {
		o := bytes.Clone(b)
		o[0] ^= 0xff
		return o
	}

	t.Run("replayed session", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		req, err := s.n.tpm.CompleteRequest(s.begin, s.n.id, s.n.wg)
		require.NoError(t, err)
		replay := proto.Clone(req).(*attestorv1.CompleteAttestationRequest)
		_, err = s.b.client.CompleteAttestation(ctx, req)
		require.NoError(t, err)
		_, err = s.b.client.CompleteAttestation(ctx, replay)
		require.Equal(t, codes.FailedPrecondition, status.Code(err))
		evs := s.b.events(t, s.n.id, attestation.KindRefused)
		require.Len(t, evs, 1)
		require.Equal(t, attestation.ReasonSessionReplayed, evs[0].Reason)
		require.Equal(t, 1, s.b.countAttestations(t), "the replay recorded nothing")
	})
	t.Run("superseded session", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		req, err := s.n.tpm.CompleteRequest(s.begin, s.n.id, s.n.wg)
		require.NoError(t, err)
		_, err = s.b.begin(t, s.n) // a newer session of the same EK
		require.NoError(t, err)
		_, err = s.b.client.CompleteAttestation(ctx, req)
		requireRefused(t, s.b, err, s.n.id, codes.FailedPrecondition, attestation.ReasonSessionReplaced)
	})
	t.Run("expired session", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		req, err := s.n.tpm.CompleteRequest(s.begin, s.n.id, s.n.wg)
		require.NoError(t, err)
		s.b.clock.Advance(61 * time.Second)
		_, err = s.b.client.CompleteAttestation(ctx, req)
		requireRefused(t, s.b, err, s.n.id, codes.FailedPrecondition, attestation.ReasonSessionExpired)
	})
	t.Run("unknown session", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		req, err := s.n.tpm.CompleteRequest(s.begin, s.n.id, s.n.wg)
		require.NoError(t, err)
		req.SessionId = "8a4e5f0c-1d2b-4c3a-9e8f-7a6b5c4d3e2f"
		_, err = s.b.client.CompleteAttestation(ctx, req)
		requireRefused(t, s.b, err, "", codes.FailedPrecondition, attestation.ReasonSessionUnknown)
	})
	t.Run("wrong secret", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		req, err := s.n.tpm.CompleteRequest(s.begin, s.n.id, s.n.wg)
		require.NoError(t, err)
		req.Secret = other(req.Secret)
		_, err = s.b.client.CompleteAttestation(ctx, req)
		requireRefused(t, s.b, err, s.n.id, codes.PermissionDenied, attestation.ReasonSecretMismatch)
		// The session is spent: the right secret cannot be tried again.
		good, err := s.n.tpm.CompleteRequest(s.begin, s.n.id, s.n.wg)
		require.NoError(t, err)
		_, err = s.b.client.CompleteAttestation(ctx, good)
		require.Equal(t, codes.FailedPrecondition, status.Code(err))
	})
	t.Run("quote over another nonce", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		req := quoteOver(t, s, s.n, other(s.begin.GetNonce()), s.n.wg, s.n.id)
		_, err := s.b.client.CompleteAttestation(ctx, req)
		requireRefused(t, s.b, err, s.n.id, codes.PermissionDenied, attestation.ReasonQuoteBinding)
	})
	t.Run("quote binding another WireGuard key", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		req := quoteOver(t, s, s.n, s.begin.GetNonce(), other(s.n.wg), s.n.id)
		_, err := s.b.client.CompleteAttestation(ctx, req)
		requireRefused(t, s.b, err, s.n.id, codes.PermissionDenied, attestation.ReasonQuoteBinding)
	})
	t.Run("quote binding another node id", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		req := quoteOver(t, s, s.n, s.begin.GetNonce(), s.n.wg, "n2")
		_, err := s.b.client.CompleteAttestation(ctx, req)
		requireRefused(t, s.b, err, s.n.id, codes.PermissionDenied, attestation.ReasonQuoteBinding)
	})
	t.Run("quote signed by an AK of another TPM", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		thief := newNode(t, "n2", nodeattest.ECDSA)
		req := quoteOver(t, s, thief, s.begin.GetNonce(), s.n.wg, s.n.id)
		_, err := s.b.client.CompleteAttestation(ctx, req)
		requireRefused(t, s.b, err, s.n.id, codes.PermissionDenied, attestation.ReasonQuoteSignature)
	})
	t.Run("PCR values altered after the quote", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		req, err := s.n.tpm.CompleteRequest(s.begin, s.n.id, s.n.wg)
		require.NoError(t, err)
		req.Pcrs[7].Digest = other(req.Pcrs[7].Digest)
		_, err = s.b.client.CompleteAttestation(ctx, req)
		requireRefused(t, s.b, err, s.n.id, codes.PermissionDenied, attestation.ReasonQuoteSignature)
	})
	t.Run("malformed quote", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		req, err := s.n.tpm.CompleteRequest(s.begin, s.n.id, s.n.wg)
		require.NoError(t, err)
		req.Quotes[0].Quote = []byte("not a TPMS_ATTEST")
		_, err = s.b.client.CompleteAttestation(ctx, req)
		requireRefused(t, s.b, err, s.n.id, codes.InvalidArgument, attestation.ReasonQuoteMalformed)
	})
}

func TestPCRPolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, attestation.Config{})
	n := newNode(t, "n1", nodeattest.ECDSA)
	b.addNode(t, n)
	_, err := b.store.CreateGroup(ctx, inventory.Group{Name: "compute"})
	require.NoError(t, err)
	require.NoError(t, b.store.AddGroupMember(ctx, "compute", n.id))

	// What the node's TPM measures now: the image operators pin.
	_, pcrs, err := n.tpm.Quote(make([]byte, 32))
	require.NoError(t, err)
	require.NoError(t, b.store.SetPCRPolicy(ctx, "compute", inventory.PCRPolicy{0: pcrs[0].Digest, 7: pcrs[7].Digest}))
	_, err = n.tpm.Attest(ctx, b.client, n.id, n.wg)
	require.NoError(t, err, "the pinned image passes")

	bad := bytes.Repeat([]byte{0xab}, 32)
	require.NoError(t, b.store.SetPCRPolicy(ctx, "compute", inventory.PCRPolicy{0: pcrs[0].Digest, 7: bad}))
	_, err = n.tpm.Attest(ctx, b.client, n.id, n.wg)
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	evs := b.events(t, n.id, attestation.KindRefused)
	require.Len(t, evs, 1)
	require.Equal(t, attestation.ReasonPCRPolicy, evs[0].Reason)
	require.Equal(t, 1, b.countAttestations(t), "only the pinned boot passed")
}

func TestEnrollmentPolicies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("trust on first use is a group's explicit opt-in", func(t *testing.T) {
		t.Parallel()
		b := setup(t, attestation.Config{})
		n := newNode(t, "n1", nodeattest.ECDSA)
		_, err := b.store.CreateNode(ctx, inventory.Node{ID: n.id, Enabled: true})
		require.NoError(t, err)
		_, err = b.store.CreateGroup(ctx, inventory.Group{Name: "new-rack", TrustOnFirstUse: true})
		require.NoError(t, err)
		require.NoError(t, b.store.AddGroupMember(ctx, "new-rack", n.id))

		_, err = n.tpm.Attest(ctx, b.client, n.id, n.wg)
		require.NoError(t, err)
		e, err := b.store.GetEnrollment(ctx, n.id)
		require.NoError(t, err)
		require.Equal(t, inventory.SourceTOFU, e.Source)
		sum := n.swtpm.EKSHA256()
		require.Equal(t, sum[:], e.EKSHA256)
		require.Len(t, b.events(t, n.id, attestation.KindEnroll), 1)

		// The first EK is now the node's: another TPM is refused.
		impostor := newNode(t, n.id, nodeattest.ECDSA)
		_, err = b.begin(t, impostor)
		require.Equal(t, codes.PermissionDenied, status.Code(err))
		evs := b.events(t, n.id, attestation.KindRefused)
		require.Equal(t, attestation.ReasonEKMismatch, evs[len(evs)-1].Reason)
	})
	t.Run("manufacturer CA", func(t *testing.T) {
		t.Parallel()
		n := newNode(t, "n1", nodeattest.RSA)
		policy, err := ekpolicy.New(ekpolicy.Config{
			Roots: n.swtpm.RootCAs(), Intermediates: n.swtpm.Intermediates(), EnrollByCA: true,
		})
		require.NoError(t, err)
		b := setup(t, attestation.Config{EK: policy})
		_, err = b.store.CreateNode(ctx, inventory.Node{ID: n.id, Enabled: true})
		require.NoError(t, err)
		_, err = n.tpm.Attest(ctx, b.client, n.id, n.wg)
		require.NoError(t, err)
		e, err := b.store.GetEnrollment(ctx, n.id)
		require.NoError(t, err)
		require.Equal(t, inventory.SourceCA, e.Source)
		require.Equal(t, n.swtpm.EKCertificate().Raw, e.EKCertificate)
	})
}

// otherCA is a CA that never signed any swtpm EK certificate.
func otherCA(t *testing.T) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the TPM maker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// unrestrictedKey makes, in a real TPM, a signing key that can sign anything (not restricted),
// with genuine creation data certified by itself: everything an AK has except restriction.
func unrestrictedKey(t *testing.T) *attestorv1.AttestationParameters {
	t.Helper()
	sw := tpmtest.Start(t)
	ch, err := sw.Open()
	require.NoError(t, err)
	defer ch.Close()
	tmpl := tpm2.Public{
		Type:    tpm2.AlgECC,
		NameAlg: tpm2.AlgSHA256,
		Attributes: tpm2.FlagSign | tpm2.FlagFixedTPM | tpm2.FlagFixedParent |
			tpm2.FlagSensitiveDataOrigin | tpm2.FlagUserWithAuth | tpm2.FlagNoDA,
		ECCParameters: &tpm2.ECCParams{
			Sign:    &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256},
			CurveID: tpm2.CurveNISTP256,
		},
	}
	h, pub, createData, createHash, ticket, _, err := tpm2.CreatePrimaryEx(ch, tpm2.HandleOwner, tpm2.PCRSelection{}, "", "", tmpl)
	require.NoError(t, err)
	defer tpm2.FlushContext(ch, h)
	att, sig, err := tpm2.CertifyCreation(ch, "", h, h, nil, createHash, tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256}, ticket)
	require.NoError(t, err)
	decoded, err := tpm2.DecodePublic(pub)
	require.NoError(t, err)
	require.Zero(t, decoded.Attributes&tpm2.FlagRestricted, "the key really is unrestricted")
	return &attestorv1.AttestationParameters{Public: pub, CreateData: createData, CreateAttestation: att, CreateSignature: sig}
}
