// Package quote verifies a node's TPM quotes: signed by the attestation key, over the binding of
// (nonce, WireGuard key, node id), covering exactly the PCR values supplied, matching the PCR
// policy of the node's groups, and consistent with the event log when one is sent.
package quote

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/attestboot/attestboot/services/binding"
)

// Limits on what a node may send.
const (
	MaxQuotes      = 4
	MaxQuoteSize   = 2048
	MaxPCRs        = 4 * 24
	MaxEventLogLen = 1 << 20
)

// Precise reasons a quote is refused; each is recorded in the event log.
var (
	ErrMalformed   = errors.New("malformed quote or PCR values")
	ErrSignature   = errors.New("quote signature or PCR digest does not verify")
	ErrBinding     = errors.New("quote extraData is not the binding of this session's nonce, WireGuard key and node id")
	ErrPCRPolicy   = errors.New("PCR values break the PCR policy")
	ErrEventLog    = errors.New("event log does not replay to the quoted PCR values")
	ErrUnsupported = errors.New("unsupported PCR bank")
)

// PCR is one supplied register value.
type PCR struct {
	Index  int
	Hash   crypto.Hash
	Digest []byte
}

// Input is everything a verification needs.
type Input struct {
	// AKPublic is the TPMT_PUBLIC of the attestation key the session was begun with.
	AKPublic []byte
	// Nonce, WireGuardKey and NodeID are the session's, never the request's.
	Nonce        []byte
	WireGuardKey []byte
	NodeID       string

	Quotes   []attest.Quote
	PCRs     []PCR
	EventLog []byte

	// Policy maps PCR index to the SHA-256 value every node of its groups must have.
	Policy map[int][]byte
}

// Verify returns nil only if every check passes.
func Verify(in Input) error {
	if len(in.Quotes) == 0 || len(in.Quotes) > MaxQuotes {
		return fmt.Errorf("%w: %d quotes (want 1 to %d)", ErrMalformed, len(in.Quotes), MaxQuotes)
	}
	for i, q := range in.Quotes {
		if len(q.Quote) == 0 || len(q.Quote) > MaxQuoteSize || len(q.Signature) == 0 || len(q.Signature) > MaxQuoteSize {
			return fmt.Errorf("%w: quote %d has %d/%d bytes", ErrMalformed, i, len(q.Quote), len(q.Signature))
		}
	}
	if len(in.EventLog) > MaxEventLogLen {
		return fmt.Errorf("%w: event log of %d bytes", ErrMalformed, len(in.EventLog))
	}
	pcrs, err := convert(in.PCRs)
	if err != nil {
		return err
	}
	ak, err := attest.ParseAKPublic(in.AKPublic)
	if err != nil {
		return fmt.Errorf("%w: attestation key: %v", ErrMalformed, err)
	}
	extra, err := binding.ExtraData(in.Nonce, in.WireGuardKey, in.NodeID)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := ak.VerifyAll(in.Quotes, pcrs, extra); err != nil {
		// Say which: a quote over other data (a replay, another key or node) or a bad signature.
		for i, q := range in.Quotes {
			att, derr := tpm2.DecodeAttestationData(q.Quote)
			if derr != nil {
				return fmt.Errorf("%w: quote %d: %v", ErrMalformed, i, derr)
			}
			if !bytes.Equal(att.ExtraData, extra) {
				return fmt.Errorf("%w (quote %d)", ErrBinding, i)
			}
		}
		return fmt.Errorf("%w: %v", ErrSignature, err)
	}
	if err := checkPolicy(in.Policy, pcrs); err != nil {
		return err
	}
	if len(in.EventLog) > 0 {
		el, err := attest.ParseEventLog(in.EventLog)
		if err != nil {
			return fmt.Errorf("%w: parse: %v", ErrEventLog, err)
		}
		if _, err := el.Verify(pcrs); err != nil {
			return fmt.Errorf("%w: %v", ErrEventLog, err)
		}
	}
	return nil
}

func convert(in []PCR) ([]attest.PCR, error) {
	if len(in) == 0 || len(in) > MaxPCRs {
		return nil, fmt.Errorf("%w: %d PCR values (want 1 to %d)", ErrMalformed, len(in), MaxPCRs)
	}
	type key struct {
		h crypto.Hash
		i int
	}
	seen := make(map[key]bool, len(in))
	out := make([]attest.PCR, 0, len(in))
	for _, p := range in {
		switch p.Hash {
		case crypto.SHA1, crypto.SHA256, crypto.SHA384:
		default:
			return nil, fmt.Errorf("%w: %v", ErrUnsupported, p.Hash)
		}
		if p.Index < 0 || p.Index > 23 {
			return nil, fmt.Errorf("%w: PCR index %d", ErrMalformed, p.Index)
		}
		if len(p.Digest) != p.Hash.Size() {
			return nil, fmt.Errorf("%w: PCR %d (%v) digest of %d bytes", ErrMalformed, p.Index, p.Hash, len(p.Digest))
		}
		k := key{p.Hash, p.Index}
		if seen[k] {
			return nil, fmt.Errorf("%w: PCR %d (%v) given twice", ErrMalformed, p.Index, p.Hash)
		}
		seen[k] = true
		out = append(out, attest.PCR{Index: p.Index, DigestAlg: p.Hash, Digest: p.Digest})
	}
	return out, nil
}

// checkPolicy runs after VerifyAll, so every PCR in pcrs is covered by a verified quote.
func checkPolicy(policy map[int][]byte, pcrs []attest.PCR) error {
	for idx, want := range policy {
		found := false
		for _, p := range pcrs {
			if p.DigestAlg == crypto.SHA256 && p.Index == idx {
				found = true
				if !bytes.Equal(p.Digest, want) {
					return fmt.Errorf("%w: PCR %d is %x, policy wants %x", ErrPCRPolicy, idx, p.Digest, want)
				}
			}
		}
		if !found {
			return fmt.Errorf("%w: PCR %d (sha256) not quoted", ErrPCRPolicy, idx)
		}
	}
	return nil
}
