// Package ekpolicy decides whether a presented endorsement key (EK) may speak for a node: it
// must equal the node's enrolled EK, or — only where an operator opted in — be enrolled now, by
// trust on first use for a group, or because its certificate chains to a trusted manufacturer
// root. No IP address, MAC or header ever enters this decision.
package ekpolicy

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/attestboot/attestboot/services/ekcert"
	"github.com/attestboot/attestboot/services/inventory"
)

// Size limits of what a node presents.
const (
	MaxCertificateSize = 8 << 10
	MaxPublicKeySize   = 2 << 10
)

// Refusals, each a precise reason for the event log.
var (
	ErrMalformed       = errors.New("malformed endorsement key")
	ErrCertKeyMismatch = errors.New("EK certificate does not certify the presented EK public key")
	ErrCertUntrusted   = errors.New("EK certificate does not chain to a trusted manufacturer root")
	ErrNotEnrolled     = errors.New("node has no EK enrollment and no policy allows enrolling it")
	ErrEKMismatch      = errors.New("presented EK differs from the node's enrolled EK")
)

// Config is the policy.
type Config struct {
	// Roots of trusted EK manufacturer CAs; nil disables certificate checks. When set, any
	// certificate a node presents must chain to them.
	Roots         *x509.CertPool
	Intermediates *x509.CertPool
	// EnrollByCA enrolls an unenrolled node on its first attestation when its EK certificate
	// chains to Roots (source "ca"). Off by default.
	EnrollByCA bool
}

// Policy applies a Config.
type Policy struct{ cfg Config }

// New returns the policy; EnrollByCA without Roots is an error.
func New(cfg Config) (*Policy, error) {
	if cfg.EnrollByCA && cfg.Roots == nil {
		return nil, errors.New("ekpolicy: enrolling by manufacturer CA needs trusted roots")
	}
	return &Policy{cfg: cfg}, nil
}

// Identity is a parsed, self-consistent EK.
type Identity struct {
	Public      crypto.PublicKey
	PKIX        []byte
	SHA256      []byte // SHA-256 of PKIX: the inventory's identity of the TPM
	Certificate *x509.Certificate
	// Trusted is true when Certificate chains to the configured roots.
	Trusted bool
}

// Identify parses what a node presented: a certificate, a PKIX public key, or both (then the
// certificate must certify that key). With roots configured a certificate must chain to them.
func (p *Policy) Identify(certDER, pkix []byte, now time.Time) (Identity, error) {
	if len(certDER) == 0 && len(pkix) == 0 {
		return Identity{}, fmt.Errorf("%w: neither certificate nor public key", ErrMalformed)
	}
	if len(certDER) > MaxCertificateSize || len(pkix) > MaxPublicKeySize {
		return Identity{}, fmt.Errorf("%w: certificate of %d or public key of %d bytes too large", ErrMalformed, len(certDER), len(pkix))
	}
	var id Identity
	if len(pkix) > 0 {
		pub, err := x509.ParsePKIXPublicKey(pkix)
		if err != nil {
			return Identity{}, fmt.Errorf("%w: public key: %v", ErrMalformed, err)
		}
		id.Public = pub
	}
	if len(certDER) > 0 {
		cert, err := ekcert.Parse(certDER)
		if err != nil {
			return Identity{}, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		id.Certificate = cert
		if id.Public == nil {
			id.Public = cert.PublicKey
		} else if !ekcert.PublicKeyMatches(cert, id.Public) {
			return Identity{}, ErrCertKeyMismatch
		}
		if p.cfg.Roots != nil {
			if _, err := ekcert.VerifyWithOptions(cert, ekcert.Options{
				Roots: p.cfg.Roots, Intermediates: p.cfg.Intermediates, CurrentTime: now,
			}); err != nil {
				return Identity{}, fmt.Errorf("%w: %v", ErrCertUntrusted, err)
			}
			id.Trusted = true
		}
	}
	der, err := x509.MarshalPKIXPublicKey(id.Public)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	sum := sha256.Sum256(der)
	id.PKIX, id.SHA256 = der, sum[:]
	return id, nil
}

// Decide checks id against the node's enrollment (nil when it has none); trustOnFirstUse says
// whether a group of the node opted in to enrolling the first EK it sees. It returns a new
// enrollment to record when policy enrolls the node now, or nil when the existing one matched;
// an error refuses.
func (p *Policy) Decide(nodeID string, id Identity, enrolled *inventory.Enrollment, trustOnFirstUse bool) (*inventory.Enrollment, error) {
	if enrolled != nil {
		if !bytes.Equal(enrolled.EKSHA256, id.SHA256) {
			return nil, ErrEKMismatch
		}
		return nil, nil
	}
	e := &inventory.Enrollment{NodeID: nodeID, EKSHA256: id.SHA256, EKPublic: id.PKIX}
	if id.Certificate != nil {
		e.EKCertificate = id.Certificate.Raw
	}
	switch {
	case p.cfg.EnrollByCA && id.Trusted:
		e.Source = inventory.SourceCA
	case trustOnFirstUse:
		e.Source = inventory.SourceTOFU
	default:
		return nil, ErrNotEnrolled
	}
	return e, nil
}
