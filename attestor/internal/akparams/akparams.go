// Package akparams decides whether a presented attestation key is fit to sign quotes: a
// restricted, TPM-generated, non-duplicable signing-only key of adequate strength. It adds the
// checks go-attestation's CheckAKParameters leaves out (sign, decrypt, name algorithm, signing
// scheme) and then runs that one too.
package akparams

import (
	"crypto"
	"errors"
	"fmt"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/legacy/tpm2"
)

// MaxFieldSize bounds each TPM structure a node sends (TPMT_PUBLIC, creation data, attestation,
// signature): real ones are a few hundred bytes.
const MaxFieldSize = 4096

// ErrUnfit is wrapped by every refusal: the key is not an acceptable attestation key.
var ErrUnfit = errors.New("attestation key unfit")

// Check validates the AK parameters and returns the decoded public area.
func Check(p attest.AttestationParameters) (tpm2.Public, error) {
	pub, err := checkOwn(p)
	if err != nil {
		return tpm2.Public{}, err
	}
	// EK is not needed for the checks themselves.
	ap := attest.ActivationParameters{AK: p}
	if err := ap.CheckAKParameters(); err != nil {
		return tpm2.Public{}, fmt.Errorf("%w: %v", ErrUnfit, err)
	}
	return pub, nil
}

// Challenge checks the AK as Check does and makes a credential that only the TPM holding both
// the AK and ek can activate, returning the secret inside it. go-attestation's Generate runs its
// own CheckAKParameters, so the AK's signature is verified once, not twice.
func Challenge(p attest.AttestationParameters, ek crypto.PublicKey) ([]byte, *attest.EncryptedCredential, error) {
	if _, err := checkOwn(p); err != nil {
		return nil, nil, err
	}
	ap := attest.ActivationParameters{EK: ek, AK: p}
	secret, cred, err := ap.Generate()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnfit, err)
	}
	return secret, cred, nil
}

// checkOwn runs the checks go-attestation lacks.
func checkOwn(p attest.AttestationParameters) (tpm2.Public, error) {
	for name, b := range map[string][]byte{
		"public": p.Public, "create data": p.CreateData,
		"create attestation": p.CreateAttestation, "create signature": p.CreateSignature,
	} {
		if len(b) == 0 || len(b) > MaxFieldSize {
			return tpm2.Public{}, fmt.Errorf("%w: %s is %d bytes (want 1 to %d)", ErrUnfit, name, len(b), MaxFieldSize)
		}
	}
	pub, err := tpm2.DecodePublic(p.Public)
	if err != nil {
		return tpm2.Public{}, fmt.Errorf("%w: decode public area: %v", ErrUnfit, err)
	}
	if err := checkPublic(pub); err != nil {
		return tpm2.Public{}, fmt.Errorf("%w: %v", ErrUnfit, err)
	}
	return pub, nil
}

// required attributes of an AK: it signs, only TPM-generated data (restricted), never leaves this
// TPM or its parent, and its secret came from the TPM.
const required = tpm2.FlagSign | tpm2.FlagRestricted | tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin

func checkPublic(pub tpm2.Public) error {
	if missing := required &^ pub.Attributes; missing != 0 {
		return fmt.Errorf("attributes %#08x lack %#08x (sign, restricted, fixedTPM, fixedParent, sensitiveDataOrigin)", uint32(pub.Attributes), uint32(missing))
	}
	if pub.Attributes&tpm2.FlagDecrypt != 0 {
		return errors.New("key can decrypt: an AK must be signing-only")
	}
	if pub.NameAlg != tpm2.AlgSHA256 {
		return fmt.Errorf("name algorithm %v, want SHA-256", pub.NameAlg)
	}
	switch pub.Type {
	case tpm2.AlgRSA:
		rp := pub.RSAParameters
		if rp == nil {
			return errors.New("RSA key without parameters")
		}
		if rp.KeyBits < 2048 {
			return fmt.Errorf("RSA key of %d bits, want at least 2048", rp.KeyBits)
		}
		if s := rp.Sign; s == nil || (s.Alg != tpm2.AlgRSASSA && s.Alg != tpm2.AlgRSAPSS) || s.Hash != tpm2.AlgSHA256 {
			return fmt.Errorf("RSA signing scheme %s, want RSASSA or RSAPSS with SHA-256", scheme(s))
		}
	case tpm2.AlgECC:
		ep := pub.ECCParameters
		if ep == nil {
			return errors.New("ECC key without parameters")
		}
		switch ep.CurveID {
		case tpm2.CurveNISTP256, tpm2.CurveNISTP384, tpm2.CurveNISTP521:
		default:
			return fmt.Errorf("ECC curve %#x, want NIST P-256, P-384 or P-521", uint16(ep.CurveID))
		}
		if s := ep.Sign; s == nil || s.Alg != tpm2.AlgECDSA || s.Hash != tpm2.AlgSHA256 {
			return fmt.Errorf("ECC signing scheme %s, want ECDSA with SHA-256", scheme(s))
		}
	default:
		return fmt.Errorf("key type %v, want RSA or ECC", pub.Type)
	}
	return nil
}

func scheme(s *tpm2.SigScheme) string {
	if s == nil {
		return "none"
	}
	return fmt.Sprintf("%v/%v", s.Alg, s.Hash)
}
