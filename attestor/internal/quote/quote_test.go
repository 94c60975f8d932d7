package quote

import (
	"bytes"
	"crypto"
	"encoding/json"
	"os"
	"testing"

	"github.com/google/go-attestation/attest"
	"github.com/stretchr/testify/require"
)

type seedFile struct {
	Public, Quote, Signature, Nonce, WireGuardKey []byte
	NodeID                                        string
	PCRIndexes                                    []int
	PCRDigests                                    [][]byte
}

func seed(t testing.TB) (seedFile, Input) {
	b, err := os.ReadFile("testdata/seed.json")
	require.NoError(t, err)
	var s seedFile
	require.NoError(t, json.Unmarshal(b, &s))
	in := Input{
		AKPublic: s.Public, Nonce: s.Nonce, WireGuardKey: s.WireGuardKey, NodeID: s.NodeID,
		Quotes: []attest.Quote{{Quote: s.Quote, Signature: s.Signature}},
	}
	for i, idx := range s.PCRIndexes {
		in.PCRs = append(in.PCRs, PCR{Index: idx, Hash: crypto.SHA256, Digest: s.PCRDigests[i]})
	}
	return s, in
}

func TestVerify(t *testing.T) {
	t.Parallel()
	_, in := seed(t)
	require.NoError(t, Verify(in))

	pinned := in
	pinned.Policy = map[int][]byte{0: in.PCRs[0].Digest}
	require.NoError(t, Verify(pinned))

	for name, tc := range map[string]struct {
		mutate func(in *Input)
		want   error
	}{
		"other nonce": {func(in *Input) { in.Nonce = bytes.Repeat([]byte{9}, 32) }, ErrBinding},
		"other key":   {func(in *Input) { in.WireGuardKey = bytes.Repeat([]byte{9}, 32) }, ErrBinding},
		"other node":  {func(in *Input) { in.NodeID = "x1000c0s0b0n1" }, ErrBinding},
		"bad signature": {func(in *Input) {
			in.Quotes[0].Signature = bytes.Clone(in.Quotes[0].Signature)
			in.Quotes[0].Signature[10] ^= 1
		}, ErrSignature},
		"altered PCR":     {func(in *Input) { in.PCRs[3].Digest = bytes.Repeat([]byte{1}, 32) }, ErrSignature},
		"policy mismatch": {func(in *Input) { in.Policy = map[int][]byte{0: bytes.Repeat([]byte{1}, 32)} }, ErrPCRPolicy},
		"policy unquoted": {func(in *Input) { in.PCRs = in.PCRs[:1]; in.Policy = map[int][]byte{9: make([]byte, 32)} }, ErrSignature},
		"duplicate PCR":   {func(in *Input) { in.PCRs = append(in.PCRs, in.PCRs[0]) }, ErrMalformed},
		"short digest":    {func(in *Input) { in.PCRs[0].Digest = in.PCRs[0].Digest[:20] }, ErrMalformed},
		"no quotes":       {func(in *Input) { in.Quotes = nil }, ErrMalformed},
		"garbage log":     {func(in *Input) { in.EventLog = []byte("not a TCG log") }, ErrEventLog},
	} {
		_, in := seed(t)
		tc.mutate(&in)
		require.ErrorIs(t, Verify(in), tc.want, name)
	}
}

// Verify parses a quote, a signature, PCR values and an event log a node chose: it must never
// panic, and it must never accept a quote over data other than the recorded one.
func FuzzVerify(f *testing.F) {
	s, _ := seed(f)
	f.Add(s.Quote, s.Signature, s.PCRDigests[0], []byte{})
	f.Add([]byte{0xff, 0x54, 0x43, 0x47}, []byte{0, 0x18}, make([]byte, 32), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, q, sig, pcr0, eventLog []byte) {
		_, in := seed(t)
		in.Quotes = []attest.Quote{{Quote: q, Signature: sig}}
		in.PCRs[0].Digest = pcr0
		in.EventLog = eventLog
		err := Verify(in)
		if err == nil && (!bytes.Equal(q, s.Quote) || !bytes.Equal(pcr0, s.PCRDigests[0])) {
			t.Fatalf("accepted a quote or PCR value the TPM never produced")
		}
	})
}
