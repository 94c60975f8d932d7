package softtpm

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/attestboot/attestboot/services/ekcert"
	"github.com/attestboot/attestboot/services/tpmconn"
)

// Persistent handles and NV indices of every softtpm, where go-attestation looks for them
// (TCG "Registry of Reserved TPM 2.0 Handles and Localities").
const (
	// HandleSRK holds the storage root key (ECC NIST P-256, see the package comment).
	HandleSRK uint32 = 0x81000001
	// HandleEK holds the RSA-2048 endorsement key.
	HandleEK uint32 = 0x81010001
	// NVIndexEKCert holds the DER EK certificate.
	NVIndexEKCert uint32 = 0x01C00002
)

// What the TPM says it is (TPM_PT_MANUFACTURER, TPM_PT_VENDOR_STRING_*, TPM_PT_FIRMWARE_VERSION_*),
// and what its EK certificate's subject alternative name says.
const (
	manufacturer    = 0x41544254 // "ATBT": attestboot
	vendorString1   = 0x534F4654 // "SOFT"
	vendorString2   = 0x54504D00 // "TPM"
	firmwareV1      = 0x00010000 // 1.0
	firmwareV2      = 0x00000000
	firmwareVersion = uint64(firmwareV1)<<32 | firmwareV2
	// SANManufacturer, SANModel and SANVersion are the TCG attributes of softtpm EK
	// certificates, in the form swtpm_localca writes them.
	SANManufacturer = "id:41544254"
	SANModel        = "softtpm"
	SANVersion      = "id:00010000"
)

// nvAttrsEKCert are the attributes swtpm_setup --lock-nvram gives the EK certificate index:
// TPMA_NV_PPWRITE, WRITELOCKED, WRITEDEFINE, PPREAD, OWNERREAD, AUTHREAD, NO_DA, WRITTEN,
// PLATFORMCREATE.
const nvAttrsEKCert uint32 = 0x62072801

// NV attributes softtpm checks.
const (
	nvPPRead     uint32 = 1 << 16
	nvOwnerRead  uint32 = 1 << 17
	nvAuthRead   uint32 = 1 << 18
	nvPolicyRead uint32 = 1 << 19
	nvNoDA       uint32 = 1 << 25
	nvReadLocked uint32 = 1 << 28
	nvWritten    uint32 = 1 << 29
)

// nvIndex is a defined NV index.
type nvIndex struct {
	handle     uint32
	nameAlg    uint16
	attrs      uint32
	authPolicy []byte
	data       []byte
	name       []byte
}

func (n *nvIndex) marshalPublic(w *writer) {
	w.u32(n.handle)
	w.u16(n.nameAlg)
	w.u32(n.attrs)
	w.tpm2b(n.authPolicy)
	w.u16(uint16(len(n.data)))
}

// TPM is one simulated TPM 2.0 chip: its endorsement key and certificate, a storage root
// key, PCRs in their power-on state, and a command interpreter reached through Open. What a
// TPM keeps across Opens never changes, so channels of one TPM may be open at the same time,
// each with its own transient objects and sessions, as with the kernel's resource manager.
type TPM struct {
	index int
	cert  *x509.Certificate
	seed  []byte // the TPM's secret; SRK, proofs and obfuscation derive from it
	born  time.Time
	ek    *object
	ekNV  *nvIndex
	srk   func() (*object, error)
}

func newTPM(index int, key *rsa.PrivateKey, cert *x509.Certificate, seed []byte) (*TPM, error) {
	if !ekcert.PublicKeyMatches(cert, &key.PublicKey) {
		return nil, errors.New("softtpm: EK certificate does not certify the EK")
	}
	if key.N.BitLen() != 2048 {
		return nil, fmt.Errorf("softtpm: EK of %d bits, want 2048", key.N.BitLen())
	}
	t := &TPM{index: index, cert: cert, seed: seed, born: time.Now()}
	pub := ekTemplate()
	pub.modulus = key.N.FillBytes(make([]byte, 256))
	if key.E != 65537 {
		pub.exponent = uint32(key.E)
	}
	t.ek = newObject(pub, rhEndorsement, handleName(rhEndorsement))
	t.ek.decrypter = key
	t.ekNV = &nvIndex{handle: NVIndexEKCert, nameAlg: algSHA256, attrs: nvAttrsEKCert, authPolicy: []byte{}, data: cert.Raw}
	t.ekNV.name = nameOf(algSHA256, marshal(t.ekNV.marshalPublic))
	// The SRK costs an ECC scalar multiplication: made on the first Open, not when ten
	// thousand TPMs are loaded.
	t.srk = sync.OnceValues(t.makeSRK)
	return t, nil
}

// ekTemplate is the TCG default EK template (EK Credential Profile 2.0, template L-1), the
// one go-attestation expects: RSA 2048, AES-128-CFB, authorised by PolicySecret(endorsement).
func ekTemplate() public {
	return public{
		typ: algRSA, nameAlg: algSHA256,
		attrs: attrFixedTPM | attrFixedParent | attrSensitiveDataOrigin | attrAdminWithPolicy |
			attrRestricted | attrDecrypt,
		authPolicy: policySecretDigest(algSHA256, make([]byte, 32), handleName(rhEndorsement), nil),
		sym:        symDef{alg: algAES, keyBits: 128, mode: algCFB},
		scheme:     scheme{alg: algNull},
		keyBits:    2048,
	}
}

// makeSRK derives the storage root key: the TCG ECC NIST P-256 SRK template (TCG TPM v2.0
// Provisioning Guidance), its key and protection seed derived from the TPM's seed as a
// TPM derives primary keys from its storage primary seed.
func (t *TPM) makeSRK() (*object, error) {
	pub := public{
		typ: algECC, nameAlg: algSHA256,
		attrs: attrFixedTPM | attrFixedParent | attrSensitiveDataOrigin | attrUserWithAuth |
			attrNoDA | attrRestricted | attrDecrypt,
		authPolicy: []byte{},
		sym:        symDef{alg: algAES, keyBits: 128, mode: algCFB},
		scheme:     scheme{alg: algNull},
		curve:      curveNISTP256,
		kdf:        scheme{alg: algNull},
	}
	var err error
	if pub.x, pub.y, err = deriveECC(curveNISTP256, t.seed, "softtpm SRK"); err != nil {
		return nil, fmt.Errorf("softtpm: derive SRK: %w", err)
	}
	srk := newObject(pub, rhOwner, handleName(rhOwner))
	srk.seedValue = kdfa(algSHA256, t.seed, "softtpm SRK seedValue", nil, nil, 256)
	return srk, nil
}

// policySecretDigest extends a policy digest as TPM2_PolicySecret does (Part 3, 23.4).
func policySecretDigest(alg uint16, prev, authName, policyRef []byte) []byte {
	var cc [4]byte
	binary.BigEndian.PutUint32(cc[:], ccPolicySecret)
	return digest(alg, digest(alg, prev, cc[:], authName), policyRef)
}

// proof is the secret HMAC key of a hierarchy's tickets (Part 1, 14.4 "proof values").
func (t *TPM) proof(hierarchy uint32) []byte {
	return kdfa(algSHA256, t.seed, "softtpm proof", handleName(hierarchy), nil, 256)
}

// creationTicket is TPMT_TK_CREATION's digest: HMAC(proof, TPM_ST_CREATION || name ||
// creationHash), as TicketComputeCreation of the reference implementation.
func (t *TPM) creationTicket(hierarchy uint32, name, creationHash []byte) []byte {
	return hmacSum(algSHA256, t.proof(hierarchy), binary.BigEndian.AppendUint16(nil, stCreation), name, creationHash)
}

// clockAndFirmware returns the clock and firmware version an attestation signed by signer
// carries. Like a real TPM, keys outside the endorsement and platform hierarchies (the AK is
// in the storage hierarchy) get resetCount, restartCount and firmwareVersion obfuscated, so
// that they cannot be used to correlate the AK with the EK.
func (t *TPM) clockAndFirmware(signer *object) (clockInfo, uint64) {
	ci := clockInfo{clock: uint64(time.Since(t.born).Milliseconds()), safe: true}
	fw := firmwareVersion
	if signer.hierarchy != rhEndorsement && signer.hierarchy != rhPlatform {
		ob := kdfa(algSHA256, t.proof(rhOwner), "OBFUSCATE", signer.qn, nil, 128)
		fw += binary.BigEndian.Uint64(ob[:8])
		v := binary.BigEndian.Uint64(ob[8:])
		ci.resetCount += uint32(v >> 32)
		ci.restartCount += uint32(v)
	}
	return ci, fw
}

// pcrValue is PCR i of a TPM just started at locality 0: PCRs 17 to 22, which only a dynamic
// root of trust resets, hold all ones; the others zeros. No firmware measures into softtpm.
func pcrValue(alg uint16, i int) []byte {
	v := make([]byte, hashAlg(alg).Size())
	if i >= 17 && i <= 22 {
		for j := range v {
			v[j] = 0xFF
		}
	}
	return v
}

// pcrBankAllocated reports whether softtpm has a PCR bank for alg: SHA-256 only, like the
// swtpm TPMs of services/tpmtest (swtpm_setup --pcr-banks sha256).
func pcrBankAllocated(alg uint16) bool { return alg == algSHA256 }

// Index is the TPM's index in its Pool: the same index always has the same EK.
func (t *TPM) Index() int { return t.index }

// EKCertificate is the RSA EK certificate the TPM holds in NV index 0x01C00002.
func (t *TPM) EKCertificate() *x509.Certificate { return t.cert }

// EKPublicKey is the RSA EK's public key, as certified.
func (t *TPM) EKPublicKey() crypto.PublicKey { return t.cert.PublicKey }

// EKSHA256 is the SHA-256 of the EK's PKIX encoding: the EK identity of the inventory, as
// tpmtest.TPM.EKSHA256.
func (t *TPM) EKSHA256() [32]byte {
	// The certificate's public key is an RSA key checked by newTPM; it encodes.
	sum, _ := ekcert.SHA256PKIX(t.cert.PublicKey)
	return sum
}

// Open opens a command channel to the TPM. Its transient objects and sessions live until
// Close, as if a resource manager flushed them when the client went away.
func (t *TPM) Open() (tpmconn.Channel, error) {
	srk, err := t.srk()
	if err != nil {
		return nil, err
	}
	return &channel{tpm: t, srk: srk}, nil
}
