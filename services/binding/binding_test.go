package binding

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// A known answer pins the encoding: changing it breaks every node in the field.
func TestExtraDataKnownAnswer(t *testing.T) {
	t.Parallel()
	got, err := ExtraData(fill(1, 32), fill(2, 32), "x1000c0s0b0n0")
	require.NoError(t, err)

	var want []byte
	want = append(want, "attestboot/quote/v1\x00"...)
	want = append(want, fill(1, 32)...)
	want = append(want, fill(2, 32)...)
	want = append(want, 0, 13)
	want = append(want, "x1000c0s0b0n0"...)
	sum := sha256.Sum256(want)
	require.Equal(t, hex.EncodeToString(sum[:]), hex.EncodeToString(got))
}

func TestExtraDataSeparatesEveryPart(t *testing.T) {
	t.Parallel()
	base, err := ExtraData(fill(1, 32), fill(2, 32), "n1")
	require.NoError(t, err)
	for name, args := range map[string]struct {
		nonce, key []byte
		node       string
	}{
		"nonce": {fill(9, 32), fill(2, 32), "n1"},
		"key":   {fill(1, 32), fill(9, 32), "n1"},
		"node":  {fill(1, 32), fill(2, 32), "n2"},
	} {
		got, err := ExtraData(args.nonce, args.key, args.node)
		require.NoError(t, err)
		require.NotEqual(t, base, got, "changing the %s must change the binding", name)
	}
}

func TestExtraDataRejectsBadSizes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		nonce, key []byte
		node       string
	}{
		{"short nonce", fill(1, 31), fill(2, 32), "n"},
		{"long key", fill(1, 32), fill(2, 33), "n"},
		{"empty node", fill(1, 32), fill(2, 32), ""},
		{"long node", fill(1, 32), fill(2, 32), string(fill('a', 256))},
	} {
		_, err := ExtraData(tc.nonce, tc.key, tc.node)
		require.True(t, errors.Is(err, ErrInput), tc.name)
	}
}

// Distinct valid inputs never collide (a collision would need one in SHA-256).
func FuzzExtraDataInjective(f *testing.F) {
	f.Add(fill(1, 32), fill(2, 32), "a", fill(1, 32), fill(2, 32), "b")
	f.Fuzz(func(t *testing.T, n1, k1 []byte, id1 string, n2, k2 []byte, id2 string) {
		a, errA := ExtraData(n1, k1, id1)
		b, errB := ExtraData(n2, k2, id2)
		if errA != nil || errB != nil {
			return
		}
		same := bytes.Equal(n1, n2) && bytes.Equal(k1, k2) && id1 == id2
		if same != bytes.Equal(a, b) {
			t.Fatalf("inputs equal=%v but bindings equal=%v", same, bytes.Equal(a, b))
		}
	})
}
