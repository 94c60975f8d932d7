package softtpm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"testing"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/attestboot/attestboot/services/ekcert"
	"github.com/attestboot/attestboot/services/softtpm"
	"github.com/attestboot/attestboot/services/tpmconn"
)

// wantPCR is a freshly started TPM's SHA-256 PCR i.
func wantPCR(i int) []byte {
	if i >= 17 && i <= 22 {
		return bytes.Repeat([]byte{0xFF}, 32)
	}
	return make([]byte, 32)
}

// TestAttestationFlow runs the node side of attestation (what services/nodeattest does)
// against a softtpm and checks every result with go-attestation's own verifier.
func TestAttestationFlow(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	tpm := newTPM(t, pool, 0)
	for _, alg := range []attest.Algorithm{attest.ECDSA, attest.RSA} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			ch := open(t, tpm)
			at, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: ch})
			require.NoError(t, err)

			eks, err := at.EKs()
			require.NoError(t, err)
			require.Len(t, eks, 1)
			require.NotNil(t, eks[0].Certificate)
			require.Equal(t, tpm.EKCertificate().Raw, eks[0].Certificate.Raw)
			require.True(t, eks[0].Public.(*rsa.PublicKey).Equal(tpm.EKPublicKey()))
			sum, err := ekcert.SHA256PKIX(eks[0].Public)
			require.NoError(t, err)
			require.Equal(t, tpm.EKSHA256(), sum, "EKSHA256 is the identity the attestor computes")

			ak, err := at.NewAK(&attest.AKConfig{Algorithm: alg})
			require.NoError(t, err)
			params := ak.AttestationParameters()
			requireAKShape(t, params.Public, alg)

			// Server side: CheckAKParameters (creation data, certify-creation signature,
			// attributes) then the credential, exactly as the attestor makes it.
			ap := attest.ActivationParameters{EK: eks[0].Public, AK: params}
			secret, cred, err := ap.Generate()
			require.NoError(t, err)
			got, err := ak.ActivateCredentialWithEK(at, *cred, eks[0])
			require.NoError(t, err)
			require.Equal(t, secret, got)

			nonce := []byte("binding of nonce, WireGuard key and node id")
			q, err := ak.Quote(at, nonce, attest.HashSHA256)
			require.NoError(t, err)
			pcrs, err := at.PCRs(attest.HashSHA256)
			require.NoError(t, err)
			require.Len(t, pcrs, 24)
			for _, p := range pcrs {
				require.Equal(t, wantPCR(p.Index), p.Digest, "PCR %d", p.Index)
			}
			akPub, err := attest.ParseAKPublic(params.Public)
			require.NoError(t, err)
			require.NoError(t, akPub.Verify(*q, pcrs, nonce))
			require.NoError(t, akPub.VerifyAll([]attest.Quote{*q}, pcrs, nonce))

			att, err := tpm2.DecodeAttestationData(q.Quote)
			require.NoError(t, err)
			require.Equal(t, tpm2.TagAttestQuote, att.Type)
			require.Equal(t, uint32(0xff544347), att.Magic)
			require.Equal(t, nonce, []byte(att.ExtraData))
			require.Len(t, att.AttestedQuoteInfo.PCRSelection.PCRs, 24)

			// The verifier notices any change.
			require.Error(t, akPub.Verify(*q, pcrs, []byte("another nonce")))
			tampered := append([]attest.PCR(nil), pcrs...)
			tampered[7].Digest = bytes.Repeat([]byte{1}, 32)
			require.Error(t, akPub.Verify(*q, tampered, nonce))

			log, err := ch.MeasurementLog()
			require.NoError(t, err)
			require.Nil(t, log, "softtpm has no event log, like swtpm")

			require.NoError(t, ak.Close(at))
			require.NoError(t, at.Close())
			_, err = ch.Write([]byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x7A})
			require.ErrorIs(t, err, tpmconn.ErrClosed)
		})
	}
}

// requireAKShape checks what the attestor's akparams insists on: a restricted, TPM-made,
// non-duplicable signing-only key with SHA-256 everywhere.
func requireAKShape(t *testing.T, public []byte, alg attest.Algorithm) {
	t.Helper()
	pub, err := tpm2.DecodePublic(public)
	require.NoError(t, err)
	want := tpm2.FlagSign | tpm2.FlagRestricted | tpm2.FlagFixedTPM | tpm2.FlagFixedParent |
		tpm2.FlagSensitiveDataOrigin | tpm2.FlagUserWithAuth
	require.Equal(t, want, pub.Attributes&want)
	require.Zero(t, pub.Attributes&tpm2.FlagDecrypt)
	require.Equal(t, tpm2.AlgSHA256, pub.NameAlg)
	key, err := pub.Key()
	require.NoError(t, err)
	switch alg {
	case attest.ECDSA:
		require.Equal(t, tpm2.AlgECDSA, pub.ECCParameters.Sign.Alg)
		require.Equal(t, tpm2.AlgSHA256, pub.ECCParameters.Sign.Hash)
		require.IsType(t, &ecdsa.PublicKey{}, key)
	case attest.RSA:
		require.Equal(t, tpm2.AlgRSASSA, pub.RSAParameters.Sign.Alg)
		require.Equal(t, tpm2.AlgSHA256, pub.RSAParameters.Sign.Hash)
		require.Equal(t, 2048, key.(*rsa.PublicKey).N.BitLen())
	}
}

// TestCredentialBoundToEKAndAK: a credential can be activated only by the TPM holding both
// the EK and the AK it was made for.
func TestCredentialBoundToEKAndAK(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	a, b := newTPM(t, pool, 0), newTPM(t, pool, 1)
	require.NotEqual(t, a.EKSHA256(), b.EKSHA256())

	chA := open(t, a)
	atA, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: chA})
	require.NoError(t, err)
	eksA, err := atA.EKs()
	require.NoError(t, err)
	ak1, err := atA.NewAK(&attest.AKConfig{Algorithm: attest.ECDSA})
	require.NoError(t, err)
	ak2, err := atA.NewAK(&attest.AKConfig{Algorithm: attest.ECDSA})
	require.NoError(t, err)

	chB := open(t, b)
	atB, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: chB})
	require.NoError(t, err)
	eksB, err := atB.EKs()
	require.NoError(t, err)
	akB, err := atB.NewAK(&attest.AKConfig{Algorithm: attest.ECDSA})
	require.NoError(t, err)

	make := func(ek *x509.Certificate, ak *attest.AK) *attest.EncryptedCredential {
		ap := attest.ActivationParameters{EK: ek.PublicKey, AK: ak.AttestationParameters()}
		_, cred, err := ap.Generate()
		require.NoError(t, err)
		return cred
	}

	// Made for A's EK and AK1, presented with AK2: the AK's name is in the integrity HMAC.
	_, err = ak2.ActivateCredentialWithEK(atA, *make(a.EKCertificate(), ak1), eksA[0])
	require.Error(t, err)
	require.Equal(t, uint32(0x09F|0x040|0x100), chA.lastRC(0x147), "TPM_RC_INTEGRITY, parameter 1")

	// Made for A's EK (and an AK of B): B's EK cannot decrypt the seed.
	_, err = akB.ActivateCredentialWithEK(atB, *make(a.EKCertificate(), akB), eksB[0])
	require.Error(t, err)
	require.Equal(t, uint32(0x084|0x040|0x200), chB.lastRC(0x147), "TPM_RC_VALUE, parameter 2")

	// And the right one still works after the failures.
	secret, err := ak1.ActivateCredentialWithEK(atA, *make(a.EKCertificate(), ak1), eksA[0])
	require.NoError(t, err)
	require.Len(t, secret, 32)
}

// TestConcurrentTPMs: different TPMs are used from different goroutines at once, and one
// TPM may have several channels open.
func TestConcurrentTPMs(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	require.NoError(t, pool.Prepare(t.Context(), 3))
	var g errgroup.Group
	for i := range 6 {
		g.Go(func() error {
			tpm, err := pool.TPM(i % 3)
			if err != nil {
				return err
			}
			for range 3 {
				if err := attestOnce(tpm); err != nil {
					return fmt.Errorf("TPM %d: %w", tpm.Index(), err)
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
}

// attestOnce is one node boot's TPM work, checked by the verifier.
func attestOnce(tpm *softtpm.TPM) error {
	ch, err := tpm.Open()
	if err != nil {
		return err
	}
	at, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: ch})
	if err != nil {
		return err
	}
	defer at.Close()
	eks, err := at.EKs()
	if err != nil {
		return err
	}
	ak, err := at.NewAK(&attest.AKConfig{Algorithm: attest.ECDSA})
	if err != nil {
		return err
	}
	defer ak.Close(at)
	ap := attest.ActivationParameters{EK: eks[0].Public, AK: ak.AttestationParameters()}
	secret, cred, err := ap.Generate()
	if err != nil {
		return err
	}
	got, err := ak.ActivateCredentialWithEK(at, *cred, eks[0])
	if err != nil {
		return err
	}
	if !bytes.Equal(secret, got) {
		return fmt.Errorf("activated %x, want %x", got, secret)
	}
	q, err := ak.Quote(at, []byte("nonce"), attest.HashSHA256)
	if err != nil {
		return err
	}
	pcrs, err := at.PCRs(attest.HashSHA256)
	if err != nil {
		return err
	}
	pub, err := attest.ParseAKPublic(ak.AttestationParameters().Public)
	if err != nil {
		return err
	}
	return pub.VerifyAll([]attest.Quote{*q}, pcrs, []byte("nonce"))
}
