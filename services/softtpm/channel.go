package softtpm

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"io"
	"sync"

	"github.com/attestboot/attestboot/services/tpmconn"
)

const (
	headerSize      = 10
	maxTransient    = 3 // TPM_PT_HR_TRANSIENT_MIN, as swtpm
	maxSessions     = 3 // TPM_PT_HR_LOADED_MIN
	transientFirst  = 0x80000000
	policySessFirst = 0x03000000
)

// channel is one client's connection to a TPM. Write executes one command; Read returns its
// response.
type channel struct {
	tpm *TPM
	srk *object

	mu       sync.Mutex
	closed   bool
	resp     []byte
	objects  [maxTransient]*object
	sessions [maxSessions]*session
}

var _ tpmconn.Channel = (*channel)(nil)

// session is a policy (or trial policy) session started with StartAuthSession. softtpm has
// unbound, unsalted sessions only, which is what go-attestation uses to satisfy the EK's
// PolicySecret; their session key is empty.
type session struct {
	handle       uint32
	trial        bool
	hashAlg      uint16
	nonceTPM     []byte
	policyDigest []byte
}

func (s *session) reset() { s.policyDigest = make([]byte, hashAlg(s.hashAlg).Size()) }

// Write executes p, which must be one whole TPM command, and keeps the response for Read.
// A malformed command is answered with a TPM error response, as a TPM would; Write itself
// fails only on a closed channel.
func (c *channel) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, tpmconn.ErrClosed
	}
	c.resp = c.execute(p)
	return len(p), nil
}

// Read returns the response of the last command, io.EOF once it has been read.
func (c *channel) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, tpmconn.ErrClosed
	}
	if len(c.resp) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.resp)
	c.resp = c.resp[n:]
	return n, nil
}

// Close forgets the channel's transient objects and sessions.
func (c *channel) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.resp = nil
	c.objects = [maxTransient]*object{}
	c.sessions = [maxSessions]*session{}
	return nil
}

// MeasurementLog returns nil: like swtpm, softtpm has no firmware and so no event log.
func (c *channel) MeasurementLog() ([]byte, error) { return nil, nil }

// role is the authorization role a command requires for a handle (Part 1, 19.2).
type role uint8

const (
	roleUser role = iota + 1
	roleAdmin
)

// handleKind is the interface type of a handle parameter (TPMI_DH_OBJECT and friends): what
// it may refer to.
type handleKind uint8

const (
	kindObject        handleKind = iota + 1 // TPMI_DH_OBJECT
	kindObjectOrNull                        // TPMI_DH_OBJECT+
	kindEntity                              // TPMI_DH_ENTITY
	kindEntityOrNull                        // TPMI_DH_ENTITY+
	kindNVAuth                              // TPMI_RH_NV_AUTH
	kindNV                                  // TPMI_RH_NV_INDEX
	kindPolicySession                       // TPMI_SH_POLICY
)

// entity is what a handle refers to.
type entity struct {
	handle uint32
	obj    *object
	nv     *nvIndex
	sess   *session
}

// cmdSession is one authorization of a command.
type cmdSession struct {
	handle uint32
	nonce  []byte
	attrs  uint8
	hmac   []byte
	sess   *session // nil for the password session
}

const (
	sessContinue uint8 = 0x01
)

// command is one command being executed.
type command struct {
	c        *channel
	code     uint32
	spec     spec
	handles  []entity
	sessions []cmdSession
	params   reader
	// Results.
	outHandle    uint32
	hasOutHandle bool
	out          writer
}

// spec describes a command to the dispatcher.
type spec struct {
	handles    []handleKind
	roles      []role // of the first len(roles) handles, which need authorization
	respHandle bool
	run        func(*command) rc
}

// execute runs one command and returns its response. It never panics: a bug is answered
// with TPM_RC_FAILURE, as a TPM in failure mode would.
func (c *channel) execute(in []byte) (resp []byte) {
	defer func() {
		if recover() != nil {
			resp = errorResponse(rcFailure)
		}
	}()
	x, code := c.parse(in)
	if code != rcSuccess {
		return errorResponse(code)
	}
	tag := binary.BigEndian.Uint16(in)
	if code := x.authorize(); code != rcSuccess {
		return errorResponse(code)
	}
	if code := x.spec.run(x); code != rcSuccess {
		return errorResponse(code)
	}
	return x.response(tag)
}

func errorResponse(code rc) []byte {
	var w writer
	w.u16(stNoSessions)
	w.u32(headerSize)
	w.u32(uint32(code))
	return w.b
}

// parse checks the header, resolves the handles and reads the authorization area, in the
// order of Part 3, 5 ("Command Processing").
func (c *channel) parse(in []byte) (*command, rc) {
	if len(in) < headerSize {
		return nil, rcCommandSize
	}
	r := reader{b: in}
	tag, size, code := r.u16(), r.u32(), r.u32()
	if tag != stNoSessions && tag != stSessions {
		return nil, rcBadTag
	}
	if int64(size) != int64(len(in)) || size > maxCommandSize {
		return nil, rcCommandSize
	}
	sp, ok := lookup(code)
	if !ok {
		return nil, rcCommandCode
	}
	x := &command{c: c, code: code, spec: sp}
	for i, kind := range sp.handles {
		h := r.u32()
		if r.short {
			return nil, rcInsufficient.handle(i + 1)
		}
		e, code := c.resolve(h, kind, i)
		if code != rcSuccess {
			return nil, code
		}
		x.handles = append(x.handles, e)
	}
	if tag == stSessions {
		authSize := r.u32()
		if r.short || authSize < 9 || int64(authSize) > int64(len(r.b)) {
			return nil, rcSize
		}
		ar := reader{b: r.take(int(authSize))}
		for !ar.empty() {
			s := cmdSession{handle: ar.u32(), nonce: ar.tpm2b(), attrs: ar.u8(), hmac: ar.tpm2b()}
			if ar.short || len(x.sessions) == maxSessions {
				return nil, rcAuthsize
			}
			n := len(x.sessions) + 1
			if code := c.resolveSession(&s, n); code != rcSuccess {
				return nil, code
			}
			x.sessions = append(x.sessions, s)
		}
	}
	if len(x.sessions) < len(sp.roles) {
		return nil, rcAuthMissing
	}
	if n := len(sp.roles); len(x.sessions) > n {
		// Further sessions could only be audit or parameter encryption sessions: the
		// password session cannot be one, and softtpm has neither.
		if x.sessions[n].sess == nil {
			return nil, rcHandle.session(n + 1)
		}
		return nil, rcAttributes.session(n + 1)
	}
	x.params = r
	return x, rcSuccess
}

func (c *channel) resolve(h uint32, kind handleKind, i int) (entity, rc) {
	n := i + 1
	e := entity{handle: h}
	switch handleType(h) {
	case htTransient, htPersistent:
		switch kind {
		case kindObject, kindObjectOrNull, kindEntity, kindEntityOrNull:
		default:
			return e, rcValue.handle(n)
		}
		if handleType(h) == htTransient && h-transientFirst >= maxTransient {
			// Beyond TRANSIENT_LAST: not a value TPMI_DH_OBJECT unmarshals.
			return e, rcValue.handle(n)
		}
		e.obj = c.object(h)
		if e.obj == nil {
			if handleType(h) == htTransient {
				return e, rcReferenceH0 + rc(i)
			}
			return e, rcHandle.handle(n)
		}
	case htNVIndex:
		switch kind {
		case kindEntity, kindEntityOrNull, kindNVAuth, kindNV:
		default:
			return e, rcValue.handle(n)
		}
		if h != c.tpm.ekNV.handle {
			return e, rcHandle.handle(n)
		}
		e.nv = c.tpm.ekNV
	case htPolicySession:
		if kind != kindPolicySession || h-policySessFirst >= maxSessions {
			return e, rcValue.handle(n)
		}
		e.sess = c.session(h)
		if e.sess == nil {
			return e, rcReferenceH0 + rc(i)
		}
	case htPermanent:
		switch {
		case h == rhNull && (kind == kindObjectOrNull || kind == kindEntityOrNull):
		case (h == rhOwner || h == rhPlatform) && (kind == kindEntity || kind == kindEntityOrNull || kind == kindNVAuth):
		case (h == rhEndorsement || h == rhLockout) && (kind == kindEntity || kind == kindEntityOrNull):
		default:
			return e, rcValue.handle(n)
		}
	default:
		return e, rcValue.handle(n)
	}
	return e, rcSuccess
}

func (c *channel) resolveSession(s *cmdSession, n int) rc {
	switch {
	case s.handle == rsPW:
		if len(s.nonce) != 0 {
			return rcNonce.session(n)
		}
		if s.attrs&^sessContinue != 0 {
			return rcAttributes.session(n)
		}
		if len(s.hmac) > maxDigestSize {
			return rcSize.session(n)
		}
		return rcSuccess
	case handleType(s.handle) == htPolicySession || handleType(s.handle) == 0x02:
		s.sess = c.session(s.handle)
		if s.sess == nil {
			return rcReferenceS0 + rc(n-1)
		}
		// Audit and parameter encryption are not implemented; the reserved bits 3 and 4
		// must be clear anyway.
		if s.attrs&^sessContinue != 0 {
			return rcAttributes.session(n)
		}
		if len(s.nonce) > maxDigestSize || len(s.hmac) > maxDigestSize {
			return rcSize.session(n)
		}
		return rcSuccess
	default:
		return rcHandle.session(n)
	}
}

// object returns the loaded object h refers to, or nil.
func (c *channel) object(h uint32) *object {
	switch h {
	case HandleEK:
		return c.tpm.ek
	case HandleSRK:
		return c.srk
	}
	if i := int64(h) - transientFirst; i >= 0 && i < maxTransient {
		return c.objects[i]
	}
	return nil
}

func (c *channel) session(h uint32) *session {
	if i := int64(h) - policySessFirst; i >= 0 && i < maxSessions {
		return c.sessions[i]
	}
	return nil
}

// authorize checks each session against the handle it authorizes (Part 1, 19).
func (x *command) authorize() rc {
	for i, r := range x.spec.roles {
		if code := x.c.authorizeOne(x.handles[i], r, &x.sessions[i], i+1); code != rcSuccess {
			return code
		}
	}
	return rcSuccess
}

func (c *channel) authorizeOne(e entity, r role, s *cmdSession, n int) rc {
	var authValue, authPolicy []byte
	valueOK := true
	nameAlg := algSHA256
	switch {
	case e.obj != nil:
		authValue, authPolicy, nameAlg = e.obj.authValue, e.obj.pub.authPolicy, e.obj.pub.nameAlg
		if r == roleUser {
			valueOK = e.obj.is(attrUserWithAuth)
		} else {
			valueOK = !e.obj.is(attrAdminWithPolicy)
		}
	case e.nv != nil:
		authPolicy, nameAlg = e.nv.authPolicy, e.nv.nameAlg
	}
	if s.sess == nil {
		if !valueOK {
			return rcAuthUnavailable
		}
		if !authEqual(s.hmac, authValue) {
			// softtpm keeps no dictionary-attack counter; what it can do is answer like a
			// TPM: TPM_RC_BAD_AUTH for entities exempt from DA protection.
			if daExempt(e) {
				return rcBadAuth.session(n)
			}
			return rcAuthFail.session(n)
		}
		return rcSuccess
	}
	if len(authPolicy) == 0 {
		return rcAuthUnavailable
	}
	if s.sess.trial || s.sess.hashAlg != nameAlg || !bytes.Equal(s.sess.policyDigest, authPolicy) {
		return rcPolicyFail.session(n)
	}
	return rcSuccess
}

// daExempt reports whether failed authorizations of e escape dictionary-attack protection
// (Part 1, 19.8.5): objects with noDA, NV indices with TPMA_NV_NO_DA, and the permanent
// handles except TPM_RH_LOCKOUT.
func daExempt(e entity) bool {
	switch {
	case e.obj != nil:
		return e.obj.is(attrNoDA)
	case e.nv != nil:
		return e.nv.attrs&nvNoDA != 0
	}
	return e.handle != rhLockout
}

// authEqual compares a password with an authValue the TPM way: trailing zeros do not count.
func authEqual(a, b []byte) bool {
	a, b = bytes.TrimRight(a, "\x00"), bytes.TrimRight(b, "\x00")
	return subtle.ConstantTimeCompare(a, b) == 1
}

// end checks that the command's parameters were consumed exactly; extra bytes are
// TPM_RC_SIZE.
func (x *command) end() rc {
	if !x.params.empty() {
		return rcSize
	}
	return rcSuccess
}

// response builds the success response and advances the sessions: a policy session gets a
// new nonceTPM and its policy reset, or is flushed if the caller did not ask to continue it.
func (x *command) response(tag uint16) []byte {
	var w writer
	w.u16(tag)
	w.u32(0) // size, filled in below
	w.u32(uint32(rcSuccess))
	if x.hasOutHandle {
		w.u32(x.outHandle)
	}
	if tag == stSessions {
		w.u32(uint32(len(x.out.b)))
	}
	w.raw(x.out.b)
	for _, s := range x.sessions {
		if s.sess == nil {
			// Password sessions answer with an empty nonce and HMAC, continueSession set.
			w.u16(0)
			w.u8(sessContinue)
			w.u16(0)
			continue
		}
		ss := s.sess
		rand.Read(ss.nonceTPM)
		w.tpm2b(ss.nonceTPM)
		w.u8(s.attrs)
		// The session key is empty and no authValue is included, so, as in the reference
		// implementation, the response HMAC is empty when the command's was, and otherwise
		// HMAC_{}(rpHash || nonceTPM || nonceCaller || sessionAttributes).
		if len(s.hmac) == 0 {
			w.u16(0)
		} else {
			var hdr [8]byte
			binary.BigEndian.PutUint32(hdr[4:], x.code)
			rpHash := digest(ss.hashAlg, hdr[:], x.out.b)
			w.tpm2b(hmacSum(ss.hashAlg, nil, rpHash, ss.nonceTPM, s.nonce, []byte{s.attrs}))
		}
		if s.attrs&sessContinue != 0 {
			ss.reset()
		} else {
			x.c.dropSession(ss.handle)
		}
	}
	binary.BigEndian.PutUint32(w.b[2:], uint32(len(w.b)))
	return w.b
}

func (c *channel) dropSession(h uint32) {
	if i := int64(h) - policySessFirst; i >= 0 && i < maxSessions {
		c.sessions[i] = nil
	}
}
