package ekpolicy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

func seedCert(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/seed.json")
	require.NoError(t, err)
	var s struct{ EKCertificate []byte }
	require.NoError(t, json.Unmarshal(b, &s))
	return s.EKCertificate
}

func TestIdentifyAndDecide(t *testing.T) {
	t.Parallel()
	p, err := New(Config{})
	require.NoError(t, err)
	certDER := seedCert(t)
	cert, err := x509.ParseCertificate(certDER)
	require.NoError(t, err)
	pkix, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	require.NoError(t, err)

	byCert, err := p.Identify(certDER, nil, time.Now())
	require.NoError(t, err)
	byKey, err := p.Identify(nil, pkix, time.Now())
	require.NoError(t, err)
	both, err := p.Identify(certDER, pkix, time.Now())
	require.NoError(t, err)
	require.Equal(t, byCert.SHA256, byKey.SHA256, "one identity whichever way the EK is presented")
	require.Equal(t, byCert.SHA256, both.SHA256)

	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	otherPKIX, err := x509.MarshalPKIXPublicKey(&other.PublicKey)
	require.NoError(t, err)
	_, err = p.Identify(certDER, otherPKIX, time.Now())
	require.ErrorIs(t, err, ErrCertKeyMismatch)
	_, err = p.Identify(nil, nil, time.Now())
	require.ErrorIs(t, err, ErrMalformed)
	_, err = p.Identify([]byte("junk"), nil, time.Now())
	require.ErrorIs(t, err, ErrMalformed)

	enrolled := &inventory.Enrollment{NodeID: "n1", EKSHA256: byCert.SHA256}
	e, err := p.Decide("n1", byCert, enrolled, false)
	require.NoError(t, err)
	require.Nil(t, e, "a matching enrollment needs no new one")
	otherID, err := p.Identify(nil, otherPKIX, time.Now())
	require.NoError(t, err)
	_, err = p.Decide("n1", otherID, enrolled, false)
	require.ErrorIs(t, err, ErrEKMismatch)
	_, err = p.Decide("n1", byCert, nil, false)
	require.ErrorIs(t, err, ErrNotEnrolled)
	e, err = p.Decide("n1", byCert, nil, true)
	require.NoError(t, err)
	require.Equal(t, inventory.SourceTOFU, e.Source)

	_, err = New(Config{EnrollByCA: true})
	require.Error(t, err, "enrolling by CA without roots fails closed")
}

// Identify parses a certificate and a public key a node chose: never a panic, and whatever it
// accepts has a consistent identity.
func FuzzIdentify(f *testing.F) {
	f.Add(seedCert(f), []byte{})
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00}, []byte{0x30, 0x00})
	p, err := New(Config{})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, cert, pkix []byte) {
		id, err := p.Identify(cert, pkix, time.Now())
		if err != nil {
			return
		}
		if len(id.SHA256) != 32 || id.Public == nil {
			t.Fatalf("accepted an EK without an identity")
		}
	})
}
