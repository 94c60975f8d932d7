package softtpm

import (
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
)

// Algorithm identifiers (TPM_ALG_ID, Part 2 6.3) used by softtpm.
const (
	algRSA       uint16 = 0x0001
	algSHA1      uint16 = 0x0004
	algAES       uint16 = 0x0006
	algSHA256    uint16 = 0x000B
	algSHA384    uint16 = 0x000C
	algSHA512    uint16 = 0x000D
	algNull      uint16 = 0x0010
	algRSASSA    uint16 = 0x0014
	algRSAES     uint16 = 0x0015
	algRSAPSS    uint16 = 0x0016
	algOAEP      uint16 = 0x0017
	algECDSA     uint16 = 0x0018
	algECDH      uint16 = 0x0019
	algECDAA     uint16 = 0x001A
	algSM2       uint16 = 0x001B
	algECSchnorr uint16 = 0x001C
	algECMQV     uint16 = 0x001D
	algECC       uint16 = 0x0023
	algCFB       uint16 = 0x0043
)

// ECC curves (TPM_ECC_CURVE).
const (
	curveNISTP256 uint16 = 0x0003
	curveNISTP384 uint16 = 0x0004
)

// Structure tags (TPM_ST).
const (
	stNoSessions    uint16 = 0x8001
	stSessions      uint16 = 0x8002
	stAttestQuote   uint16 = 0x8018
	stAttestCreate  uint16 = 0x801A
	stCreation      uint16 = 0x8021
	stAuthSecret    uint16 = 0x8023
	generatedValue  uint32 = 0xFF544347 // TPM_GENERATED_VALUE
	localityZero    uint8  = 0x01       // TPMA_LOCALITY with TPM_LOC_ZERO
	maxDigestSize          = 64         // sizeof(TPMU_HA)
	maxDataSize            = 66         // sizeof(TPMT_HA): TPM2B_DATA
	maxNVBufferSize        = 1024       // MAX_NV_BUFFER_SIZE, as swtpm
	maxCommandSize         = 4096       // MAX_COMMAND_SIZE, as swtpm
	pcrCount               = 24
	pcrSelectSize          = 3 // PCR_SELECT_MAX for 24 PCRs
	maxPCRDigests          = 8 // a TPML_DIGEST holds at most eight
)

// Permanent handles (TPM_RH, TPM_RS).
const (
	rhOwner       uint32 = 0x40000001
	rhNull        uint32 = 0x40000007
	rsPW          uint32 = 0x40000009
	rhLockout     uint32 = 0x4000000A
	rhEndorsement uint32 = 0x4000000B
	rhPlatform    uint32 = 0x4000000C
)

// Handle types: the most significant octet of a handle (TPM_HT).
const (
	htNVIndex       = 0x01
	htPolicySession = 0x03
	htPermanent     = 0x40
	htTransient     = 0x80
	htPersistent    = 0x81
)

func handleType(h uint32) uint8 { return uint8(h >> 24) }

// Object attributes (TPMA_OBJECT).
const (
	attrFixedTPM             uint32 = 1 << 1
	attrStClear              uint32 = 1 << 2
	attrFixedParent          uint32 = 1 << 4
	attrSensitiveDataOrigin  uint32 = 1 << 5
	attrUserWithAuth         uint32 = 1 << 6
	attrAdminWithPolicy      uint32 = 1 << 7
	attrNoDA                 uint32 = 1 << 10
	attrEncryptedDuplication uint32 = 1 << 11
	attrRestricted           uint32 = 1 << 16
	attrDecrypt              uint32 = 1 << 17
	attrSign                 uint32 = 1 << 18
	attrX509Sign             uint32 = 1 << 19
	attrReserved             uint32 = ^(attrFixedTPM | attrStClear | attrFixedParent | attrSensitiveDataOrigin |
		attrUserWithAuth | attrAdminWithPolicy | attrNoDA | attrEncryptedDuplication | attrRestricted |
		attrDecrypt | attrSign | attrX509Sign)
)

// hashAlg returns the hash of a TPM_ALG_ID, or 0 if softtpm does not implement it.
func hashAlg(alg uint16) crypto.Hash {
	switch alg {
	case algSHA1:
		return crypto.SHA1
	case algSHA256:
		return crypto.SHA256
	case algSHA384:
		return crypto.SHA384
	case algSHA512:
		return crypto.SHA512
	}
	return 0
}

// newHash avoids crypto.Hash.New, which needs the implementation registered by an import.
func newHash(alg uint16) hash.Hash {
	switch alg {
	case algSHA1:
		// TPM_ALG_SHA1 names PCR banks and policy digests of older clients; nothing in
		// softtpm relies on its collision resistance.
		return sha1.New()
	case algSHA256:
		return sha256.New()
	case algSHA384:
		return sha512.New384()
	case algSHA512:
		return sha512.New()
	}
	return nil
}

func digest(alg uint16, parts ...[]byte) []byte {
	h := newHash(alg)
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// scheme is a TPMT_SIG_SCHEME, TPMT_RSA_SCHEME, TPMT_ECC_SCHEME or TPMT_KDF_SCHEME: an
// algorithm and, unless it is TPM_ALG_NULL, its hash (plus a count for ECDAA).
type scheme struct {
	alg, hash, count uint16
}

func (s scheme) marshal(w *writer) {
	w.u16(s.alg)
	if s.alg == algNull {
		return
	}
	w.u16(s.hash)
	if s.alg == algECDAA {
		w.u16(s.count)
	}
}

func readScheme(r *reader) scheme {
	s := scheme{alg: r.u16()}
	switch s.alg {
	case algNull, algRSAES:
	case algECDAA:
		s.hash = r.u16()
		s.count = r.u16()
	default:
		s.hash = r.u16()
	}
	return s
}

// symDef is a TPMT_SYM_DEF_OBJECT.
type symDef struct{ alg, keyBits, mode uint16 }

func (s symDef) marshal(w *writer) {
	w.u16(s.alg)
	if s.alg != algNull {
		w.u16(s.keyBits)
		w.u16(s.mode)
	}
}

// public is a TPMT_PUBLIC of an RSA or ECC key, the only object types softtpm has.
type public struct {
	typ, nameAlg uint16
	attrs        uint32
	authPolicy   []byte
	sym          symDef
	scheme       scheme
	// RSA
	keyBits  uint16
	exponent uint32
	modulus  []byte
	// ECC
	curve uint16
	kdf   scheme
	x, y  []byte
}

func (p *public) marshal(w *writer) {
	w.u16(p.typ)
	w.u16(p.nameAlg)
	w.u32(p.attrs)
	w.tpm2b(p.authPolicy)
	p.sym.marshal(w)
	p.scheme.marshal(w)
	switch p.typ {
	case algRSA:
		w.u16(p.keyBits)
		w.u32(p.exponent)
		w.tpm2b(p.modulus)
	case algECC:
		w.u16(p.curve)
		p.kdf.marshal(w)
		w.tpm2b(p.x)
		w.tpm2b(p.y)
	}
}

func (p *public) bytes() []byte { return marshal(p.marshal) }

// name is the object's Name: nameAlg || H_nameAlg(TPMT_PUBLIC).
func (p *public) name() []byte {
	return nameOf(p.nameAlg, p.bytes())
}

func nameOf(alg uint16, content []byte) []byte {
	return append([]byte{byte(alg >> 8), byte(alg)}, digest(alg, content)...)
}

// qualifiedName is QN = nameAlg || H_nameAlg(parent's QN || Name) (Part 1, 16).
func qualifiedName(alg uint16, parentQN, name []byte) []byte {
	return nameOf(alg, append(append([]byte{}, parentQN...), name...))
}

// handleName is the Name (and qualified name) of a permanent handle or hierarchy: the
// handle itself.
func handleName(h uint32) []byte { return []byte{byte(h >> 24), byte(h >> 16), byte(h >> 8), byte(h)} }

// readPublic parses a TPMT_PUBLIC the way TPMT_PUBLIC_Unmarshal does: unknown or unimplemented
// algorithms and set reserved bits are refused with the code a TPM without them returns.
func readPublic(r *reader) (public, rc) {
	var p public
	p.typ = r.u16()
	p.nameAlg = r.u16()
	p.attrs = r.u32()
	p.authPolicy = r.tpm2b()
	if r.short {
		return p, rcInsufficient
	}
	switch {
	case p.typ != algRSA && p.typ != algECC:
		return p, rcType
	case hashAlg(p.nameAlg) == 0:
		return p, rcHash
	case p.attrs&attrReserved != 0:
		return p, rcReservedBits
	case len(p.authPolicy) > maxDigestSize:
		return p, rcSize
	}
	p.sym.alg = r.u16()
	if p.sym.alg != algNull {
		p.sym.keyBits = r.u16()
		p.sym.mode = r.u16()
	}
	p.scheme = readScheme(r)
	if p.typ == algRSA {
		p.keyBits = r.u16()
		p.exponent = r.u32()
		p.modulus = r.tpm2b()
	} else {
		p.curve = r.u16()
		p.kdf = readScheme(r)
		p.x = r.tpm2b()
		p.y = r.tpm2b()
	}
	if r.short {
		return p, rcInsufficient
	}
	switch p.sym.alg {
	case algNull:
	case algAES:
		if p.sym.keyBits != 128 && p.sym.keyBits != 256 {
			return p, rcKeySize
		}
		if p.sym.mode != algCFB {
			return p, rcMode
		}
	default:
		return p, rcSymmetric
	}
	if p.scheme.alg != algNull && hashAlg(p.scheme.hash) == 0 {
		return p, rcHash
	}
	if p.typ == algRSA {
		switch p.scheme.alg {
		case algNull, algRSASSA, algRSAPSS, algRSAES, algOAEP:
		default:
			return p, rcScheme
		}
		if p.keyBits != 2048 {
			return p, rcKeySize
		}
		if len(p.modulus) > 256 {
			return p, rcSize
		}
	} else {
		switch p.scheme.alg {
		case algNull, algECDSA, algECDH, algECDAA, algSM2, algECSchnorr, algECMQV:
		default:
			return p, rcScheme
		}
		if curveSize(p.curve) == 0 {
			return p, rcCurve
		}
		if p.kdf.alg != algNull {
			return p, rcKDF
		}
		if len(p.x) > curveSize(p.curve) || len(p.y) > curveSize(p.curve) {
			return p, rcSize
		}
	}
	return p, rcSuccess
}

// curveSize is the size in bytes of a coordinate, or 0 for curves softtpm does not have.
func curveSize(curve uint16) int {
	switch curve {
	case curveNISTP256:
		return 32
	case curveNISTP384:
		return 48
	}
	return 0
}

// pcrSelection is one TPMS_PCR_SELECTION.
type pcrSelection struct {
	hash uint16
	bits []byte
}

func readPCRSelections(r *reader) ([]pcrSelection, rc) {
	n := r.u32()
	if r.short {
		return nil, rcInsufficient
	}
	// HASH_COUNT: a TPM has one bank per implemented hash at most.
	if n > 4 {
		return nil, rcSize
	}
	sels := make([]pcrSelection, 0, n)
	for range n {
		s := pcrSelection{hash: r.u16()}
		size := r.u8()
		s.bits = r.take(int(size))
		if r.short {
			return nil, rcInsufficient
		}
		if hashAlg(s.hash) == 0 {
			return nil, rcHash
		}
		// PCR_SELECT_MIN .. PCR_SELECT_MAX for a 24-PCR TPM.
		if size < pcrSelectSize || size > pcrSelectSize {
			return nil, rcValue
		}
		sels = append(sels, s)
	}
	return sels, rcSuccess
}

func marshalPCRSelections(w *writer, sels []pcrSelection) {
	w.u32(uint32(len(sels)))
	for _, s := range sels {
		w.u16(s.hash)
		w.u8(uint8(len(s.bits)))
		w.raw(s.bits)
	}
}

// clockInfo is a TPMS_CLOCK_INFO.
type clockInfo struct {
	clock                    uint64
	resetCount, restartCount uint32
	safe                     bool
}

// attestation is a TPMS_ATTEST; attested holds the marshaled TPMU_ATTEST member for typ.
type attestation struct {
	typ             uint16
	qualifiedSigner []byte
	extraData       []byte
	clock           clockInfo
	firmwareVersion uint64
	attested        []byte
}

func (a *attestation) marshal(w *writer) {
	w.u32(generatedValue)
	w.u16(a.typ)
	w.tpm2b(a.qualifiedSigner)
	w.tpm2b(a.extraData)
	w.u64(a.clock.clock)
	w.u32(a.clock.resetCount)
	w.u32(a.clock.restartCount)
	if a.clock.safe {
		w.u8(1)
	} else {
		w.u8(0)
	}
	w.u64(a.firmwareVersion)
	w.raw(a.attested)
}
