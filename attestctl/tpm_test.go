package attestctl_test

import (
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/tpmtest"
)

// TestTPM reads EKs from swtpm and enrolls them from the TPM, a certificate file and CSV.
func TestTPM(t *testing.T) {
	t.Parallel()
	tpms := tpmtest.StartN(t, 3)
	s := startStack(t)
	want := func(i int) string { sum := tpms[i].EKSHA256(); return hex.EncodeToString(sum[:]) }

	r := s.run(t, "ek", "read", "--tpm", tpms[0].Addr(), "--pem")
	require.Equal(t, 0, r.code, r)
	require.Regexp(t, `ek sha256:\s+`+want(0), r.stdout)
	require.Regexp(t, `key:\s+RSA 2048`, r.stdout)
	require.Regexp(t, `issuer:\s+.+`, r.stdout)
	blk, _ := pem.Decode([]byte(r.stdout[strings.Index(r.stdout, "-----BEGIN"):]))
	require.NotNil(t, blk, "--pem prints the certificate")
	require.Equal(t, tpms[0].EKCertificate().Raw, blk.Bytes)

	r = s.run(t, "-json", "ek", "read", "--tpm", tpms[0].Addr())
	require.Equal(t, 0, r.code, r)
	var doc struct {
		EKSHA256    string `json:"ek_sha256"`
		Certificate struct {
			Subject, Issuer string
		} `json:"certificate"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc))
	require.Equal(t, want(0), doc.EKSHA256)
	require.Equal(t, tpms[0].EKCertificate().Issuer.String(), doc.Certificate.Issuer)

	// Enroll straight from the TPM: the certificate is sent, the hash is the binding.
	require.Equal(t, 0, s.run(t, "nodes", "create", "tpm0").code)
	r = s.run(t, "enroll", "tpm0", "--tpm", tpms[0].Addr())
	require.Equal(t, 0, r.code, r)
	require.Regexp(t, `ek sha256:\s+`+want(0), r.stdout)
	require.Regexp(t, `certificate issuer:\s+.+`, r.stdout)

	// From a PEM certificate file, and from a CSV that names a DER certificate file.
	dir := t.TempDir()
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tpms[1].EKCertificate().Raw})
	require.Equal(t, 0, s.run(t, "nodes", "create", "tpm1").code)
	r = s.run(t, "enroll", "tpm1", "--ek-cert", writeFile(t, dir, "tpm1.pem", string(certPEM)))
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, want(1))

	writeFile(t, dir, "tpm2.der", string(tpms[2].EKCertificate().Raw))
	csv := writeFile(t, dir, "nodes.csv", "node_id,hostname,mac,ek_cert\ntpm2,tpm2.cluster,,tpm2.der\n")
	r = s.run(t, "-json", "enroll", "--csv", csv)
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, want(2))
	r = s.run(t, "enrollment", "get", "tpm2")
	require.Equal(t, 0, r.code, r)
	require.Regexp(t, `ek sha256:\s+`+want(2), r.stdout)

	r = s.run(t, "ek", "read", "--tpm", "swtpm:127.0.0.1:1")
	require.Equal(t, 1, r.code, r)
	require.Contains(t, r.stderr, "hint: give --tpm")
}
