package ekcert

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fuzzSeeds are the swtpm EK certificates of testdata in the shapes Parse meets in the
// field: plain DER, inside the TCG NV header, padded, and PEM.
func fuzzSeeds(f *testing.F) (seeds [][]byte, roots, intermediates *x509.CertPool) {
	f.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	roots, intermediates = x509.NewCertPool(), x509.NewCertPool()
	if !roots.AppendCertsFromPEM(read("swtpm-root.pem")) || !intermediates.AppendCertsFromPEM(read("swtpm-intermediate.pem")) {
		f.Fatal("testdata CA certificates do not parse")
	}
	for _, name := range []string{"swtpm-ek-rsa2048.der", "swtpm-ek-secp384r1.der"} {
		der := read(name)
		nv := append([]byte{0x10, 0x01, 0x00, 0, 0}, der...)
		binary.BigEndian.PutUint16(nv[3:5], uint16(len(der)))
		seeds = append(seeds,
			der,
			nv,
			append(bytes.Clone(nv), bytes.Repeat([]byte{0xff}, 32)...),
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			der[:len(der)-1],
		)
	}
	return seeds, roots, intermediates
}

// FuzzParse feeds untrusted bytes through everything the attestor does with an EK
// certificate it receives from a node: parse, verify, read the TPM name, hash the key.
func FuzzParse(f *testing.F) {
	seeds, roots, intermediates := fuzzSeeds(f)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte{0x10, 0x01, 0x00, 0xff, 0xff})
	// The testdata certificates are valid from the day they were made until 9999.
	at := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)

	f.Fuzz(func(t *testing.T, data []byte) {
		cert, err := Parse(data)
		if err != nil {
			return
		}
		again, err := Parse(cert.Raw)
		if err != nil || !bytes.Equal(again.Raw, cert.Raw) {
			t.Fatalf("Parse(cert.Raw) does not round-trip: %v", err)
		}
		unhandled := len(cert.UnhandledCriticalExtensions)
		_, verr := VerifyWithOptions(cert, Options{Roots: roots, Intermediates: intermediates, CurrentTime: at})
		if len(cert.UnhandledCriticalExtensions) != unhandled {
			t.Fatal("VerifyWithOptions modified the certificate")
		}
		if verr == nil {
			// Only certificates signed by the swtpm CA can pass, and all of them name a TPM.
			if _, err := ParseTPMInfo(cert); err != nil {
				t.Fatalf("verified certificate without a TCG SAN: %v", err)
			}
		}
		_, _ = ParseTPMInfo(cert)
		switch cert.PublicKey.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey:
			// The EK key types; crypto/x509 also parses DSA keys, which it cannot encode.
			if _, err := SHA256PKIX(cert.PublicKey); err != nil {
				t.Fatalf("parsed public key %T cannot be hashed: %v", cert.PublicKey, err)
			}
			if !PublicKeyMatches(cert, cert.PublicKey) {
				t.Fatal("a certificate's key does not match itself")
			}
		}
	})
}

// FuzzParseTPMSAN targets the hand-written SAN parser directly, seeded with the SAN
// extensions of the swtpm certificates.
func FuzzParseTPMSAN(f *testing.F) {
	seeds, _, _ := fuzzSeeds(f)
	for _, s := range seeds {
		cert, err := Parse(s)
		if err != nil {
			continue
		}
		for _, e := range cert.Extensions {
			if e.Id.Equal(oidSubjectAltName) {
				f.Add(e.Value)
			}
		}
	}
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := parseTPMSAN(data)
		if err != nil {
			return
		}
		if info.Manufacturer == "" || info.Model == "" || info.Version == "" {
			t.Fatalf("accepted an incomplete TPM name %+v", info)
		}
	})
}
