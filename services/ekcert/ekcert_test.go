package ekcert_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/ekcert"
)

// swtpmFixture is an EK certificate chain made by swtpm_setup with swtpm_localca (RECIPES.md):
// root CA -> intermediate ("swtpm-localca") -> RSA-2048 and ECC P-384 EK certificates, each
// with the TCG critical Subject Alternative Name.
type swtpmFixture struct {
	root, intermediate *x509.Certificate
	rsaDER, eccDER     []byte
	rsa, ecc           *x509.Certificate
	// at is a time inside every certificate's validity period.
	at time.Time
}

func loadSwtpm(t testing.TB) swtpmFixture {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		require.NoError(t, err)
		return b
	}
	pemCert := func(name string) *x509.Certificate {
		block, _ := pem.Decode(read(name))
		require.NotNil(t, block)
		c, err := x509.ParseCertificate(block.Bytes)
		require.NoError(t, err)
		return c
	}
	f := swtpmFixture{
		root:         pemCert("swtpm-root.pem"),
		intermediate: pemCert("swtpm-intermediate.pem"),
		rsaDER:       read("swtpm-ek-rsa2048.der"),
		eccDER:       read("swtpm-ek-secp384r1.der"),
	}
	var err error
	f.rsa, err = ekcert.Parse(f.rsaDER)
	require.NoError(t, err)
	f.ecc, err = ekcert.Parse(f.eccDER)
	require.NoError(t, err)
	f.at = f.rsa.NotBefore.Add(time.Hour)
	return f
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func TestParse(t *testing.T) {
	t.Parallel()
	f := loadSwtpm(t)
	nvWrapped := append([]byte{0x10, 0x01, 0x00, 0, 0}, f.rsaDER...)
	binary.BigEndian.PutUint16(nvWrapped[3:5], uint16(len(f.rsaDER)))

	tests := map[string]struct {
		in      []byte
		wantErr bool
	}{
		"DER":                   {in: f.rsaDER},
		"NV header":             {in: nvWrapped},
		"NV header and 0xff":    {in: append(bytes.Clone(nvWrapped), bytes.Repeat([]byte{0xff}, 300)...)},
		"trailing padding":      {in: append(bytes.Clone(f.rsaDER), bytes.Repeat([]byte{0xff}, 64)...)},
		"trailing zeros":        {in: append(bytes.Clone(f.rsaDER), make([]byte, 64)...)},
		"PEM":                   {in: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.rsaDER})},
		"PEM of another kind":   {in: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: f.rsaDER}), wantErr: true},
		"empty":                 {in: nil, wantErr: true},
		"garbage":               {in: []byte("not a certificate"), wantErr: true},
		"truncated":             {in: f.rsaDER[:len(f.rsaDER)/2], wantErr: true},
		"NV header too short":   {in: nvWrapped[:100], wantErr: true},
		"larger than MaxSize":   {in: append(bytes.Clone(f.rsaDER), make([]byte, ekcert.MaxSize)...), wantErr: true},
		"NV header, not a cert": {in: []byte{0x10, 0x01, 0x00, 0x00, 0x03, 0x30, 0x01, 0x00}, wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := ekcert.Parse(tt.in)
			if tt.wantErr {
				require.ErrorIs(t, err, ekcert.ErrParse)
				return
			}
			require.NoError(t, err)
			require.Equal(t, f.rsaDER, c.Raw)
		})
	}
}

func TestVerifySwtpmChain(t *testing.T) {
	t.Parallel()
	f := loadSwtpm(t)
	for name, cert := range map[string]*x509.Certificate{"rsa": f.rsa, "ecc": f.ecc} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// crypto/x509 alone refuses the TCG SAN: this is what the package exists for.
			_, err := cert.Verify(x509.VerifyOptions{
				Roots: pool(f.root), Intermediates: pool(f.intermediate), CurrentTime: f.at,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			})
			require.ErrorAs(t, err, new(x509.UnhandledCriticalExtension))

			chains, err := ekcert.VerifyWithOptions(cert, ekcert.Options{
				Roots: pool(f.root), Intermediates: pool(f.intermediate), CurrentTime: f.at,
			})
			require.NoError(t, err)
			require.Len(t, chains, 1)
			require.Len(t, chains[0], 3)
			require.Equal(t, cert.Raw, chains[0][0].Raw)
			require.Equal(t, f.intermediate.Raw, chains[0][1].Raw)
			require.Equal(t, f.root.Raw, chains[0][2].Raw)
			require.Len(t, cert.UnhandledCriticalExtensions, 1, "the caller's certificate is not modified")

			require.NoError(t, ekcert.Verify(cert, pool(f.root, f.intermediate), nil),
				"an intermediate in the root pool is a trust anchor")

			info, err := ekcert.ParseTPMInfo(cert)
			require.NoError(t, err)
			require.Equal(t, ekcert.TPMInfo{Manufacturer: "id:00001014", Model: "swtpm", Version: "id:20191023"}, info)
		})
	}
}

func TestVerifySwtpmChainFailures(t *testing.T) {
	t.Parallel()
	f := loadSwtpm(t)
	other := newCA(t)

	_, err := ekcert.VerifyWithOptions(f.rsa, ekcert.Options{Roots: nil, Intermediates: pool(f.intermediate), CurrentTime: f.at})
	require.ErrorIs(t, err, ekcert.ErrNoRoots, "nil roots must never mean the system roots")

	_, err = ekcert.VerifyWithOptions(f.rsa, ekcert.Options{Roots: pool(f.root), CurrentTime: f.at})
	require.ErrorIs(t, err, ekcert.ErrUntrusted, "intermediate missing")

	_, err = ekcert.VerifyWithOptions(f.rsa, ekcert.Options{Roots: pool(other.cert), Intermediates: pool(f.intermediate), CurrentTime: f.at})
	require.ErrorIs(t, err, ekcert.ErrUntrusted, "another CA")

	_, err = ekcert.VerifyWithOptions(f.rsa, ekcert.Options{
		Roots: pool(f.root), Intermediates: pool(f.intermediate), CurrentTime: f.rsa.NotBefore.Add(-time.Hour),
	})
	require.ErrorIs(t, err, ekcert.ErrUntrusted, "not yet valid")

	require.Error(t, ekcert.Verify(nil, pool(f.root), nil))
}

// testCA issues EK-like certificates with whatever extensions a test needs.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t testing.TB) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test EK CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return testCA{cert: c, key: key}
}

func (ca testCA) issue(t testing.TB, pub crypto.PublicKey, mod func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(2),
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(time.Hour),
		KeyUsage:           x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{ekcert.OIDEKCertificate},
		ExtraExtensions:    []pkix.Extension{tcgSAN(t, true, tcgAttrs("id:49465800", "SLB9670", "id:0007003D"))},
	}
	if mod != nil {
		mod(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	require.NoError(t, err)
	c, err := ekcert.Parse(der)
	require.NoError(t, err)
	return c
}

func tcgAttrs(manufacturer, model, version string) pkix.RDNSequence {
	var rdn pkix.RelativeDistinguishedNameSET
	for _, a := range []struct {
		oid asn1.ObjectIdentifier
		v   string
	}{{ekcert.OIDTPMManufacturer, manufacturer}, {ekcert.OIDTPMModel, model}, {ekcert.OIDTPMVersion, version}} {
		if a.v != "" {
			rdn = append(rdn, pkix.AttributeTypeAndValue{Type: a.oid, Value: a.v})
		}
	}
	return pkix.RDNSequence{rdn}
}

// tcgSAN builds a Subject Alternative Name holding one directoryName per given name.
func tcgSAN(t testing.TB, critical bool, names ...pkix.RDNSequence) pkix.Extension {
	t.Helper()
	var gns []asn1.RawValue
	for _, n := range names {
		b, err := asn1.Marshal(n)
		require.NoError(t, err)
		gns = append(gns, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: b})
	}
	return rawSAN(t, critical, gns...)
}

func rawSAN(t testing.TB, critical bool, gns ...asn1.RawValue) pkix.Extension {
	t.Helper()
	v, err := asn1.Marshal(gns)
	require.NoError(t, err)
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: critical, Value: v}
}

func TestVerifyExtensions(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	roots := pool(ca.cert)

	withSAN := func(ext pkix.Extension) func(*x509.Certificate) {
		return func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{ext} }
	}
	tests := map[string]struct {
		mod     func(*x509.Certificate)
		wantErr error
	}{
		"TCG SAN and EK EKU": {},
		"no EKU":             {mod: func(c *x509.Certificate) { c.UnknownExtKeyUsage = nil }},
		"any EKU": {mod: func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = nil
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
		}},
		"EK EKU among others": {mod: func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }},
		"TLS-only EKU": {
			mod: func(c *x509.Certificate) {
				c.UnknownExtKeyUsage = nil
				c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			},
			wantErr: ekcert.ErrExtKeyUsage,
		},
		"non-critical TCG SAN": {mod: withSAN(tcgSAN(t, false, tcgAttrs("id:1", "m", "v")))},
		"TCG SAN over two directoryNames": {mod: withSAN(tcgSAN(t, true,
			tcgAttrs("id:1", "", ""), tcgAttrs("", "m", "v")))},
		"TCG SAN with an extra TCG attribute": {mod: withSAN(tcgSAN(t, true, append(tcgAttrs("id:1", "m", "v"),
			pkix.RelativeDistinguishedNameSET{{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 15}, Value: "label"}})))},
		"critical SAN without version": {
			mod: withSAN(tcgSAN(t, true, tcgAttrs("id:1", "m", ""))), wantErr: ekcert.ErrTPMSAN,
		},
		"critical SAN with a common name": {
			mod: withSAN(tcgSAN(t, true, append(tcgAttrs("id:1", "m", "v"),
				pkix.RelativeDistinguishedNameSET{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "evil"}}))),
			wantErr: ekcert.ErrTPMSAN,
		},
		"critical SAN with a registeredID": {
			mod:     withSAN(rawSAN(t, true, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 8, Bytes: []byte{0x2a, 0x03}})),
			wantErr: ekcert.ErrTPMSAN,
		},
		"critical SAN with a non-string manufacturer": {
			mod: withSAN(tcgSAN(t, true, pkix.RDNSequence{{
				{Type: ekcert.OIDTPMManufacturer, Value: 7}, {Type: ekcert.OIDTPMModel, Value: "m"}, {Type: ekcert.OIDTPMVersion, Value: "v"},
			}})),
			wantErr: ekcert.ErrTPMSAN,
		},
		"another unknown critical extension": {
			mod: func(c *x509.Certificate) {
				c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}})
			},
			wantErr: ekcert.ErrUntrusted,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cert := ca.issue(t, &key.PublicKey, tt.mod)
			err := ekcert.Verify(cert, roots, nil)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
		})
	}
}

func TestParseTPMInfoWithoutSAN(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	cert := ca.issue(t, &key.PublicKey, func(c *x509.Certificate) { c.ExtraExtensions = nil })
	_, err = ekcert.ParseTPMInfo(cert)
	require.ErrorIs(t, err, ekcert.ErrTPMSAN)
	require.NoError(t, ekcert.Verify(cert, pool(ca.cert), nil), "the SAN is not required for the chain")
}

func TestPublicKeyMatches(t *testing.T) {
	t.Parallel()
	f := loadSwtpm(t)
	require.True(t, ekcert.PublicKeyMatches(f.rsa, f.rsa.PublicKey))
	rsaCopy := *(f.rsa.PublicKey.(*rsa.PublicKey))
	require.True(t, ekcert.PublicKeyMatches(f.rsa, &rsaCopy), "equal value, different pointer")
	require.True(t, ekcert.PublicKeyMatches(f.ecc, f.ecc.PublicKey))
	require.False(t, ekcert.PublicKeyMatches(f.rsa, f.ecc.PublicKey))
	require.False(t, ekcert.PublicKeyMatches(f.ecc, f.rsa.PublicKey))
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	require.False(t, ekcert.PublicKeyMatches(f.rsa, &other.PublicKey))
	require.False(t, ekcert.PublicKeyMatches(f.rsa, nil))
	require.False(t, ekcert.PublicKeyMatches(nil, f.rsa.PublicKey))
}

func TestSHA256PKIX(t *testing.T) {
	t.Parallel()
	f := loadSwtpm(t)
	for _, c := range []*x509.Certificate{f.rsa, f.ecc} {
		got, err := ekcert.SHA256PKIX(c.PublicKey)
		require.NoError(t, err)
		// The certificate's SubjectPublicKeyInfo is the PKIX encoding of its key.
		require.Equal(t, sha256.Sum256(c.RawSubjectPublicKeyInfo), got)
	}
	a, err := ekcert.SHA256PKIX(f.rsa.PublicKey)
	require.NoError(t, err)
	b, err := ekcert.SHA256PKIX(f.ecc.PublicKey)
	require.NoError(t, err)
	require.NotEqual(t, a, b)

	_, err = ekcert.SHA256PKIX(struct{}{})
	require.Error(t, err)
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	_, err = ekcert.SHA256PKIX(edPub)
	require.NoError(t, err, "any key x509 can encode has an identity")
}

func TestLoadRoots(t *testing.T) {
	t.Parallel()
	f := loadSwtpm(t)
	dir := t.TempDir()
	write := func(name string, b []byte) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	write("root.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.root.Raw}))
	write("intermediate.CRT", f.intermediate.Raw) // DER, as some vendors publish
	write("README", []byte("not a certificate, ignored"))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub.pem"), 0o755))

	certs, err := ekcert.LoadCertificates(dir)
	require.NoError(t, err)
	require.Len(t, certs, 2)

	roots, err := ekcert.LoadRoots(dir)
	require.NoError(t, err)
	_, err = ekcert.VerifyWithOptions(f.rsa, ekcert.Options{Roots: roots, CurrentTime: f.at})
	require.NoError(t, err)

	bundle := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bundle, "bundle.pem"), append(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.root.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.intermediate.Raw})...), 0o644))
	certs, err = ekcert.LoadCertificates(bundle)
	require.NoError(t, err)
	require.Len(t, certs, 2)
}

func TestLoadRootsFailsClosed(t *testing.T) {
	t.Parallel()
	f := loadSwtpm(t)
	tests := map[string]map[string][]byte{
		"empty directory":  {},
		"only other files": {"README.md": []byte("x")},
		"private key": {
			"key.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
		},
		"garbage": {"root.crt": []byte("garbage")},
		"trailing garbage": {
			"root.pem": append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.root.Raw}), "junk"...),
		},
	}
	for name, files := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for n, b := range files {
				require.NoError(t, os.WriteFile(filepath.Join(dir, n), b, 0o644))
			}
			_, err := ekcert.LoadRoots(dir)
			require.Error(t, err)
		})
	}
	_, err := ekcert.LoadRoots(filepath.Join(t.TempDir(), "absent"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
