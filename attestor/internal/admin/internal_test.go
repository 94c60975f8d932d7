package admin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/inventory"
)

func FuzzDecodePageToken(f *testing.F) {
	filter := filterDigest("x", "", (*bool)(nil))
	f.Add(encodePageToken("ListNodes", "x1000c0s0b0n0", filter))
	f.Add(encodePageToken("ListEvents", "42", filter))
	f.Add("")
	f.Add("e30")
	f.Add("!!not base64")
	f.Fuzz(func(t *testing.T, token string) {
		after, err := decodePageToken(token, "ListNodes", filter)
		if err != nil {
			var invalid *invalidArgument
			require.ErrorAs(t, err, &invalid, "every refusal is an InvalidArgument")
			return
		}
		if token == "" {
			require.Empty(t, after)
			return
		}
		require.NotEmpty(t, after)
		again, err := decodePageToken(encodePageToken("ListNodes", after, filter), "ListNodes", filter)
		require.NoError(t, err)
		require.Equal(t, after, again)
		_, err = decodePageToken(token, "ListNodes", filterDigest("y"))
		require.Error(t, err, "a token is bound to its filter")
	})
}

func FuzzParseEK(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(f, err)
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(f, err)
	f.Add(uint8(0), []byte("not a certificate"))
	f.Add(uint8(1), pub)
	f.Add(uint8(2), make([]byte, 32))
	f.Fuzz(func(t *testing.T, kind uint8, b []byte) {
		req := &inventoryv1.EnrollNodeRequest{NodeId: "n1"}
		switch kind % 3 {
		case 0:
			req.Ek = &inventoryv1.EnrollNodeRequest_EkCertificate{EkCertificate: b}
		case 1:
			req.Ek = &inventoryv1.EnrollNodeRequest_EkPublicKey{EkPublicKey: b}
		case 2:
			req.Ek = &inventoryv1.EnrollNodeRequest_EkSha256{EkSha256: b}
		}
		ek, err := parseEK(req)
		if err != nil {
			var invalid *invalidArgument
			require.ErrorAs(t, err, &invalid)
			return
		}
		require.Len(t, ek.sha256, 32)
		if ek.public != nil {
			sum := sha256.Sum256(ek.public)
			require.Equal(t, sum[:], ek.sha256, "the binding is the hash of the PKIX key kept")
		}
	})
}

func TestSettle(t *testing.T) {
	t.Parallel()
	const delay = 2 * time.Second
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	w := &watcher{s: &Server{cfg: Config{WatchDelay: delay}}}

	// Old enough by its time stamp: goes at once.
	require.Zero(t, w.settle(now, inventory.Event{ID: 1, At: now.Add(-delay)}))
	// Fresh: held for the rest of the delay.
	require.Equal(t, 1500*time.Millisecond, w.settle(now, inventory.Event{ID: 2, At: now.Add(-500 * time.Millisecond)}))
	// Stamped by a clock an hour ahead: held for the delay after it was first seen, not an hour.
	ahead := inventory.Event{ID: 3, At: now.Add(time.Hour)}
	require.Equal(t, delay, w.settle(now, ahead))
	require.Equal(t, delay/2, w.settle(now.Add(delay/2), ahead))
	require.Zero(t, w.settle(now.Add(delay), ahead))
}
