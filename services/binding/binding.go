// Package binding is the one encoding both ends use to bind a WireGuard key and a node id into a
// TPM quote: the quote's extraData is the SHA-256 computed here.
package binding

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Sizes of the fixed-length parts.
const (
	NonceSize        = 32
	WireGuardKeySize = 32
	// MaxNodeIDLen bounds the node id so its length fits the uint16 prefix with room to spare.
	MaxNodeIDLen = 255
)

// domain separates this hash from every other use of SHA-256 over similar bytes, and names the
// encoding version so it can change without ambiguity.
const domain = "attestboot/quote/v1\x00"

// ErrInput reports a part of the wrong size.
var ErrInput = errors.New("binding: invalid input")

// ExtraData returns SHA-256(domain || nonce || wireguardKey || uint16be(len(nodeID)) || nodeID).
// The nonce and key have fixed lengths and the node id is length-prefixed, so two different
// triples never share an encoding.
func ExtraData(nonce, wireguardKey []byte, nodeID string) ([]byte, error) {
	if len(nonce) != NonceSize {
		return nil, fmt.Errorf("%w: nonce is %d bytes, want %d", ErrInput, len(nonce), NonceSize)
	}
	if len(wireguardKey) != WireGuardKeySize {
		return nil, fmt.Errorf("%w: WireGuard key is %d bytes, want %d", ErrInput, len(wireguardKey), WireGuardKeySize)
	}
	if len(nodeID) == 0 || len(nodeID) > MaxNodeIDLen {
		return nil, fmt.Errorf("%w: node id is %d bytes, want 1 to %d", ErrInput, len(nodeID), MaxNodeIDLen)
	}
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write(nonce)
	h.Write(wireguardKey)
	var n [2]byte
	binary.BigEndian.PutUint16(n[:], uint16(len(nodeID)))
	h.Write(n[:])
	h.Write([]byte(nodeID))
	return h.Sum(nil), nil
}
