// Package ekcert parses and verifies TPM endorsement key (EK) certificates: chain
// verification against manufacturer CA roots that understands the TCG-specific critical
// Subject Alternative Name instead of switching verification off, and the SHA-256 of the
// EK's PKIX encoding that identifies an EK throughout attestboot.
package ekcert

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Object identifiers from the TCG EK Credential Profile for TPM Family 2.0.
var (
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

	// OIDTPMManufacturer, OIDTPMModel and OIDTPMVersion are the attributes of the
	// directoryName in an EK certificate's Subject Alternative Name (tcg-at-tpm*).
	OIDTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	OIDTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	OIDTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}

	// oidTCGAttributes is the arc of TCG attribute types (tcg-at), which also holds
	// attributes some vendors add next to the three required ones.
	oidTCGAttributes = asn1.ObjectIdentifier{2, 23, 133, 2}

	// OIDEKCertificate is the extended key usage of an EK certificate (tcg-kp-EKCertificate).
	OIDEKCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// MaxSize bounds the certificates Parse accepts. EK certificates are 1-2 KiB; TPM NV indices
// hold at most a few KiB.
const MaxSize = 16 << 10

// Sentinel errors, for errors.Is.
var (
	// ErrParse: the bytes are not a certificate.
	ErrParse = errors.New("ekcert: not an X.509 certificate")
	// ErrNoRoots: verification was asked for without trust anchors. Go would otherwise fall
	// back to the system roots, which never certify TPMs.
	ErrNoRoots = errors.New("ekcert: no trusted EK CA roots")
	// ErrUntrusted: the certificate does not chain to the roots.
	ErrUntrusted = errors.New("ekcert: certificate does not chain to a trusted EK CA")
	// ErrTPMSAN: the Subject Alternative Name is not the TCG directoryName form.
	ErrTPMSAN = errors.New("ekcert: subject alternative name is not a TCG TPM name")
	// ErrExtKeyUsage: the certificate is restricted to purposes other than EK certification.
	ErrExtKeyUsage = errors.New("ekcert: extended key usage does not allow an EK certificate")
)

// TPMInfo is the TPM identity an EK certificate names in its Subject Alternative Name.
// Values are as encoded, e.g. Manufacturer "id:49465800" (IFX) or "id:00001014" (swtpm).
type TPMInfo struct {
	Manufacturer string
	Model        string
	Version      string
}

// Parse parses an EK certificate as read from TPM NV memory or a manufacturer's service.
// Like go-attestation it tolerates the TCG PC Client NV header (0x10 0x01 0x00 + length) and
// trailing bytes after the DER certificate (NV indices are often padded); it also accepts a
// PEM CERTIFICATE block. It rejects anything larger than MaxSize.
func Parse(der []byte) (*x509.Certificate, error) {
	if len(der) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrParse, len(der), MaxSize)
	}
	if bytes.HasPrefix(bytes.TrimLeft(der, " \t\r\n"), []byte("-----BEGIN")) {
		block, _ := pem.Decode(der)
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: PEM input without a CERTIFICATE block", ErrParse)
		}
		der = block.Bytes
	}
	// TCG PC Client Platform TPM Profile: an EK certificate in NV may be prefixed with
	// 0x10 0x01 0x00 and a big-endian uint16 length.
	if len(der) > 5 && bytes.Equal(der[:3], []byte{0x10, 0x01, 0x00}) {
		n := int(binary.BigEndian.Uint16(der[3:5]))
		if len(der) < 5+n {
			return nil, fmt.Errorf("%w: NV header announces %d bytes, %d present", ErrParse, n, len(der)-5)
		}
		der = der[5 : 5+n]
	}
	// Keep only the outer DER element: whatever follows it is padding, not certificate.
	var outer asn1.RawValue
	if _, err := asn1.Unmarshal(der, &outer); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrParse, err)
	}
	cert, err := x509.ParseCertificate(outer.FullBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrParse, err)
	}
	return cert, nil
}

// Options tunes VerifyWithOptions.
type Options struct {
	// Roots are the trusted EK CA certificates. Required.
	Roots *x509.CertPool
	// Intermediates may complete the chain; nil means none.
	Intermediates *x509.CertPool
	// CurrentTime is the time of validity checks; zero means now. Attestors pass their
	// clock here so that expiry is testable.
	CurrentTime time.Time
}

// Verify checks that cert is an EK certificate issued, possibly through intermediates, by
// one of roots. See VerifyWithOptions.
func Verify(cert *x509.Certificate, roots, intermediates *x509.CertPool) error {
	_, err := VerifyWithOptions(cert, Options{Roots: roots, Intermediates: intermediates})
	return err
}

// VerifyWithOptions verifies cert and returns its chains. The TCG Subject Alternative Name
// (critical, a directoryName of tcg-at-tpm* attributes, which crypto/x509 does not parse and
// therefore lists as unhandled) is accepted only after it was parsed and found to be that
// form; any other unhandled critical extension still fails verification. If the certificate
// lists extended key usages, one must be tcg-kp-EKCertificate or anyExtendedKeyUsage.
// cert itself is not modified.
func VerifyWithOptions(cert *x509.Certificate, opts Options) ([][]*x509.Certificate, error) {
	if cert == nil {
		return nil, errors.New("ekcert: nil certificate")
	}
	if opts.Roots == nil {
		return nil, ErrNoRoots
	}
	if err := checkExtKeyUsage(cert); err != nil {
		return nil, err
	}
	leaf := *cert // shallow copy: the caller's certificate keeps its extension list
	if slices.ContainsFunc(cert.UnhandledCriticalExtensions, oidSubjectAltName.Equal) {
		if _, err := ParseTPMInfo(cert); err != nil {
			return nil, err
		}
		leaf.UnhandledCriticalExtensions = slices.DeleteFunc(
			slices.Clone(cert.UnhandledCriticalExtensions), oidSubjectAltName.Equal)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         opts.Roots,
		Intermediates: opts.Intermediates,
		CurrentTime:   opts.CurrentTime,
		// EK certificates carry tcg-kp-EKCertificate, which crypto/x509 does not know;
		// checkExtKeyUsage above has checked the leaf for it.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	return chains, nil
}

// checkExtKeyUsage accepts a certificate without extended key usages (any purpose, RFC 5280)
// or one that includes tcg-kp-EKCertificate or anyExtendedKeyUsage.
func checkExtKeyUsage(cert *x509.Certificate) error {
	if len(cert.ExtKeyUsage) == 0 && len(cert.UnknownExtKeyUsage) == 0 {
		return nil
	}
	if slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageAny) ||
		slices.ContainsFunc(cert.UnknownExtKeyUsage, OIDEKCertificate.Equal) {
		return nil
	}
	return ErrExtKeyUsage
}

// ParseTPMInfo parses the TCG Subject Alternative Name of an EK certificate: a sequence of
// directoryNames whose attributes are all TCG attributes (2.23.133.2.*) and which together
// name the TPM manufacturer, model and version. Any other kind of name, or a missing
// attribute, is ErrTPMSAN.
func ParseTPMInfo(cert *x509.Certificate) (TPMInfo, error) {
	if cert == nil {
		return TPMInfo{}, errors.New("ekcert: nil certificate")
	}
	var ext *pkix.Extension
	for i := range cert.Extensions {
		if cert.Extensions[i].Id.Equal(oidSubjectAltName) {
			ext = &cert.Extensions[i]
			break
		}
	}
	if ext == nil {
		return TPMInfo{}, fmt.Errorf("%w: no subject alternative name", ErrTPMSAN)
	}
	return parseTPMSAN(ext.Value)
}

func parseTPMSAN(der []byte) (TPMInfo, error) {
	var names []asn1.RawValue
	rest, err := asn1.Unmarshal(der, &names)
	if err != nil {
		return TPMInfo{}, fmt.Errorf("%w: %w", ErrTPMSAN, err)
	}
	if len(rest) != 0 {
		return TPMInfo{}, fmt.Errorf("%w: trailing data", ErrTPMSAN)
	}
	if len(names) == 0 {
		return TPMInfo{}, fmt.Errorf("%w: empty", ErrTPMSAN)
	}
	var info TPMInfo
	for _, n := range names {
		// GeneralName directoryName is [4], explicitly tagged because Name is a CHOICE.
		if n.Class != asn1.ClassContextSpecific || n.Tag != 4 || !n.IsCompound {
			return TPMInfo{}, fmt.Errorf("%w: general name with tag [%d] (class %d), want directoryName [4]", ErrTPMSAN, n.Tag, n.Class)
		}
		var rdns pkix.RDNSequence
		rest, err := asn1.Unmarshal(n.Bytes, &rdns)
		if err != nil {
			return TPMInfo{}, fmt.Errorf("%w: directoryName: %w", ErrTPMSAN, err)
		}
		if len(rest) != 0 {
			return TPMInfo{}, fmt.Errorf("%w: directoryName: trailing data", ErrTPMSAN)
		}
		for _, rdn := range rdns {
			for _, atv := range rdn {
				if !hasPrefix(atv.Type, oidTCGAttributes) {
					return TPMInfo{}, fmt.Errorf("%w: attribute %v is not a TCG attribute", ErrTPMSAN, atv.Type)
				}
				var dst *string
				switch {
				case atv.Type.Equal(OIDTPMManufacturer):
					dst = &info.Manufacturer
				case atv.Type.Equal(OIDTPMModel):
					dst = &info.Model
				case atv.Type.Equal(OIDTPMVersion):
					dst = &info.Version
				default:
					continue
				}
				s, ok := atv.Value.(string)
				if !ok || s == "" {
					return TPMInfo{}, fmt.Errorf("%w: attribute %v is not a non-empty string", ErrTPMSAN, atv.Type)
				}
				if *dst != "" {
					return TPMInfo{}, fmt.Errorf("%w: attribute %v repeated", ErrTPMSAN, atv.Type)
				}
				*dst = s
			}
		}
	}
	if info.Manufacturer == "" || info.Model == "" || info.Version == "" {
		return TPMInfo{}, fmt.Errorf("%w: manufacturer, model and version are all required, got %+v", ErrTPMSAN, info)
	}
	return info, nil
}

func hasPrefix(oid, arc asn1.ObjectIdentifier) bool {
	return len(oid) > len(arc) && slices.Equal(oid[:len(arc)], arc)
}

// PublicKeyMatches reports whether pub is the key cert certifies. It is false for nil
// arguments and for keys of different types.
func PublicKeyMatches(cert *x509.Certificate, pub crypto.PublicKey) bool {
	if cert == nil || cert.PublicKey == nil || pub == nil {
		return false
	}
	k, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(pub)
}

// SHA256PKIX returns the SHA-256 of the DER SubjectPublicKeyInfo (PKIX) encoding of pub: the
// EK identity stored in enrollments and attestations. Every party computes it the same way
// from an RSA or ECDSA public key, whether it came from a certificate or from the TPM.
func SHA256PKIX(pub crypto.PublicKey) ([32]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [32]byte{}, fmt.Errorf("ekcert: encode public key: %w", err)
	}
	return sha256.Sum256(der), nil
}

// LoadRoots returns a pool of every certificate in dir (see LoadCertificates). Every one of
// them becomes a trust anchor, intermediates included: put only certificates you trust to
// certify EKs in that directory. An empty directory is an error, so that a misconfigured
// attestor fails closed instead of trusting nothing silently.
func LoadRoots(dir string) (*x509.CertPool, error) {
	certs, err := LoadCertificates(dir)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// LoadCertificates reads the certificates in the files of dir ending in .pem, .crt, .cer or
// .der (not recursively). A file holds PEM CERTIFICATE blocks, or else one DER certificate
// (TPM vendors publish both). A file with anything else, or a directory without any
// certificate, is an error.
func LoadCertificates(dir string) ([]*x509.Certificate, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("ekcert: read trust directory: %w", err)
	}
	var certs []*x509.Certificate
	for _, e := range entries {
		if e.IsDir() || !isCertFileName(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("ekcert: %w", err)
		}
		cs, err := parseCertFile(b)
		if err != nil {
			return nil, fmt.Errorf("ekcert: %s: %w", path, err)
		}
		certs = append(certs, cs...)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("ekcert: no certificates in %s", dir)
	}
	return certs, nil
}

// isCertFileName says which files of a trust directory hold certificates; the others
// (README, CRLs, private keys) are ignored.
func isCertFileName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".pem", ".crt", ".cer", ".der":
		return true
	}
	return false
}

func parseCertFile(b []byte) ([]*x509.Certificate, error) {
	if !bytes.Contains(b, []byte("-----BEGIN")) {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, fmt.Errorf("neither PEM nor a DER certificate: %w", err)
		}
		return []*x509.Certificate{c}, nil
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	if len(bytes.TrimSpace(b)) != 0 {
		return nil, errors.New("trailing data after the last PEM block")
	}
	return certs, nil
}
