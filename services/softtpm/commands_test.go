package softtpm_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
	"github.com/stretchr/testify/require"
)

// Fragments of raw commands: a password session with an empty password, a wrong one.
const (
	tpmconnRefuses = "tpmconn refuses to send it"

	pwAuth    = "00000009 40000009 0000 01 0000"
	badPWAuth = "0000000a 40000009 0000 01 0001 41"
)

// errorCase is a command a TPM refuses, and the response code it refuses it with. swtpm,
// when not empty, says why swtpm answers otherwise; TestMatchesSwtpm compares the others.
type errorCase struct {
	name  string
	cmd   []byte
	want  uint32
	swtpm string
}

func errorCases(t testing.TB) []errorCase {
	raw := func(b ...byte) []byte { return b }
	return []errorCase{
		{"shorter than a header", raw(0x80, 0x01, 0, 0, 0), 0x142, tpmconnRefuses},
		{"unknown tag", cmd(t, "8003 00000000 0000017a 00000006 00000100 00000001"), 0x01E, "libtpms answers TPM_RC_VALUE where Part 2 (TPMI_ST_COMMAND_TAG) says TPM_RC_BAD_TAG"},
		{"size field beyond the bytes", raw(0x80, 0x01, 0, 0, 0, 0x20, 0, 0, 0x01, 0x7a), 0x142, tpmconnRefuses},
		{"size field short of the bytes", raw(0x80, 0x01, 0, 0, 0, 0x0a, 0, 0, 0x01, 0x73, 0x81, 0x01, 0, 1), 0x142, tpmconnRefuses},
		{"unknown command code", cmd(t, "8001 00000000 00000199"), 0x143, ""},
		{"CreatePrimary is not implemented", cmd(t, "8002 00000000 00000131 40000001", pwAuth), 0x143, "implemented by swtpm"},
		{"GetRandom is not implemented", cmd(t, "8001 00000000 0000017b 0010"), 0x143, "implemented by swtpm"},
		{"Startup on a started TPM", cmd(t, "8001 00000000 00000144 0000"), 0x100, ""},
		{"handle cut short", cmd(t, "8001 00000000 00000173 8101"), 0x19A, ""},
		{"absent persistent handle", cmd(t, "8001 00000000 00000173 81010002"), 0x18B, ""},
		{"transient handle not loaded", cmd(t, "8001 00000000 00000173 80000001"), 0x910, ""},
		{"transient handle beyond TRANSIENT_LAST", cmd(t, "8001 00000000 00000173 80000005"), 0x184, ""},
		{"NV index where an object is expected", cmd(t, "8001 00000000 00000173 01c00002"), 0x184, ""},
		{"trailing parameter bytes", cmd(t, "8001 00000000 00000173 81010001 00"), 0x095, ""},
		{"session on a command without authorization", cmd(t, "8002 00000000 00000173 81010001", pwAuth), 0x98B, ""},
		{"absent NV index", cmd(t, "8001 00000000 00000169 01c00003"), 0x18B, ""},
		{"NV_Read from beyond the data", cmd(t, "8002 00000000 0000014e 01c00002 01c00002", pwAuth, "0010 0400"), 0x2C4, ""},
		{"NV_Read past the end of the data", cmd(t, "8002 00000000 0000014e 01c00002 01c00002", pwAuth, "0400 0010"), 0x146, ""},
		{"NV_Read beyond NV_BUFFER_MAX", cmd(t, "8002 00000000 0000014e 01c00002 01c00002", pwAuth, "0401 0000"), 0x1C4, ""},
		{"NV_Read authorized by the endorsement hierarchy", cmd(t, "8002 00000000 0000014e 4000000b 01c00002", pwAuth, "0010 0000"), 0x184, ""},
		{"NV_Read without authorization", cmd(t, "8001 00000000 0000014e 01c00002 01c00002 0010 0000"), 0x125, ""},
		{"NV_Read with a wrong password", cmd(t, "8002 00000000 0000014e 01c00002 01c00002", badPWAuth, "0010 0000"), 0x9A2, ""},
		{"authorization area too small", cmd(t, "8002 00000000 0000014e 01c00002 01c00002 00000004 40000009 0010 0000"), 0x095, ""},
		{"authorization area beyond the command", cmd(t, "8002 00000000 0000014e 01c00002 01c00002 00000040 40000009 0000 01 0000"), 0x095, ""},
		{"policy session not loaded", cmd(t, "8002 00000000 0000014e 01c00002 01c00002 00000009 03000000 0000 01 0000 0010 0000"), 0x918, ""},
		{"password session with a nonce", cmd(t, "8002 00000000 0000014e 01c00002 01c00002 0000000b 40000009 0002 0102 01 0000 0010 0000"), 0x98F, ""},
		{"password session asking for encryption", cmd(t, "8002 00000000 0000014e 01c00002 01c00002 00000009 40000009 0000 21 0000 0010 0000"), 0x982, ""},
		{"PCR selection of four octets", cmd(t, "8001 00000000 0000017e 00000001 000b 04 ffffffff"), 0x1C4, ""},
		{"PCR selection of an unknown hash", cmd(t, "8001 00000000 0000017e 00000001 0099 03 ffffff"), 0x1C3, ""},
		{"PCR selection cut short", cmd(t, "8001 00000000 0000017e 0000"), 0x1DA, ""},
		{"unknown capability", cmd(t, "8001 00000000 0000017a 00000042 00000000 00000001"), 0x1C4, ""},
		{"flush of a transient handle not loaded", cmd(t, "8001 00000000 00000165 80000001"), 0x1CB, ""},
		{"flush beyond TRANSIENT_LAST", cmd(t, "8001 00000000 00000165 80000005"), 0x1C4, ""},
		{"flush of a persistent key", cmd(t, "8001 00000000 00000165 81010001"), 0x1C4, ""},
		{"HMAC session", cmd(t, "8001 00000000 00000176 40000007 40000007 0010 00000000000000000000000000000000 0000 00 0010 000b"), 0x3C4, "HMAC sessions are not implemented"},
		{"session nonce under 16 octets", cmd(t, "8001 00000000 00000176 40000007 40000007 0008 0000000000000000 0000 01 0010 000b"), 0x1D5, ""},
		{"session with parameter encryption", cmd(t, "8001 00000000 00000176 40000007 40000007 0010 00000000000000000000000000000000 0000 01 0006 0080 0043 000b"), 0x4D6, "parameter encryption is not implemented"},
		{"salted session without a salt", cmd(t, "8001 00000000 00000176 81010001 40000007 0010 00000000000000000000000000000000 0000 01 0010 000b"), 0x2C4, ""},
		{"session of an unknown hash", cmd(t, "8001 00000000 00000176 40000007 40000007 0010 00000000000000000000000000000000 0000 01 0010 0099"), 0x5C3, ""},
		{"Quote without authorization", cmd(t, "8001 00000000 00000158 81000001 0000 0010 00000000"), 0x125, ""},
		{"Quote with a key that does not sign", cmd(t, "8002 00000000 00000158 81000001", pwAuth, "0000 0010 00000000"), 0x19C, ""},
		{"password for the EK's user role", cmd(t, "8002 00000000 00000158 81010001", pwAuth, "0000 0010 00000000"), 0x12F, ""},
		{"password for the EK in ActivateCredential", cmd(t, "8002 00000000 00000147 81000001 81010001 00000012 40000009 0000 01 0000 40000009 0000 01 0000 0000 0000"), 0x12F, ""},
		{"ActivateCredential with one authorization", cmd(t, "8002 00000000 00000147 81000001 81010001", pwAuth, "0000 0000"), 0x125, ""},
		{"ActivateCredential with a key that does not decrypt", cmd(t, "8002 00000000 00000147 81000001 81000001 00000012 40000009 0000 01 0000 40000009 0000 01 0000 0000 0000"), 0x28A, "swtpm's SRK is an RSA decryption key"},
		{"ActivateCredential with an absent key", cmd(t, "8002 00000000 00000147 81000001 81010002 00000012 40000009 0000 01 0000 40000009 0000 01 0000 0000 0000"), 0x28B, ""},
		{"Create under the EK", cmd(t, "8002 00000000 00000153 81010001", pwAuth, "0004 0000 0000 0000 0000 00000000"), 0x12F, ""},
		{"Create of a decryption key", cmd(t, "8002 00000000 00000153 81000001", pwAuth,
			"0004 0000 0000",
			"0056 0023 000b 00020472 0000 0010 0010 0003 0010 0020", zeros(32), "0020", zeros(32),
			"0000 00000000"), 0x2C2, "decryption keys are not implemented"},
		{"Create with data for a generated key", cmd(t, "8002 00000000 00000153 81000001", pwAuth,
			"0007 0000 0003 010203",
			"0058 0023 000b 00050472 0000 0010 0018 000b 0003 0010 0020", zeros(32), "0020", zeros(32),
			"0000 00000000"), 0x2C2, ""},
		{"Create with an unknown curve", cmd(t, "8002 00000000 00000153 81000001", pwAuth,
			"0004 0000 0000",
			"0058 0023 000b 00050472 0000 0010 0018 000b 0099 0010 0020", zeros(32), "0020", zeros(32),
			"0000 00000000"), 0x2E6, ""},
		{"Create with reserved attribute bits", cmd(t, "8002 00000000 00000153 81000001", pwAuth,
			"0004 0000 0000",
			"0058 0023 000b 00050473 0000 0010 0018 000b 0003 0010 0020", zeros(32), "0020", zeros(32),
			"0000 00000000"), 0x2E1, ""},
		{"Create of a restricted key without a scheme", cmd(t, "8002 00000000 00000153 81000001", pwAuth,
			"0004 0000 0000",
			"0056 0023 000b 00050472 0000 0010 0010 0003 0010 0020", zeros(32), "0020", zeros(32),
			"0000 00000000"), 0x2D2, ""},
		{"Create with a TPM2B_PUBLIC size off by one", cmd(t, "8002 00000000 00000153 81000001", pwAuth,
			"0004 0000 0000",
			"0057 0023 000b 00050472 0000 0010 0018 000b 0003 0010 0020", zeros(32), "0020", zeros(32),
			"0000 00000000"), 0x2D5, ""},
		{"Load of an empty private", cmd(t, "8002 00000000 00000157 81000001", pwAuth,
			"0000",
			"0058 0023 000b 00050472 0000 0010 0018 000b 0003 0010 0020", zeros(32), "0020", zeros(32)), 0x1D5, ""},
		{"Load of garbage", cmd(t, "8002 00000000 00000157 81000001", pwAuth,
			"0024 0020", zeros(32), "0000",
			"0058 0023 000b 00050472 0000 0010 0018 000b 0003 0010 0020", zeros(32), "0020", zeros(32)), 0x1DF, ""},
		{"PolicySecret on a session not loaded", cmd(t, "8002 00000000 00000151 4000000b 03000000", pwAuth, "0000 0000 0000 00000000"), 0x911, ""},
		{"PolicyGetDigest on an object", cmd(t, "8001 00000000 00000189 81010001"), 0x184, ""},
	}
}

// TestErrorResponses sends malformed, unknown and unauthorized commands and checks each gets
// the response code a TPM 2.0 gives (the format-one codes carry the handle, session or
// parameter number), as a bare 10-byte header.
func TestErrorResponses(t *testing.T) {
	t.Parallel()
	tpm := newTPM(t, newPool(t), 0)
	tests := errorCases(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ch := open(t, tpm)
			resp := run(t, ch, tc.cmd)
			require.Equal(t, tc.want, rcOf(resp), "response code %#x, want %#x", rcOf(resp), tc.want)
		})
	}
}

func zeros(n int) string { return string(bytes.Repeat([]byte("00"), n)) }
func ones(n int) string  { return string(bytes.Repeat([]byte("ff"), n)) }

// TestSuccessResponses checks some answers byte for byte.
func TestSuccessResponses(t *testing.T) {
	t.Parallel()
	tpm := newTPM(t, newPool(t), 0)
	ch := open(t, tpm)

	// NV_Read by the owner (TPMA_NV_OWNERREAD), with a password session: the response has a
	// parameter size and the password session's answer (empty nonce, continueSession, empty
	// HMAC).
	resp := run(t, ch, cmd(t, "8002 00000000 0000014e 40000001 01c00002", pwAuth, "0004 0000"))
	require.Equal(t, cmd(t, "8002 00000000 00000000 00000006 0004", hexOf(tpm.EKCertificate().Raw[:4]), "0000 01 0000"), resp)

	// GetCapability(TPM_PROPERTIES, NV_BUFFER_MAX, 1) as go-tpm asks it before NV_Read: one
	// property, more data, 1024 as swtpm.
	resp = run(t, ch, cmd(t, "8001 00000000 0000017a 00000006 0000012c 00000001"))
	require.Equal(t, cmd(t, "8001 00000000 00000000 01 00000006 00000001 0000012c 00000400"), resp)

	// GetCapability(PCRS): one SHA-256 bank of 24 PCRs.
	resp = run(t, ch, cmd(t, "8001 00000000 0000017a 00000005 00000000 00000400"))
	require.Equal(t, cmd(t, "8001 00000000 00000000 00 00000005 00000001 000b 03 ffffff"), resp)

	// GetCapability(HANDLES, persistent): the SRK and the EK.
	resp = run(t, ch, cmd(t, "8001 00000000 0000017a 00000001 81000000 00000010"))
	require.Equal(t, cmd(t, "8001 00000000 00000000 00 00000001 00000002 81000001 81010001"), resp)

	// PCR_Read of PCRs 16 and 17: zeros and all ones.
	resp = run(t, ch, cmd(t, "8001 00000000 0000017e 00000001 000b 03 000003"))
	require.Equal(t, cmd(t, "8001 00000000 00000000 00000000 00000001 000b 03 000003 00000002 0020", zeros(32), "0020", ones(32)), resp)
	// Of PCRs 0-23 and of the SHA-1 bank, which softtpm does not have: eight values at most,
	// and the selection says which.
	resp = run(t, ch, cmd(t, "8001 00000000 0000017e 00000002 0004 03 ffffff 000b 03 ffffff"))
	want := "8001 00000000 00000000 00000000 00000002 0004 03 000000 000b 03 ff0000 00000008"
	for range 8 {
		want += "0020" + zeros(32)
	}
	require.Equal(t, cmd(t, want), resp)
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&0xF])
	}
	return string(out)
}

// TestPolicySession walks the EK's authorization: a policy session, PolicySecret of the
// endorsement hierarchy, then ActivateCredential, and the ways it fails.
func TestPolicySession(t *testing.T) {
	t.Parallel()
	tpm := newTPM(t, newPool(t), 0)
	ch := open(t, tpm)
	ekPub, _, _, err := tpm2.ReadPublic(ch, 0x81010001)
	require.NoError(t, err)

	start := func(typ byte) (tpmutil.Handle, []byte) {
		h, nonce, err := tpm2.StartAuthSession(ch, tpm2.HandleNull, tpm2.HandleNull, make([]byte, 16), nil, tpm2.SessionType(typ), tpm2.AlgNull, tpm2.AlgSHA256)
		require.NoError(t, err)
		require.Len(t, nonce, 16, "nonceTPM is as long as nonceCaller")
		return h, nonce
	}
	policySecret := func(h tpmutil.Handle, nonce []byte) error {
		_, _, err := tpm2.PolicySecret(ch, tpm2.HandleEndorsement, tpm2.AuthCommand{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession}, h, nonce, nil, nil, 0)
		return err
	}
	// activate uses the SRK as the activated object: the authorization of the EK is checked
	// before the (garbage) secret, which then fails to decrypt.
	activate := func(h tpmutil.Handle) uint32 {
		resp := run(t, ch, cmd(t, "8002 00000000 00000147 81000001 81010001 00000012",
			"40000009 0000 01 0000", hexOf(binary.BigEndian.AppendUint32(nil, uint32(h))), "0000 01 0000",
			"0000 0004 01020304"))
		return rcOf(resp)
	}

	h, nonce := start(0x01)
	require.Equal(t, tpmutil.Handle(0x03000000), h)
	d, err := tpm2.PolicyGetDigest(ch, h)
	require.NoError(t, err)
	require.Equal(t, make([]byte, 32), d)
	require.Equal(t, uint32(0xA9D), activate(h), "no PolicySecret yet: TPM_RC_POLICY_FAIL, session 2")

	require.Error(t, policySecret(h, bytes.Repeat([]byte{1}, 16)))
	require.Equal(t, uint32(0x1CF), rcOf(run(t, ch, cmd(t, "8002 00000000 00000151 4000000b 03000000", pwAuth, "0010", zeros(15), "01 0000 0000 00000000"))), "wrong nonceTPM: TPM_RC_NONCE, parameter 1")
	require.NoError(t, policySecret(h, nonce))
	d, err = tpm2.PolicyGetDigest(ch, h)
	require.NoError(t, err)
	require.Equal(t, ekPub.AuthPolicy, tpmutil.U16Bytes(d), "PolicySecret(endorsement) is the EK's policy")
	require.Equal(t, uint32(0x2C4), activate(h), "authorized; the garbage secret is TPM_RC_VALUE, parameter 2")

	// A failed command leaves the session as it was; a successful one resets its policy.
	d, err = tpm2.PolicyGetDigest(ch, h)
	require.NoError(t, err)
	require.Equal(t, ekPub.AuthPolicy, tpmutil.U16Bytes(d))

	// A trial session computes the same digest but authorizes nothing.
	trial, trialNonce := start(0x03)
	require.NoError(t, policySecret(trial, trialNonce))
	require.Equal(t, uint32(0xA9D), activate(trial))

	start(0x01)
	require.Equal(t, uint32(0x903), rcOf(run(t, ch, cmd(t, "8001 00000000 00000176 40000007 40000007 0010", zeros(16), "0000 01 0010 000b"))),
		"three sessions at most: TPM_RC_SESSION_MEMORY")
	require.NoError(t, tpm2.FlushContext(ch, trial))
	require.Equal(t, uint32(0x919), activate(trial), "flushed: TPM_RC_REFERENCE_S1")
	require.NoError(t, tpm2.FlushContext(ch, h))
	require.Equal(t, uint32(0x1CB), rcOf(run(t, ch, cmd(t, "8001 00000000 00000165 03000000"))))
}

// TestLoadChecks: Load takes only blobs this TPM's SRK protected, for the public area they
// were made with.
func TestLoadChecks(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	a, b := newTPM(t, pool, 0), newTPM(t, pool, 1)
	chA, chB := open(t, a), open(t, b)
	tmpl := tpm2.Public{
		Type: tpm2.AlgECC, NameAlg: tpm2.AlgSHA256,
		// Without noDA, so that a wrong password is TPM_RC_AUTH_FAIL (TPM_RC_BAD_AUTH for
		// noDA entities, see TestErrorResponses).
		Attributes: tpm2.FlagSignerDefault,
		ECCParameters: &tpm2.ECCParams{
			Sign:    &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256},
			CurveID: tpm2.CurveNISTP256,
		},
	}
	priv, pub, _, creationHash, ticket, err := tpm2.CreateKey(chA, 0x81000001, tpm2.PCRSelection{}, "", "secret", tmpl)
	require.NoError(t, err)
	privB, _, _, _, _, err := tpm2.CreateKey(chB, 0x81000001, tpm2.PCRSelection{}, "", "", tmpl)
	require.NoError(t, err)

	flip := func(b []byte, i int) []byte {
		o := bytes.Clone(b)
		o[i] ^= 1
		return o
	}
	_, _, err = tpm2.Load(chA, 0x81000001, "", pub, flip(priv, len(priv)-1))
	require.Error(t, err)
	require.Equal(t, uint32(0x1DF), chA.lastRC(0x157), "tampered private: TPM_RC_INTEGRITY, parameter 1")
	_, _, err = tpm2.Load(chA, 0x81000001, "", pub, privB)
	require.Error(t, err)
	require.Equal(t, uint32(0x1DF), chA.lastRC(0x157), "another TPM's blob")
	_, _, err = tpm2.Load(chA, 0x81000001, "", flip(pub, len(pub)-1), priv)
	require.Error(t, err)
	require.Equal(t, uint32(0x1DF), chA.lastRC(0x157), "another public area")

	h, name, err := tpm2.Load(chA, 0x81000001, "", pub, priv)
	require.NoError(t, err)
	decoded, err := tpm2.DecodePublic(pub)
	require.NoError(t, err)
	want, err := decoded.Name()
	require.NoError(t, err)
	wantName, err := want.Encode()
	require.NoError(t, err)
	require.Equal(t, wantName, name)

	// The key's password ("secret", from Create's inSensitive) is checked.
	_, _, err = tpm2.Quote(chA, h, "", "", []byte("n"), tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: []int{0}}, tpm2.AlgNull)
	require.Error(t, err)
	require.Equal(t, uint32(0x98E), chA.lastRC(0x158), "TPM_RC_AUTH_FAIL, session 1")
	_, _, err = tpm2.Quote(chA, h, "secret", "", []byte("n"), tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: []int{0}}, tpm2.AlgNull)
	require.NoError(t, err)
	// A scheme other than the key's (legacy go-tpm cannot encode one with its hash).
	secretAuth := "0000000f 40000009 0000 01 0006" + hexOf([]byte("secret"))
	resp := run(t, chA, cmd(t, "8002 00000000 00000158", hexOf(binary.BigEndian.AppendUint32(nil, uint32(h))), secretAuth, "0001 6e 0014 000b 00000001 000b 03 010000"))
	require.Equal(t, uint32(0x2D2), rcOf(resp), "TPM_RC_SCHEME, parameter 2")

	// The creation ticket binds the name and the creation hash.
	scheme := tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256}
	_, _, err = tpm2.CertifyCreation(chA, "secret", h, h, nil, flip(creationHash, 0), scheme, ticket)
	require.Error(t, err)
	require.Equal(t, uint32(0x4E0), chA.lastRC(0x14a), "TPM_RC_TICKET, parameter 4")
	_, _, err = tpm2.CertifyCreation(chA, "secret", h, h, nil, creationHash, scheme, ticket)
	require.NoError(t, err)

	// Three transient objects at most.
	for range 2 {
		_, _, err = tpm2.Load(chA, 0x81000001, "", pub, priv)
		require.NoError(t, err)
	}
	_, _, err = tpm2.Load(chA, 0x81000001, "", pub, priv)
	require.Error(t, err)
	require.Equal(t, uint32(0x902), chA.lastRC(0x157), "TPM_RC_OBJECT_MEMORY")
	require.NoError(t, tpm2.FlushContext(chA, h))
	_, _, err = tpm2.Load(chA, 0x81000001, "", pub, priv)
	require.NoError(t, err)
}

// FuzzExecute: whatever arrives, the answer is one well-formed response and never a panic.
func FuzzExecute(f *testing.F) {
	for _, seed := range []string{
		"8001 00000000 0000017a 00000006 0000012c 00000001",
		"8001 00000000 00000169 01c00002",
		"8002 00000000 0000014e 01c00002 01c00002 " + pwAuth + " 0010 0000",
		"8001 00000000 00000173 81000001",
		"8002 00000000 00000153 81000001 " + pwAuth + " 0004 0000 0000 0058 0023 000b 00050472 0000 0010 0018 000b 0003 0010 0020 " + zeros(32) + " 0020 " + zeros(32) + " 0000 00000000",
		"8001 00000000 00000176 40000007 40000007 0010 " + zeros(16) + " 0000 01 0010 000b",
		"8002 00000000 00000151 4000000b 03000000 " + pwAuth + " 0000 0000 0000 00000000",
		"8002 00000000 00000147 81000001 81010001 00000012 40000009 0000 01 0000 03000000 0000 01 0000 0000 0004 01020304",
		"8002 00000000 00000158 80000000 " + pwAuth + " 0005 6e6f6e6365 0010 00000001 000b 03 ffffff",
		"8001 00000000 0000017e 00000001 000b 03 ffffff",
		"8001 00000000 00000165 80000000",
		"8001 00000000 00000189 03000000",
	} {
		f.Add(cmd(f, seed))
	}
	tpm := newTPM(f, newPool(f), 0)
	f.Fuzz(func(t *testing.T, in []byte) {
		ch, err := tpm.Open()
		require.NoError(t, err)
		defer ch.Close()
		// A session and an object first, so that commands referring to them get far.
		run(t, ch, cmd(t, "8001 00000000 00000176 40000007 40000007 0010", zeros(16), "0000 01 0010 000b"))
		// TPM_RC_FAILURE is what execute answers when it recovers from a panic.
		require.NotEqual(t, uint32(0x101), rcOf(run(t, ch, in)))
		if len(in) >= 10 {
			// The same bytes once more with a corrected size field.
			fixed := bytes.Clone(in)
			binary.BigEndian.PutUint32(fixed[2:], uint32(len(fixed)))
			require.NotEqual(t, uint32(0x101), rcOf(run(t, ch, fixed)))
		}
	})
}
