package attestctl

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-attestation/attest"

	"github.com/attestboot/attestboot/services/ekcert"
	"github.com/attestboot/attestboot/services/tpmconn"
)

// defaultTPM is the kernel's resource-managed TPM device.
const defaultTPM = "/dev/tpmrm0"

// endorsementKey is an EK as read from a TPM or a file.
type endorsementKey struct {
	public crypto.PublicKey
	cert   *x509.Certificate // nil when only the public key is known
	sha256 [32]byte
}

func newEndorsementKey(pub crypto.PublicKey, cert *x509.Certificate) (*endorsementKey, error) {
	sum, err := ekcert.SHA256PKIX(pub)
	if err != nil {
		return nil, err
	}
	return &endorsementKey{public: pub, cert: cert, sha256: sum}, nil
}

// readTPMEK reads the endorsement key of the TPM at addr (/dev/tpmrm0, swtpm:HOST:PORT or
// unix:PATH), preferring the EK that has a certificate, as the node agent does.
func readTPMEK(addr string) (*endorsementKey, error) {
	ch, err := tpmconn.Open(addr)
	if err != nil {
		return nil, &exitError{code: ExitError, err: fmt.Errorf("open TPM %s: %w", addr, err),
			hint: "give --tpm /dev/tpmrm0 (as root or the tss group), swtpm:HOST:PORT or unix:PATH"}
	}
	tpm, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: ch})
	if err != nil {
		ch.Close()
		return nil, fmt.Errorf("open TPM %s: %w", addr, err)
	}
	defer tpm.Close()
	eks, err := tpm.EKs()
	if err != nil {
		return nil, fmt.Errorf("read endorsement keys of %s: %w", addr, err)
	}
	if len(eks) == 0 {
		return nil, fmt.Errorf("the TPM at %s has no endorsement key", addr)
	}
	ek := eks[0]
	for _, e := range eks {
		if e.Certificate != nil {
			ek = e
			break
		}
	}
	return newEndorsementKey(ek.Public, ek.Certificate)
}

// readEKCertFile reads an EK certificate, PEM or DER.
func readEKCertFile(path string) (*endorsementKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read EK certificate: %w", err)
	}
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	cert, err := ekcert.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("EK certificate %s: %w", path, err)
	}
	return newEndorsementKey(cert.PublicKey, cert)
}

// readEKPubFile reads an EK public key, PKIX in PEM ("PUBLIC KEY") or DER, as
// `tpm2_readpublic -f der` or `-f pem` writes it.
func readEKPubFile(path string) (*endorsementKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read EK public key: %w", err)
	}
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	pub, err := x509.ParsePKIXPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("EK public key %s: want PKIX (SubjectPublicKeyInfo) PEM or DER: %w", path, err)
	}
	return newEndorsementKey(pub, nil)
}

// parseSHA256 accepts 64 hex digits, optionally with colons or a "sha256:" prefix.
func parseSHA256(s string) ([]byte, error) {
	h := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:"), ":", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("EK SHA-256 %q: want 64 hex digits", s)
	}
	return b, nil
}

func keyDescription(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	}
	return fmt.Sprintf("%T", pub)
}

func runEK(a *app, args []string) error {
	return a.sub("ek", args, map[string]func([]string) error{"read": a.ekRead})
}

func (a *app) ekRead(args []string) error {
	fs := a.flags("ek read", "ek read [--tpm ADDR] [--pem]")
	addr := fs.String("tpm", defaultTPM, "TPM `address`: a device path, swtpm:HOST:PORT or unix:PATH")
	withPEM := fs.Bool("pem", false, "also print the EK certificate (or public key) as PEM")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	ek, err := readTPMEK(*addr)
	if err != nil {
		return err
	}
	var pemText string
	if ek.cert != nil {
		pemText = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ek.cert.Raw}))
	} else {
		der, err := x509.MarshalPKIXPublicKey(ek.public)
		if err != nil {
			return fmt.Errorf("encode EK public key: %w", err)
		}
		pemText = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	if a.cfg.JSON {
		out := map[string]any{"tpm": *addr, "ek_sha256": hex.EncodeToString(ek.sha256[:]), "key": keyDescription(ek.public), "pem": pemText}
		if ek.cert != nil {
			out["certificate"] = map[string]any{"subject": ek.cert.Subject.String(), "issuer": ek.cert.Issuer.String(),
				"serial": ek.cert.SerialNumber.String(), "not_after": ek.cert.NotAfter}
		}
		return a.printJSON(out)
	}
	t := a.table()
	t.row("tpm:", *addr)
	t.row("ek sha256:", hex.EncodeToString(ek.sha256[:]))
	t.row("key:", keyDescription(ek.public))
	if ek.cert != nil {
		t.row("subject:", ek.cert.Subject.String())
		t.row("issuer:", ek.cert.Issuer.String())
		t.row("serial:", ek.cert.SerialNumber.String())
		t.row("not after:", ek.cert.NotAfter.Local().Format("2006-01-02"))
	} else {
		t.row("certificate:", "none (enroll by public key or hash)")
	}
	if err := t.flush(); err != nil {
		return err
	}
	if *withPEM {
		_, err = fmt.Fprint(a.env.Stdout, pemText)
	}
	return err
}
