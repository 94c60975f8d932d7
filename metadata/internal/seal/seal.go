// Package seal encrypts secret values at rest with AES-256-GCM under a key-encryption key
// (KEK) that never reaches the database. Each ciphertext is bound to its scope and name as
// additional data, so a row copied onto another secret's row fails to open instead of
// delivering one node's secret to another.
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
)

// KeySize is the KEK size: AES-256.
const KeySize = 32

// ErrOpen is returned for a ciphertext that does not open: wrong key, or a row moved to
// another scope or name, or tampered with.
var ErrOpen = errors.New("seal: secret does not open")

var keyIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Keyring seals with its current key and opens with any key it holds, so a KEK can be rotated:
// load the new key as current and the old one as previous, then re-put the secrets.
type Keyring struct {
	current string
	aeads   map[string]cipher.AEAD
}

// New returns a keyring sealing with key (32 bytes) under id.
func New(id string, key []byte) (*Keyring, error) {
	k := &Keyring{current: id, aeads: map[string]cipher.AEAD{}}
	if err := k.Add(id, key); err != nil {
		return nil, err
	}
	return k, nil
}

// Add adds a key that opens secrets sealed under id.
func (k *Keyring) Add(id string, key []byte) error {
	if !keyIDRE.MatchString(id) {
		return fmt.Errorf("seal: key id %q: 1 to 64 characters of [A-Za-z0-9._-]", id)
	}
	if len(key) != KeySize {
		return fmt.Errorf("seal: key %q is %d bytes, want %d", id, len(key), KeySize)
	}
	if _, dup := k.aeads[id]; dup && id != k.current {
		return fmt.Errorf("seal: key id %q given twice", id)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	k.aeads[id] = aead
	return nil
}

// KeyID is the id of the key Seal uses.
func (k *Keyring) KeyID() string { return k.current }

// aad binds a ciphertext to what it is: a versioned label, the scope and the name, separated by
// NUL (which neither may contain).
func aad(scope, name string) []byte {
	return []byte("attestboot.secret.v1\x00" + scope + "\x00" + name)
}

// Seal encrypts value for the secret name of scope ("defaults", "group:G", "node:N").
func (k *Keyring) Seal(scope, name string, value []byte) (ciphertext, nonce []byte, keyID string, err error) {
	aead := k.aeads[k.current]
	nonce = make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, "", fmt.Errorf("seal: nonce: %w", err)
	}
	return aead.Seal(nil, nonce, value, aad(scope, name)), nonce, k.current, nil
}

// Open decrypts a sealed value. The error never contains the value or the key.
func (k *Keyring) Open(keyID, scope, name string, ciphertext, nonce []byte) ([]byte, error) {
	aead, ok := k.aeads[keyID]
	if !ok {
		return nil, fmt.Errorf("seal: secret %q of %s was sealed with key %q, which is not loaded: %w", name, scope, keyID, ErrOpen)
	}
	if len(nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("seal: secret %q of %s: %w", name, scope, ErrOpen)
	}
	v, err := aead.Open(nil, nonce, ciphertext, aad(scope, name))
	if err != nil {
		return nil, fmt.Errorf("seal: secret %q of %s: %w", name, scope, ErrOpen)
	}
	return v, nil
}

// LoadKey reads a KEK file: 32 raw bytes, or 64 hexadecimal characters (trailing newline
// allowed). The file must not be readable by group or others.
func LoadKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("seal: key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("seal: key file %s is accessible by group or others (mode %o): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seal: key file: %w", err)
	}
	if len(b) == KeySize {
		return b, nil
	}
	t := bytes.TrimSpace(b)
	if len(t) == 2*KeySize {
		key := make([]byte, KeySize)
		if _, err := hex.Decode(key, t); err == nil {
			return key, nil
		}
	}
	return nil, fmt.Errorf("seal: key file %s: want %d raw bytes or %d hex characters", path, KeySize, 2*KeySize)
}
