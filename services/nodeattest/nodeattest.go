// Package nodeattest is the node side of attestation: it reads the TPM's endorsement key, creates
// an attestation key, answers the attestor's credential challenge and quotes the PCRs with the
// WireGuard key bound in. node-agent, the many-node simulator and the attestor's tests all run
// this same code against real (or swtpm) TPMs.
package nodeattest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-attestation/attest"
	"google.golang.org/protobuf/types/known/timestamppb"

	attestorv1 "github.com/attestboot/attestboot/proto/attestboot/attestor/v1"
	"github.com/attestboot/attestboot/services/binding"
)

// Algorithm of the attestation key.
type Algorithm string

const (
	// ECDSA P-256: milliseconds to create, the default.
	ECDSA Algorithm = "ecdsa"
	// RSA 2048: up to a second to create on some TPMs.
	RSA Algorithm = "rsa"
)

// Config says how to attest.
type Config struct {
	// AKAlgorithm of the attestation key; default ECDSA.
	AKAlgorithm Algorithm
	// SendEventLog includes the TPM's measurement log, when it has one, for the attestor to replay.
	SendEventLog bool
}

func (c *Config) setDefaults() {
	if c.AKAlgorithm == "" {
		c.AKAlgorithm = ECDSA
	}
}

func (c *Config) validate() error {
	switch c.AKAlgorithm {
	case ECDSA, RSA:
		return nil
	default:
		return fmt.Errorf("nodeattest: unknown AK algorithm %q (want %q or %q)", c.AKAlgorithm, ECDSA, RSA)
	}
}

// TPM is an opened TPM with its endorsement key and a fresh attestation key.
type TPM struct {
	cfg  Config
	tpm  *attest.TPM
	ek   attest.EK
	ak   *attest.AK
	ekPK []byte // PKIX DER of ek.Public
}

// Open opens the TPM behind ch (see services/tpmconn), selects its endorsement key (the RSA EK,
// with its certificate when the TPM has one) and creates an attestation key. Close releases both.
func Open(ch attest.CommandChannelTPM20, cfg Config) (*TPM, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: ch})
	if err != nil {
		return nil, fmt.Errorf("nodeattest: open TPM: %w", err)
	}
	n := &TPM{cfg: cfg, tpm: t}
	if err := n.init(); err != nil {
		t.Close()
		return nil, err
	}
	return n, nil
}

func (n *TPM) init() error {
	eks, err := n.tpm.EKs()
	if err != nil {
		return fmt.Errorf("nodeattest: read endorsement keys: %w", err)
	}
	if len(eks) == 0 {
		return errors.New("nodeattest: the TPM has no endorsement key")
	}
	n.ek = eks[0]
	for _, ek := range eks {
		if ek.Certificate != nil {
			n.ek = ek
			break
		}
	}
	n.ekPK, err = x509.MarshalPKIXPublicKey(n.ek.Public)
	if err != nil {
		return fmt.Errorf("nodeattest: encode EK public key: %w", err)
	}
	alg := attest.ECDSA
	if n.cfg.AKAlgorithm == RSA {
		alg = attest.RSA
	}
	n.ak, err = n.tpm.NewAK(&attest.AKConfig{Algorithm: alg})
	if err != nil {
		return fmt.Errorf("nodeattest: create attestation key: %w", err)
	}
	return nil
}

// EK returns the endorsement key in use.
func (n *TPM) EK() attest.EK { return n.ek }

// EKPublicKey returns the endorsement key as PKIX DER; its SHA-256 is the node's identity.
func (n *TPM) EKPublicKey() []byte { return n.ekPK }

// Close unloads the attestation key and closes the TPM.
func (n *TPM) Close() error {
	var errs []error
	if n.ak != nil {
		errs = append(errs, n.ak.Close(n.tpm))
	}
	errs = append(errs, n.tpm.Close())
	return errors.Join(errs...)
}

// BeginRequest builds the first message of the exchange.
func (n *TPM) BeginRequest(nodeID string, wireguardPublicKey []byte) *attestorv1.BeginAttestationRequest {
	p := n.ak.AttestationParameters()
	req := &attestorv1.BeginAttestationRequest{
		NodeId: nodeID,
		EndorsementKey: &attestorv1.EndorsementKey{
			PublicKey: n.ekPK,
		},
		AttestationKey: &attestorv1.AttestationParameters{
			Public:            p.Public,
			CreateData:        p.CreateData,
			CreateAttestation: p.CreateAttestation,
			CreateSignature:   p.CreateSignature,
		},
		WireguardPublicKey: wireguardPublicKey,
	}
	if n.ek.Certificate != nil {
		req.EndorsementKey.Certificate = n.ek.Certificate.Raw
	}
	return req
}

// Activate recovers the secret of a credential made for this TPM's EK and AK.
func (n *TPM) Activate(cred *attestorv1.EncryptedCredential) ([]byte, error) {
	secret, err := n.ak.ActivateCredentialWithEK(n.tpm, attest.EncryptedCredential{
		Credential: cred.GetCredential(),
		Secret:     cred.GetSecret(),
	}, n.ek)
	if err != nil {
		return nil, fmt.Errorf("nodeattest: activate credential: %w", err)
	}
	return secret, nil
}

// Quote quotes every PCR of the SHA-256 bank with the attestation key over extraData and
// returns the quote with the PCR values it covers.
func (n *TPM) Quote(extraData []byte) (*attestorv1.Quote, []*attestorv1.PCR, error) {
	q, err := n.ak.Quote(n.tpm, extraData, attest.HashSHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("nodeattest: quote: %w", err)
	}
	pcrs, err := n.tpm.PCRs(attest.HashSHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("nodeattest: read PCRs: %w", err)
	}
	out := make([]*attestorv1.PCR, 0, len(pcrs))
	for _, p := range pcrs {
		out = append(out, &attestorv1.PCR{
			Index:  uint32(p.Index),
			Hash:   attestorv1.HashAlgorithm_HASH_ALGORITHM_SHA256,
			Digest: p.Digest,
		})
	}
	return &attestorv1.Quote{Quote: q.Quote, Signature: q.Signature}, out, nil
}

// CompleteRequest activates the credential of a BeginAttestation answer and quotes the PCRs
// over the binding of (nonce, WireGuard key, node id).
func (n *TPM) CompleteRequest(begin *attestorv1.BeginAttestationResponse, nodeID string, wireguardPublicKey []byte) (*attestorv1.CompleteAttestationRequest, error) {
	secret, err := n.Activate(begin.GetCredential())
	if err != nil {
		return nil, err
	}
	extra, err := binding.ExtraData(begin.GetNonce(), wireguardPublicKey, nodeID)
	if err != nil {
		return nil, fmt.Errorf("nodeattest: %w", err)
	}
	q, pcrs, err := n.Quote(extra)
	if err != nil {
		return nil, err
	}
	req := &attestorv1.CompleteAttestationRequest{
		SessionId: begin.GetSessionId(),
		Secret:    secret,
		Quotes:    []*attestorv1.Quote{q},
		Pcrs:      pcrs,
	}
	if n.cfg.SendEventLog {
		log, err := n.tpm.MeasurementLog()
		if err != nil {
			return nil, fmt.Errorf("nodeattest: read measurement log: %w", err)
		}
		req.EventLog = log
	}
	return req, nil
}

// Result is a passed attestation.
type Result struct {
	AttestationID string
	ExpiresAt     time.Time
}

// Attest runs the whole exchange with the attestor: Begin, activate, quote, Complete.
func (n *TPM) Attest(ctx context.Context, c attestorv1.AttestorServiceClient, nodeID string, wireguardPublicKey []byte) (Result, error) {
	begin, err := c.BeginAttestation(ctx, n.BeginRequest(nodeID, wireguardPublicKey))
	if err != nil {
		return Result{}, fmt.Errorf("begin attestation: %w", err)
	}
	req, err := n.CompleteRequest(begin, nodeID, wireguardPublicKey)
	if err != nil {
		return Result{}, err
	}
	done, err := c.CompleteAttestation(ctx, req)
	clear(req.Secret)
	if err != nil {
		return Result{}, fmt.Errorf("complete attestation: %w", err)
	}
	return Result{AttestationID: done.GetAttestationId(), ExpiresAt: timestampOrZero(done.GetExpiresAt())}, nil
}

func timestampOrZero(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}
