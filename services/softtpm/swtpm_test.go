package softtpm_test

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/tpmconn"
	"github.com/attestboot/attestboot/services/tpmtest"
)

// TestMatchesSwtpm puts softtpm next to a swtpm manufactured by services/tpmtest and checks
// they answer alike: same PCR values, same shape of EK, NV index, AK, creation data and
// quote, Names and qualified names computed the same way, and the same response codes for
// the refused commands both implement. Without swtpm the test fails under CI=true and is
// skipped elsewhere.
func TestMatchesSwtpm(t *testing.T) {
	t.Parallel()
	sw := tpmtest.Start(t)
	swCh, err := sw.Open()
	require.NoError(t, err)
	t.Cleanup(func() { swCh.Close() })
	soft := newTPM(t, newPool(t), 0)
	softCh := open(t, soft)
	chans := map[string]tpmconn.Channel{"swtpm": swCh, "softtpm": softCh}
	// attest.TPM.Close would close the channels; the cleanups above do.
	ats := map[string]*attest.TPM{}
	for name, ch := range chans {
		ats[name], err = attest.OpenTPM(&attest.OpenConfig{CommandChannel: ch})
		require.NoError(t, err)
	}

	t.Run("PCRs", func(t *testing.T) {
		want, err := ats["swtpm"].PCRs(attest.HashSHA256)
		require.NoError(t, err)
		got, err := ats["softtpm"].PCRs(attest.HashSHA256)
		require.NoError(t, err)
		require.Equal(t, want, got)
		for name, at := range ats {
			_, err := at.PCRs(attest.HashSHA1)
			require.Error(t, err, "%s has no SHA-1 bank", name)
		}
	})

	// qualifies checks QN = nameAlg || SHA-256(parentQN || name), Part 1, 16.
	qualifies := func(t *testing.T, parentQN, name, qn []byte) {
		t.Helper()
		sum := sha256.Sum256(append(append([]byte{}, parentQN...), name...))
		require.Equal(t, append([]byte{0x00, 0x0b}, sum[:]...), qn)
	}
	hierarchy := func(h uint32) []byte { return binary.BigEndian.AppendUint32(nil, h) }
	srkQN := map[string][]byte{}

	t.Run("persistent keys", func(t *testing.T) {
		pubs := map[string]tpm2.Public{}
		for name, ch := range chans {
			pub, n, qn, err := tpm2.ReadPublic(ch, 0x81010001)
			require.NoError(t, err)
			wantName, err := pub.Name()
			require.NoError(t, err)
			enc, err := wantName.Encode()
			require.NoError(t, err)
			require.Equal(t, enc[2:], n, "%s: Name of the EK", name)
			qualifies(t, hierarchy(0x4000000B), n, qn)
			pub.RSAParameters.ModulusRaw = nil
			pubs[name] = pub

			_, n, qn, err = tpm2.ReadPublic(ch, 0x81000001)
			require.NoError(t, err)
			qualifies(t, hierarchy(0x40000001), n, qn)
			srkQN[name] = qn
		}
		require.Equal(t, pubs["swtpm"], pubs["softtpm"], "EK public areas differ beyond the modulus")
	})

	t.Run("EK certificate index", func(t *testing.T) {
		nvs := map[string]tpm2.NVPublic{}
		for name, ch := range chans {
			nv, err := tpm2.NVReadPublic(ch, 0x01C00002)
			require.NoError(t, err)
			nv.DataSize = 0
			nvs[name] = nv
		}
		require.Equal(t, nvs["swtpm"], nvs["softtpm"])
	})

	t.Run("AK", func(t *testing.T) {
		type result struct {
			pub  tpm2.Public
			cd   *tpm2.CreationData
			att  *tpm2.AttestationData
			sig  *tpm2.Signature
			name []byte
		}
		res := map[string]result{}
		for name, at := range ats {
			ak, err := at.NewAK(&attest.AKConfig{Algorithm: attest.ECDSA})
			require.NoError(t, err)
			t.Cleanup(func() { ak.Close(at) })
			p := ak.AttestationParameters()
			require.NoError(t, (&attest.ActivationParameters{AK: p}).CheckAKParameters())
			var r result
			r.pub, err = tpm2.DecodePublic(p.Public)
			require.NoError(t, err)
			akName, err := r.pub.Name()
			require.NoError(t, err)
			enc, err := akName.Encode()
			require.NoError(t, err)
			r.name = enc[2:]
			r.cd, err = tpm2.DecodeCreationData(p.CreateData)
			require.NoError(t, err)
			r.att, err = tpm2.DecodeAttestationData(p.CreateAttestation)
			require.NoError(t, err)
			r.sig, err = tpm2.DecodeSignature(bytesBuffer(p.CreateSignature))
			require.NoError(t, err)

			// The qualified signer is the AK's qualified name under the SRK.
			signer, err := r.att.QualifiedSigner.Encode()
			require.NoError(t, err)
			qualifies(t, srkQN[name], r.name, signer[2:])
			parentQN, err := r.cd.ParentQualifiedName.Encode()
			require.NoError(t, err)
			require.Equal(t, srkQN[name], parentQN[2:])
			r.pub.ECCParameters.Point = tpm2.ECPoint{}
			res[name] = r
		}
		s, o := res["swtpm"], res["softtpm"]
		require.Equal(t, s.pub, o.pub)
		require.Equal(t, s.cd.PCRSelection, o.cd.PCRSelection)
		require.Equal(t, s.cd.PCRDigest, o.cd.PCRDigest)
		require.Equal(t, s.cd.Locality, o.cd.Locality)
		require.Equal(t, s.cd.ParentNameAlg, o.cd.ParentNameAlg)
		require.Equal(t, s.cd.OutsideInfo, o.cd.OutsideInfo)
		require.Equal(t, s.att.Magic, o.att.Magic)
		require.Equal(t, s.att.Type, o.att.Type)
		require.Equal(t, s.att.ExtraData, o.att.ExtraData)
		require.Equal(t, s.att.ClockInfo.Safe, o.att.ClockInfo.Safe)
		require.Equal(t, s.sig.Alg, o.sig.Alg)
		require.Equal(t, s.sig.ECC.HashAlg, o.sig.ECC.HashAlg)
	})

	t.Run("quote", func(t *testing.T) {
		nonce := []byte("the same nonce for both")
		atts := map[string]*tpm2.AttestationData{}
		for name, at := range ats {
			ak, err := at.NewAK(&attest.AKConfig{Algorithm: attest.ECDSA})
			require.NoError(t, err)
			q, err := ak.Quote(at, nonce, attest.HashSHA256)
			require.NoError(t, err)
			require.NoError(t, ak.Close(at))
			atts[name], err = tpm2.DecodeAttestationData(q.Quote)
			require.NoError(t, err)
		}
		s, o := atts["swtpm"], atts["softtpm"]
		require.Equal(t, s.Type, o.Type)
		require.Equal(t, s.ExtraData, o.ExtraData)
		require.Equal(t, s.AttestedQuoteInfo, o.AttestedQuoteInfo, "same selection, same PCR digest")
	})

	t.Run("response codes", func(t *testing.T) {
		for _, tc := range errorCases(t) {
			if tc.swtpm != "" {
				continue
			}
			got := rcOf(run(t, open(t, soft), tc.cmd))
			want := rcOf(run(t, swCh, tc.cmd))
			// TPM_RC_RETRY: swtpm was busy (loading the RSA EK); a client sends the command
			// again, as go-tpm does.
			for i := 0; want == 0x922 && i < 10; i++ {
				want = rcOf(run(t, swCh, tc.cmd))
			}
			require.Equal(t, want, got, "%s: softtpm %#x, swtpm %#x", tc.name, got, want)
			flushAll(t, swCh)
		}
	})
}

// flushAll flushes the loaded sessions and transient objects a command left behind.
func flushAll(t *testing.T, ch tpmconn.Channel) {
	t.Helper()
	for _, first := range []uint32{0x02000000, 0x80000000} {
		hs, _, err := tpm2.GetCapability(ch, tpm2.CapabilityHandles, 16, first)
		require.NoError(t, err)
		for _, h := range hs {
			require.NoError(t, tpm2.FlushContext(ch, h.(tpmutil.Handle)))
		}
	}
}
