package softtpm

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
)

// Command codes (TPM_CC) softtpm implements: those go-attestation sends to attest with an
// existing EK and SRK, plus what a client needs to look around (capabilities, handles).
const (
	ccStartup            uint32 = 0x144
	ccActivateCredential uint32 = 0x147
	ccCertifyCreation    uint32 = 0x14A
	ccNVRead             uint32 = 0x14E
	ccPolicySecret       uint32 = 0x151
	ccCreate             uint32 = 0x153
	ccLoad               uint32 = 0x157
	ccQuote              uint32 = 0x158
	ccFlushContext       uint32 = 0x165
	ccNVReadPublic       uint32 = 0x169
	ccReadPublic         uint32 = 0x173
	ccStartAuthSession   uint32 = 0x176
	ccGetCapability      uint32 = 0x17A
	ccPCRRead            uint32 = 0x17E
	ccPolicyGetDigest    uint32 = 0x189
)

// commandCodes lists the implemented commands in ascending order (TPM_CAP_COMMANDS).
func commandCodes() []uint32 {
	return []uint32{
		ccStartup, ccActivateCredential, ccCertifyCreation, ccNVRead, ccPolicySecret, ccCreate,
		ccLoad, ccQuote, ccFlushContext, ccNVReadPublic, ccReadPublic, ccStartAuthSession,
		ccGetCapability, ccPCRRead, ccPolicyGetDigest,
	}
}

func lookup(code uint32) (spec, bool) {
	switch code {
	case ccStartup:
		return spec{run: (*command).startup}, true
	case ccActivateCredential:
		return spec{handles: []handleKind{kindObject, kindObject}, roles: []role{roleAdmin, roleUser}, run: (*command).activateCredential}, true
	case ccCertifyCreation:
		return spec{handles: []handleKind{kindObject, kindObject}, roles: []role{roleUser}, run: (*command).certifyCreation}, true
	case ccNVRead:
		return spec{handles: []handleKind{kindNVAuth, kindNV}, roles: []role{roleUser}, run: (*command).nvRead}, true
	case ccPolicySecret:
		return spec{handles: []handleKind{kindEntity, kindPolicySession}, roles: []role{roleUser}, run: (*command).policySecret}, true
	case ccCreate:
		return spec{handles: []handleKind{kindObject}, roles: []role{roleUser}, run: (*command).create}, true
	case ccLoad:
		return spec{handles: []handleKind{kindObject}, roles: []role{roleUser}, respHandle: true, run: (*command).load}, true
	case ccQuote:
		return spec{handles: []handleKind{kindObject}, roles: []role{roleUser}, run: (*command).quote}, true
	case ccFlushContext:
		return spec{run: (*command).flushContext}, true
	case ccNVReadPublic:
		return spec{handles: []handleKind{kindNV}, run: (*command).nvReadPublic}, true
	case ccReadPublic:
		return spec{handles: []handleKind{kindObject}, run: (*command).readPublic}, true
	case ccStartAuthSession:
		return spec{handles: []handleKind{kindObjectOrNull, kindEntityOrNull}, respHandle: true, run: (*command).startAuthSession}, true
	case ccGetCapability:
		return spec{run: (*command).getCapability}, true
	case ccPCRRead:
		return spec{run: (*command).pcrRead}, true
	case ccPolicyGetDigest:
		return spec{handles: []handleKind{kindPolicySession}, run: (*command).policyGetDigest}, true
	}
	return spec{}, false
}

// startup: softtpm is always started (as swtpm with --flags startup-clear), so a second
// TPM2_Startup is TPM_RC_INITIALIZE.
func (x *command) startup() rc {
	x.params.u16()
	if x.params.short {
		return rcInsufficient.param(1)
	}
	if code := x.end(); code != rcSuccess {
		return code
	}
	return rcInitialize
}

func (x *command) readPublic() rc {
	if code := x.end(); code != rcSuccess {
		return code
	}
	o := x.handles[0].obj
	x.out.sized(o.pub.marshal)
	x.out.tpm2b(o.name)
	x.out.tpm2b(o.qn)
	return rcSuccess
}

func (x *command) nvReadPublic() rc {
	if code := x.end(); code != rcSuccess {
		return code
	}
	nv := x.handles[0].nv
	x.out.sized(nv.marshalPublic)
	x.out.tpm2b(nv.name)
	return rcSuccess
}

func (x *command) nvRead() rc {
	size, offset := x.params.u16(), x.params.u16()
	if x.params.short {
		return rcInsufficient.param(1)
	}
	if code := x.end(); code != rcSuccess {
		return code
	}
	auth, nv := x.handles[0], x.handles[1]
	var may bool
	switch {
	case auth.handle == nv.handle && x.sessions[0].sess == nil:
		may = nv.nv.attrs&nvAuthRead != 0
	case auth.handle == nv.handle:
		may = nv.nv.attrs&nvPolicyRead != 0
	case auth.handle == rhOwner:
		may = nv.nv.attrs&nvOwnerRead != 0
	case auth.handle == rhPlatform:
		may = nv.nv.attrs&nvPPRead != 0
	}
	switch {
	case !may:
		return rcNVAuthorization
	case nv.nv.attrs&nvReadLocked != 0:
		return rcNVLocked
	case nv.nv.attrs&nvWritten == 0:
		return rcNVUninitialized
	case size > maxNVBufferSize:
		return rcValue.param(1)
	case int(offset) > len(nv.nv.data):
		return rcValue.param(2)
	case int(offset)+int(size) > len(nv.nv.data):
		return rcNVRange
	}
	x.out.tpm2b(nv.nv.data[offset : int(offset)+int(size)])
	return rcSuccess
}

func (x *command) startAuthSession() rc {
	p := &x.params
	nonceCaller := p.tpm2b()
	if p.short {
		return rcInsufficient.param(1)
	}
	salt := p.tpm2b()
	if p.short {
		return rcInsufficient.param(2)
	}
	typ := p.u8()
	if p.short {
		return rcInsufficient.param(3)
	}
	symAlg := p.u16()
	switch symAlg {
	case algNull:
	case 0x000A: // TPM_ALG_XOR: keyBits is a hash
		p.u16()
	default:
		p.u16()
		p.u16()
	}
	if p.short {
		return rcInsufficient.param(4)
	}
	authHash := p.u16()
	if p.short {
		return rcInsufficient.param(5)
	}
	if code := x.end(); code != rcSuccess {
		return code
	}
	if hashAlg(authHash) == 0 {
		return rcHash.param(5)
	}
	switch {
	case typ != 0x01 && typ != 0x03:
		// TPM_SE_HMAC is not implemented: nothing in the attestation flow uses it.
		return rcValue.param(3)
	case symAlg != algNull:
		return rcSymmetric.param(4)
	case len(nonceCaller) < 16 || len(nonceCaller) > hashAlg(authHash).Size():
		return rcSize.param(1)
	case x.handles[0].handle == rhNull && len(salt) != 0,
		x.handles[0].handle != rhNull && len(salt) == 0:
		return rcValue.param(2)
	case x.handles[0].handle != rhNull:
		// Salted sessions are not implemented.
		return rcValue.handle(1)
	case x.handles[1].handle != rhNull:
		// Bound sessions are not implemented.
		return rcValue.handle(2)
	}
	slot := -1
	for i, s := range x.c.sessions {
		if s == nil {
			slot = i
			break
		}
	}
	if slot < 0 {
		return rcSessionMemory
	}
	s := &session{
		handle:   policySessFirst + uint32(slot),
		trial:    typ == 0x03,
		hashAlg:  authHash,
		nonceTPM: make([]byte, len(nonceCaller)),
	}
	rand.Read(s.nonceTPM)
	s.reset()
	x.c.sessions[slot] = s
	x.outHandle, x.hasOutHandle = s.handle, true
	x.out.tpm2b(s.nonceTPM)
	return rcSuccess
}

func (x *command) policySecret() rc {
	p := &x.params
	nonceTPM := p.tpm2b()
	if p.short {
		return rcInsufficient.param(1)
	}
	cpHash := p.tpm2b()
	if p.short {
		return rcInsufficient.param(2)
	}
	policyRef := p.tpm2b()
	if p.short {
		return rcInsufficient.param(3)
	}
	expiration := p.u32()
	if p.short {
		return rcInsufficient.param(4)
	}
	if code := x.end(); code != rcSuccess {
		return code
	}
	auth, s := x.handles[0], x.handles[1].sess
	switch {
	case len(nonceTPM) != 0 && !bytes.Equal(nonceTPM, s.nonceTPM):
		return rcNonce.param(1)
	case len(cpHash) != 0:
		// Binding a policy to a command's parameters is not implemented.
		return rcValue.param(2)
	case len(policyRef) > maxDigestSize:
		return rcSize.param(3)
	case expiration != 0:
		// Expiring authorizations and their tickets are not implemented.
		return rcValue.param(4)
	}
	authName := handleName(auth.handle)
	switch {
	case auth.obj != nil:
		authName = auth.obj.name
	case auth.nv != nil:
		authName = auth.nv.name
	}
	s.policyDigest = policySecretDigest(s.hashAlg, s.policyDigest, authName, policyRef)
	// No expiration: an empty timeout and a NULL ticket.
	x.out.u16(0)
	x.out.u16(stAuthSecret)
	x.out.u32(rhNull)
	x.out.u16(0)
	return rcSuccess
}

func (x *command) policyGetDigest() rc {
	if code := x.end(); code != rcSuccess {
		return code
	}
	x.out.tpm2b(x.handles[0].sess.policyDigest)
	return rcSuccess
}

func (x *command) flushContext() rc {
	h := x.params.u32()
	if x.params.short {
		return rcInsufficient.param(1)
	}
	if code := x.end(); code != rcSuccess {
		return code
	}
	switch handleType(h) {
	case htTransient:
		i := h - transientFirst
		if i >= maxTransient {
			// Beyond TRANSIENT_LAST: not a value TPMI_DH_CONTEXT unmarshals.
			return rcValue.param(1)
		}
		if x.c.objects[i] == nil {
			return rcHandle.param(1)
		}
		x.c.objects[i] = nil
	case 0x02, htPolicySession:
		if h&0xFFFFFF >= maxSessions {
			return rcValue.param(1)
		}
		if x.c.session(h) == nil {
			return rcHandle.param(1)
		}
		x.c.dropSession(h)
	default:
		return rcValue.param(1)
	}
	return rcSuccess
}

// readTemplate reads a TPM2B_PUBLIC and checks it is a key softtpm can make and use: an RSA
// 2048 or ECC P-256/P-384 signing key generated by the TPM (an attestation key, or an
// unrestricted signing key), with the attribute rules of Part 1, 27.2.
func (x *command) readTemplate(parent *object) (public, rc) {
	// As TPM2B_PUBLIC_Unmarshal of the reference implementation: the TPMT_PUBLIC is read
	// from the rest of the command, then its length must be the size announced.
	size := x.params.u16()
	if x.params.short {
		return public{}, rcInsufficient
	}
	if size == 0 {
		return public{}, rcSize
	}
	before := len(x.params.b)
	pub, code := readPublic(&x.params)
	if code != rcSuccess {
		return pub, code
	}
	if before-len(x.params.b) != int(size) {
		return pub, rcSize
	}
	a := pub.attrs
	switch {
	case a&attrFixedTPM != 0 && a&attrFixedParent == 0,
		a&attrFixedTPM != 0 && !parent.is(attrFixedTPM),
		a&attrSensitiveDataOrigin == 0,
		a&attrSign == 0,
		// Decryption and storage keys are not implemented.
		a&attrDecrypt != 0:
		return pub, rcAttributes
	case pub.sym.alg != algNull:
		return pub, rcSymmetric
	case len(pub.authPolicy) != 0 && len(pub.authPolicy) != hashAlg(pub.nameAlg).Size():
		return pub, rcSize
	case pub.typ == algRSA && pub.exponent != 0 && pub.exponent != 65537:
		return pub, rcValue
	}
	switch pub.scheme.alg {
	case algNull:
		if a&attrRestricted != 0 {
			return pub, rcScheme
		}
	case algECDSA:
		if pub.typ != algECC {
			return pub, rcScheme
		}
	case algRSASSA, algRSAPSS:
		if pub.typ != algRSA {
			return pub, rcScheme
		}
	default:
		return pub, rcScheme
	}
	return pub, rcSuccess
}

func (x *command) create() rc {
	p := &x.params
	parent := x.handles[0].obj
	// TPM2B_SENSITIVE_CREATE, read as TPM2B_PUBLIC is (see readTemplate).
	size := p.u16()
	before := len(p.b)
	userAuth, data := p.tpm2b(), p.tpm2b()
	if p.short {
		return rcInsufficient.param(1)
	}
	if size == 0 || before-len(p.b) != int(size) || len(userAuth) > maxDigestSize || len(data) > maxCommandSize {
		return rcSize.param(1)
	}
	pub, code := x.readTemplate(parent)
	if code != rcSuccess {
		return code.param(2)
	}
	outsideInfo := p.tpm2b()
	if p.short {
		return rcInsufficient.param(3)
	}
	if len(outsideInfo) > maxDataSize {
		return rcSize.param(3)
	}
	sels, code := readPCRSelections(p)
	if code != rcSuccess {
		return code.param(4)
	}
	if code := x.end(); code != rcSuccess {
		return code
	}
	if !parent.storageParent() {
		return rcType.handle(1)
	}
	// Asymmetric keys come from the TPM's generator (sensitiveDataOrigin), never from the
	// caller.
	if len(data) != 0 {
		return rcAttributes.param(2)
	}
	if len(userAuth) > hashAlg(pub.nameAlg).Size() {
		return rcSize.param(1)
	}
	_, secret, err := generate(&pub)
	if err != nil {
		return rcFailure
	}
	name := pub.name()
	seedValue := make([]byte, hashAlg(pub.nameAlg).Size())
	rand.Read(seedValue)
	private, err := protect(parent, name, &sensitive{typ: pub.typ, authValue: userAuth, seedValue: seedValue, secret: secret})
	if err != nil {
		return rcFailure
	}
	sels, pcrDigest := x.c.pcrDigest(pub.nameAlg, sels)
	creationData := marshal(func(w *writer) {
		marshalPCRSelections(w, sels)
		w.tpm2b(pcrDigest)
		w.u8(localityZero)
		w.u16(parent.pub.nameAlg)
		w.tpm2b(parent.name)
		w.tpm2b(parent.qn)
		w.tpm2b(outsideInfo)
	})
	creationHash := digest(pub.nameAlg, creationData)
	x.out.tpm2b(private)
	x.out.sized(pub.marshal)
	x.out.tpm2b(creationData)
	x.out.tpm2b(creationHash)
	x.out.u16(stCreation)
	x.out.u32(parent.hierarchy)
	x.out.tpm2b(x.c.tpm.creationTicket(parent.hierarchy, name, creationHash))
	return rcSuccess
}

func (x *command) load() rc {
	p := &x.params
	parent := x.handles[0].obj
	private := p.tpm2b()
	if p.short {
		return rcInsufficient.param(1)
	}
	pub, code := x.readTemplate(parent)
	if code != rcSuccess {
		return code.param(2)
	}
	if code := x.end(); code != rcSuccess {
		return code
	}
	if !parent.storageParent() {
		return rcType.handle(1)
	}
	switch pub.typ {
	case algECC:
		if len(pub.x) != curveSize(pub.curve) || len(pub.y) != curveSize(pub.curve) {
			return rcKey.param(2)
		}
	case algRSA:
		if len(pub.modulus) != int(pub.keyBits)/8 {
			return rcKey.param(2)
		}
	}
	if len(private) == 0 {
		return rcSize.param(1)
	}
	name := pub.name()
	s, code := unprotect(parent, name, private)
	if code != rcSuccess {
		return code.param(1)
	}
	if s.typ != pub.typ {
		return rcType.param(1)
	}
	if len(s.authValue) > hashAlg(pub.nameAlg).Size() {
		return rcSize.param(1)
	}
	signer, code := privateFromSensitive(&pub, s.secret)
	if code != rcSuccess {
		return code.param(1)
	}
	slot := -1
	for i, o := range x.c.objects {
		if o == nil {
			slot = i
			break
		}
	}
	if slot < 0 {
		return rcObjectMemory
	}
	o := newObject(pub, parent.hierarchy, parent.qn)
	o.authValue = s.authValue
	o.signer = signer
	x.c.objects[slot] = o
	x.outHandle, x.hasOutHandle = transientFirst+uint32(slot), true
	x.out.tpm2b(o.name)
	return rcSuccess
}

// signingScheme resolves the scheme of a signing command (Part 3, "TPM2_Sign" rules): the
// key's own scheme when the caller gives TPM_ALG_NULL, the caller's when the key has none,
// and an error when they differ.
func signingScheme(key *object, in scheme) (scheme, rc) {
	ks := key.pub.scheme
	switch {
	case ks.alg == algNull && in.alg == algNull:
		return scheme{}, rcScheme
	case ks.alg == algNull:
		ks = in
	case in.alg != algNull && in != ks:
		return scheme{}, rcScheme
	}
	if hashAlg(ks.hash) == 0 {
		return scheme{}, rcHash
	}
	switch {
	case key.pub.typ == algECC && ks.alg == algECDSA:
	case key.pub.typ == algRSA && (ks.alg == algRSASSA || ks.alg == algRSAPSS):
	default:
		return scheme{}, rcScheme
	}
	return ks, rcSuccess
}

func signingKey(e entity) bool { return e.obj.signer != nil && e.obj.is(attrSign) }

// signAttest fills in the TPMS_ATTEST header, signs it and writes TPM2B_ATTEST and
// TPMT_SIGNATURE.
func (x *command) signAttest(key *object, s scheme, a *attestation) rc {
	a.qualifiedSigner = key.qn
	a.clock, a.firmwareVersion = x.c.tpm.clockAndFirmware(key)
	body := marshal(a.marshal)
	sig, err := key.sign(s, digest(s.hash, body))
	if err != nil {
		return rcFailure
	}
	x.out.tpm2b(body)
	x.out.raw(sig)
	return rcSuccess
}

func (x *command) certifyCreation() rc {
	p := &x.params
	qualifyingData := p.tpm2b()
	if p.short {
		return rcInsufficient.param(1)
	}
	if len(qualifyingData) > maxDataSize {
		return rcSize.param(1)
	}
	creationHash := p.tpm2b()
	if p.short {
		return rcInsufficient.param(2)
	}
	if len(creationHash) > maxDigestSize {
		return rcSize.param(2)
	}
	in := readScheme(p)
	if p.short {
		return rcInsufficient.param(3)
	}
	tag, hierarchy, ticket := p.u16(), p.u32(), p.tpm2b()
	if p.short {
		return rcInsufficient.param(4)
	}
	if tag != stCreation {
		return rcTag.param(4)
	}
	if code := x.end(); code != rcSuccess {
		return code
	}
	signer, obj := x.handles[0], x.handles[1]
	if !signingKey(signer) {
		return rcKey.handle(1)
	}
	s, code := signingScheme(signer.obj, in)
	if code != rcSuccess {
		return code.param(3)
	}
	want := x.c.tpm.creationTicket(hierarchy, obj.obj.name, creationHash)
	if subtle.ConstantTimeCompare(want, ticket) != 1 {
		return rcTicket.param(4)
	}
	return x.signAttest(signer.obj, s, &attestation{
		typ:       stAttestCreate,
		extraData: qualifyingData,
		attested: marshal(func(w *writer) {
			w.tpm2b(obj.obj.name)
			w.tpm2b(creationHash)
		}),
	})
}

func (x *command) quote() rc {
	p := &x.params
	qualifyingData := p.tpm2b()
	if p.short {
		return rcInsufficient.param(1)
	}
	if len(qualifyingData) > maxDataSize {
		return rcSize.param(1)
	}
	in := readScheme(p)
	if p.short {
		return rcInsufficient.param(2)
	}
	sels, code := readPCRSelections(p)
	if code != rcSuccess {
		return code.param(3)
	}
	if code := x.end(); code != rcSuccess {
		return code
	}
	key := x.handles[0]
	if !signingKey(key) {
		return rcKey.handle(1)
	}
	s, code := signingScheme(key.obj, in)
	if code != rcSuccess {
		return code.param(2)
	}
	sels, pcrDigest := x.c.pcrDigest(s.hash, sels)
	return x.signAttest(key.obj, s, &attestation{
		typ:       stAttestQuote,
		extraData: qualifyingData,
		attested: marshal(func(w *writer) {
			marshalPCRSelections(w, sels)
			w.tpm2b(pcrDigest)
		}),
	})
}

// pcrDigest filters a selection to the allocated banks and PCRs and returns it with the
// digest (under alg) of the selected values in selection order, as PCRComputeCurrentDigest.
func (c *channel) pcrDigest(alg uint16, sels []pcrSelection) ([]pcrSelection, []byte) {
	h := newHash(alg)
	out := make([]pcrSelection, len(sels))
	for i, s := range sels {
		out[i] = pcrSelection{hash: s.hash, bits: make([]byte, len(s.bits))}
		if !pcrBankAllocated(s.hash) {
			continue
		}
		for pcr := 0; pcr < pcrCount && pcr/8 < len(s.bits); pcr++ {
			if s.bits[pcr/8]&(1<<(pcr%8)) != 0 {
				out[i].bits[pcr/8] |= 1 << (pcr % 8)
				h.Write(pcrValue(s.hash, pcr))
			}
		}
	}
	return out, h.Sum(nil)
}

func (x *command) pcrRead() rc {
	sels, code := readPCRSelections(&x.params)
	if code != rcSuccess {
		return code.param(1)
	}
	if code := x.end(); code != rcSuccess {
		return code
	}
	var values [][]byte
	out := make([]pcrSelection, len(sels))
	for i, s := range sels {
		out[i] = pcrSelection{hash: s.hash, bits: make([]byte, len(s.bits))}
		if !pcrBankAllocated(s.hash) {
			continue
		}
		for pcr := 0; pcr < pcrCount && len(values) < maxPCRDigests; pcr++ {
			if s.bits[pcr/8]&(1<<(pcr%8)) != 0 {
				out[i].bits[pcr/8] |= 1 << (pcr % 8)
				values = append(values, pcrValue(s.hash, pcr))
			}
		}
	}
	x.out.u32(0) // pcrUpdateCounter: nothing was ever extended
	marshalPCRSelections(&x.out, out)
	x.out.u32(uint32(len(values)))
	for _, v := range values {
		x.out.tpm2b(v)
	}
	return rcSuccess
}

func (x *command) activateCredential() rc {
	p := &x.params
	credentialBlob := p.tpm2b()
	if p.short {
		return rcInsufficient.param(1)
	}
	secret := p.tpm2b()
	if p.short {
		return rcInsufficient.param(2)
	}
	if code := x.end(); code != rcSuccess {
		return code
	}
	active, key := x.handles[0].obj, x.handles[1].obj
	if key.decrypter == nil || !key.is(attrRestricted|attrDecrypt) {
		return rcType.handle(2)
	}
	alg := key.pub.nameAlg
	size := hashAlg(alg).Size()
	// The seed was encrypted to the EK with OAEP under the EK's name algorithm and the label
	// "IDENTITY" (Part 1, B.10.3).
	seed, err := rsa.DecryptOAEP(newHash(alg), nil, key.decrypter, secret, []byte("IDENTITY\x00"))
	if err != nil || len(seed) > size {
		return rcValue.param(2)
	}
	// TPM2B_ID_OBJECT: integrityHMAC || encIdentity (Part 1, 24).
	r := reader{b: credentialBlob}
	integrity := r.tpm2b()
	encIdentity := r.b
	if r.short || len(integrity) != size || len(encIdentity) == 0 {
		return rcSize.param(1)
	}
	hmacKey := kdfa(alg, seed, "INTEGRITY", nil, nil, size*8)
	if subtle.ConstantTimeCompare(hmacSum(alg, hmacKey, encIdentity, active.name), integrity) != 1 {
		return rcIntegrity.param(1)
	}
	symKey := kdfa(alg, seed, "STORAGE", active.name, nil, int(key.pub.sym.keyBits))
	plain, err := cfb(symKey, encIdentity, true)
	if err != nil {
		return rcFailure
	}
	cr := reader{b: plain}
	credential := cr.tpm2b()
	if cr.short || !cr.empty() || len(credential) > size {
		return rcSize.param(1)
	}
	x.out.tpm2b(credential)
	return rcSuccess
}
