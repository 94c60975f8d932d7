package akparams

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"os"
	"testing"

	"github.com/google/go-attestation/attest"
	"github.com/stretchr/testify/require"
)

func seed(t testing.TB) attest.AttestationParameters {
	b, err := os.ReadFile("testdata/seed.json")
	require.NoError(t, err)
	var s struct{ Public, CreateData, CreateAttestation, CreateSignature []byte }
	require.NoError(t, json.Unmarshal(b, &s))
	return attest.AttestationParameters{Public: s.Public, CreateData: s.CreateData,
		CreateAttestation: s.CreateAttestation, CreateSignature: s.CreateSignature}
}

func TestCheckAcceptsARealAK(t *testing.T) {
	t.Parallel()
	pub, err := Check(seed(t))
	require.NoError(t, err)
	require.NotNil(t, pub.ECCParameters)
}

func TestCheckRefusesTamperedAK(t *testing.T) {
	t.Parallel()
	for name, mutate := range map[string]func(p *attest.AttestationParameters){
		"empty public":        func(p *attest.AttestationParameters) { p.Public = nil },
		"oversized signature": func(p *attest.AttestationParameters) { p.CreateSignature = make([]byte, MaxFieldSize+1) },
		"flipped signature":   func(p *attest.AttestationParameters) { p.CreateSignature[len(p.CreateSignature)-1] ^= 1 },
		"other creation data": func(p *attest.AttestationParameters) { p.CreateData[len(p.CreateData)-1] ^= 1 },
		"garbage public":      func(p *attest.AttestationParameters) { p.Public = []byte{0, 1, 2} },
	} {
		p := seed(t)
		mutate(&p)
		_, err := Check(p)
		require.ErrorIs(t, err, ErrUnfit, name)
	}
}

// Check parses four TPM structures a node chose: it must never panic, and whatever it accepts
// must be a restricted signing key.
func FuzzCheck(f *testing.F) {
	s := seed(f)
	f.Add(s.Public, s.CreateData, s.CreateAttestation, s.CreateSignature)
	f.Add([]byte{}, []byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, pub, data, att, sig []byte) {
		p, err := Check(attest.AttestationParameters{Public: pub, CreateData: data, CreateAttestation: att, CreateSignature: sig})
		if err == nil && checkPublic(p) != nil {
			t.Fatalf("accepted an AK that fails its own attribute checks")
		}
	})
}

func TestChallenge(t *testing.T) {
	t.Parallel()
	ek, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	secret, cred, err := Challenge(seed(t), &ek.PublicKey)
	require.NoError(t, err)
	require.Len(t, secret, 32)
	require.NotEmpty(t, cred.Credential)
	require.NotEmpty(t, cred.Secret)

	bad := seed(t)
	bad.CreateSignature[len(bad.CreateSignature)-1] ^= 1
	_, _, err = Challenge(bad, &ek.PublicKey)
	require.ErrorIs(t, err, ErrUnfit, "go-attestation's checks still run")
}
