package softtpm

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math/big"
)

// kdfa is KDFa of TPM 2.0 Part 1, 11.4.10.2: SP800-108 counter mode with HMAC.
func kdfa(alg uint16, key []byte, label string, contextU, contextV []byte, bits int) []byte {
	n := (bits + 7) / 8
	out := make([]byte, 0, n+maxDigestSize)
	mac := hmac.New(func() hash.Hash { return newHash(alg) }, key)
	var b [4]byte
	for counter := uint32(1); len(out) < n; counter++ {
		mac.Reset()
		binary.BigEndian.PutUint32(b[:], counter)
		mac.Write(b[:])
		mac.Write([]byte(label))
		mac.Write([]byte{0})
		mac.Write(contextU)
		mac.Write(contextV)
		binary.BigEndian.PutUint32(b[:], uint32(bits))
		mac.Write(b[:])
		out = mac.Sum(out)
	}
	out = out[:n]
	if bits%8 != 0 {
		out[0] &= 1<<(bits%8) - 1
	}
	return out
}

func hmacSum(alg uint16, key []byte, parts ...[]byte) []byte {
	mac := hmac.New(func() hash.Hash { return newHash(alg) }, key)
	for _, p := range parts {
		mac.Write(p)
	}
	return mac.Sum(nil)
}

// cfb applies AES in CFB mode with a zero IV, the TPM's protection of sensitive areas and
// credentials; decrypt selects the direction.
func cfb(key, data []byte, decrypt bool) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(data))
	iv := make([]byte, block.BlockSize())
	// CFB is deprecated for new designs, but it is what TPM 2.0 uses for credentials and
	// sensitive areas; the integrity HMAC in front of each ciphertext authenticates it.
	if decrypt {
		//lint:ignore SA1019 TPM 2.0 mandates CFB here.
		cipher.NewCFBDecrypter(block, iv).XORKeyStream(out, data)
	} else {
		//lint:ignore SA1019 TPM 2.0 mandates CFB here.
		cipher.NewCFBEncrypter(block, iv).XORKeyStream(out, data)
	}
	return out, nil
}

// object is a key the TPM holds: loaded from a blob (transient) or made at manufacture
// (persistent EK and SRK).
type object struct {
	pub       public
	name, qn  []byte
	hierarchy uint32
	authValue []byte
	// signer is the private key of a signing key; decrypter that of the EK.
	signer    crypto.Signer
	decrypter *rsa.PrivateKey
	// seedValue protects the children of a storage key (Part 1, 23.3).
	seedValue []byte
}

func newObject(pub public, hierarchy uint32, parentQN []byte) *object {
	name := pub.name()
	return &object{pub: pub, name: name, qn: qualifiedName(pub.nameAlg, parentQN, name), hierarchy: hierarchy}
}

func (o *object) is(attrs uint32) bool { return o.pub.attrs&attrs == attrs }

// storageParent reports whether o may be the parent of created and loaded objects: a
// restricted decryption key with a symmetric algorithm and a protection seed.
func (o *object) storageParent() bool {
	return o.is(attrRestricted|attrDecrypt) && o.pub.sym.alg == algAES && o.seedValue != nil
}

// sensitive is a TPMT_SENSITIVE.
type sensitive struct {
	typ       uint16
	authValue []byte
	seedValue []byte
	secret    []byte // an RSA prime or an ECC private scalar
}

func (s *sensitive) marshal(w *writer) {
	w.u16(s.typ)
	w.tpm2b(s.authValue)
	w.tpm2b(s.seedValue)
	w.tpm2b(s.secret)
}

// protect makes the TPM2B_PRIVATE content of a child of parent (Part 1, 23.3): the marshaled
// TPM2B_SENSITIVE encrypted with a key derived from the parent's seed and the child's Name,
// behind an HMAC over the ciphertext and the Name.
func protect(parent *object, name []byte, s *sensitive) ([]byte, error) {
	alg := parent.pub.nameAlg
	plain := marshal(func(w *writer) { w.sized(s.marshal) })
	symKey := kdfa(alg, parent.seedValue, "STORAGE", name, nil, int(parent.pub.sym.keyBits))
	enc, err := cfb(symKey, plain, false)
	if err != nil {
		return nil, err
	}
	hmacKey := kdfa(alg, parent.seedValue, "INTEGRITY", nil, nil, hashAlg(alg).Size()*8)
	integrity := hmacSum(alg, hmacKey, enc, name)
	return marshal(func(w *writer) { w.tpm2b(integrity); w.raw(enc) }), nil
}

// unprotect reverses protect. An integrity failure is rcIntegrity; a blob that decrypts to
// something that is not a TPMT_SENSITIVE is rcSize (what the reference returns when the
// unmarshaled sizes do not add up).
func unprotect(parent *object, name, private []byte) (sensitive, rc) {
	alg := parent.pub.nameAlg
	r := reader{b: private}
	integrity := r.tpm2b()
	if r.short || len(integrity) != hashAlg(alg).Size() {
		return sensitive{}, rcSize
	}
	enc := r.b
	hmacKey := kdfa(alg, parent.seedValue, "INTEGRITY", nil, nil, hashAlg(alg).Size()*8)
	if subtle.ConstantTimeCompare(hmacSum(alg, hmacKey, enc, name), integrity) != 1 {
		return sensitive{}, rcIntegrity
	}
	symKey := kdfa(alg, parent.seedValue, "STORAGE", name, nil, int(parent.pub.sym.keyBits))
	plain, err := cfb(symKey, enc, true)
	if err != nil {
		return sensitive{}, rcFailure
	}
	pr := reader{b: plain}
	inner := pr.tpm2b()
	if pr.short || !pr.empty() {
		return sensitive{}, rcSize
	}
	ir := reader{b: inner}
	s := sensitive{typ: ir.u16(), authValue: ir.tpm2b(), seedValue: ir.tpm2b(), secret: ir.tpm2b()}
	if ir.short || !ir.empty() {
		return sensitive{}, rcSize
	}
	return s, rcSuccess
}

func ellipticCurve(curve uint16) elliptic.Curve {
	switch curve {
	case curveNISTP256:
		return elliptic.P256()
	case curveNISTP384:
		return elliptic.P384()
	}
	return nil
}

func ecdhCurve(curve uint16) ecdh.Curve {
	switch curve {
	case curveNISTP256:
		return ecdh.P256()
	case curveNISTP384:
		return ecdh.P384()
	}
	return nil
}

// splitPoint returns the X and Y coordinates of an uncompressed point.
func splitPoint(uncompressed []byte) (x, y []byte) {
	b := uncompressed[1:]
	return b[:len(b)/2], b[len(b)/2:]
}

// generate makes a fresh key for the template pub, fills in its unique field and returns
// the private part as a TPMT_SENSITIVE secret.
func generate(pub *public) (crypto.Signer, []byte, error) {
	switch pub.typ {
	case algECC:
		k, err := ecdsa.GenerateKey(ellipticCurve(pub.curve), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		pt, err := k.PublicKey.Bytes()
		if err != nil {
			return nil, nil, err
		}
		pub.x, pub.y = splitPoint(pt)
		d, err := k.Bytes()
		if err != nil {
			return nil, nil, err
		}
		return k, d, nil
	case algRSA:
		k, err := rsa.GenerateKey(rand.Reader, int(pub.keyBits))
		if err != nil {
			return nil, nil, err
		}
		pub.modulus = k.N.FillBytes(make([]byte, pub.keyBits/8))
		return k, k.Primes[0].Bytes(), nil
	}
	return nil, nil, fmt.Errorf("softtpm: cannot generate keys of type %#x", pub.typ)
}

// rsaExponent returns the public exponent a TPMS_RSA_PARMS names (0 is the default 65537).
func rsaExponent(e uint32) int {
	if e == 0 {
		return 65537
	}
	return int(e)
}

// privateFromSensitive rebuilds the private key of pub from its sensitive secret and checks
// that the two belong together (TPM_RC_BINDING otherwise).
func privateFromSensitive(pub *public, secret []byte) (crypto.Signer, rc) {
	switch pub.typ {
	case algECC:
		k, err := ecdsa.ParseRawPrivateKey(ellipticCurve(pub.curve), secret)
		if err != nil {
			return nil, rcBinding
		}
		pt, err := k.PublicKey.Bytes()
		if err != nil {
			return nil, rcBinding
		}
		x, y := splitPoint(pt)
		if subtle.ConstantTimeCompare(x, pub.x) != 1 || subtle.ConstantTimeCompare(y, pub.y) != 1 {
			return nil, rcBinding
		}
		return k, rcSuccess
	case algRSA:
		n := new(big.Int).SetBytes(pub.modulus)
		p := new(big.Int).SetBytes(secret)
		if n.BitLen() != int(pub.keyBits) || p.Cmp(big.NewInt(1)) <= 0 {
			return nil, rcBinding
		}
		q, rem := new(big.Int).QuoRem(n, p, new(big.Int))
		if rem.Sign() != 0 || q.Cmp(big.NewInt(1)) <= 0 {
			return nil, rcBinding
		}
		e := rsaExponent(pub.exponent)
		one := big.NewInt(1)
		phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
		d := new(big.Int).ModInverse(big.NewInt(int64(e)), phi)
		if d == nil {
			return nil, rcBinding
		}
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: e}, D: d, Primes: []*big.Int{p, q}}
		if err := k.Validate(); err != nil {
			return nil, rcBinding
		}
		k.Precompute()
		return k, rcSuccess
	}
	return nil, rcType
}

// sign signs digest with o under s (a resolved, non-NULL scheme) and returns the marshaled
// TPMT_SIGNATURE.
func (o *object) sign(s scheme, d []byte) ([]byte, error) {
	var w writer
	w.u16(s.alg)
	w.u16(s.hash)
	switch k := o.signer.(type) {
	case *ecdsa.PrivateKey:
		if s.alg != algECDSA {
			return nil, errors.New("softtpm: ECC keys sign with ECDSA only")
		}
		r, ss, err := ecdsa.Sign(rand.Reader, k, d)
		if err != nil {
			return nil, err
		}
		size := curveSize(o.pub.curve)
		w.tpm2b(r.FillBytes(make([]byte, size)))
		w.tpm2b(ss.FillBytes(make([]byte, size)))
	case *rsa.PrivateKey:
		var sig []byte
		var err error
		switch s.alg {
		case algRSASSA:
			sig, err = rsa.SignPKCS1v15(nil, k, hashAlg(s.hash), d)
		case algRSAPSS:
			sig, err = rsa.SignPSS(rand.Reader, k, hashAlg(s.hash), d, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		default:
			return nil, errors.New("softtpm: RSA keys sign with RSASSA or RSAPSS only")
		}
		if err != nil {
			return nil, err
		}
		w.tpm2b(sig)
	default:
		return nil, errors.New("softtpm: not a signing key")
	}
	return w.b, nil
}

// deriveECC derives the ECC key a TPM would make from a primary seed, deterministically: the
// SRK is the same key on every start of a TPM without being stored.
func deriveECC(curve uint16, seed []byte, label string) (x, y []byte, err error) {
	c := ecdhCurve(curve)
	size := curveSize(curve)
	params := ellipticCurve(curve).Params()
	// Reduce 64 extra bits modulo n-1, then add one: a uniform scalar in [1, n-1].
	raw := new(big.Int).SetBytes(kdfa(algSHA256, seed, label, nil, nil, (size+8)*8))
	nMinus1 := new(big.Int).Sub(params.N, big.NewInt(1))
	d := raw.Mod(raw, nMinus1).Add(raw, big.NewInt(1))
	k, err := c.NewPrivateKey(d.FillBytes(make([]byte, size)))
	if err != nil {
		return nil, nil, err
	}
	x, y = splitPoint(k.PublicKey().Bytes())
	return x, y, nil
}
