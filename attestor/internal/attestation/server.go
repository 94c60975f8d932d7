package attestation

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-attestation/attest"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestboot/attestboot/attestor/internal/admission"
	"github.com/attestboot/attestboot/attestor/internal/akparams"
	"github.com/attestboot/attestboot/attestor/internal/ekpolicy"
	"github.com/attestboot/attestboot/attestor/internal/quote"
	attestorv1 "github.com/attestboot/attestboot/proto/attestboot/attestor/v1"
	"github.com/attestboot/attestboot/services/binding"
	"github.com/attestboot/attestboot/services/inventory"
)

// Config of the attestation service.
type Config struct {
	// SessionTTL is how long a BeginAttestation challenge may be answered (default 60 s).
	SessionTTL time.Duration
	// AttestationTTL is how long a passed attestation may open a tunnel (default 60 s).
	AttestationTTL time.Duration
	// RateWindow, MaxPerNode and MaxPerEK limit BeginAttestation calls: at most that many
	// sessions per node and per EK within the window (defaults: 1 min, 10, 10).
	RateWindow time.Duration
	MaxPerNode int
	MaxPerEK   int
	// MaxInFlight bounds the sessions this replica has begun and not yet seen completed
	// (admission control, see internal/admission); beyond it BeginAttestation answers
	// ResourceExhausted with a RetryInfo of a retry slot, RetryAfter (default 1 s) or later
	// (see admission.Window.RetryAfter). 0 admits everyone.
	MaxInFlight int
	RetryAfter  time.Duration
	// MaxOpenTunnels shrinks that window as open tunnels (across all gateways: boots past
	// attestation and not yet finished) approach it, from half of it on, to a sixteenth at it
	// (admission.Config.MaxDownstream), so that replicas together do not let in more nodes
	// than the later phases serve. Counted at most every downstreamEvery. 0: not counted.
	MaxOpenTunnels int
	// EK is the enrollment policy.
	EK *ekpolicy.Policy
}

func (c *Config) setDefaults() {
	if c.SessionTTL == 0 {
		c.SessionTTL = 60 * time.Second
	}
	if c.AttestationTTL == 0 {
		c.AttestationTTL = 60 * time.Second
	}
	if c.RateWindow == 0 {
		c.RateWindow = time.Minute
	}
	if c.MaxPerNode == 0 {
		c.MaxPerNode = 10
	}
	if c.MaxPerEK == 0 {
		c.MaxPerEK = 10
	}
}

func (c *Config) validate() error {
	switch {
	case c.SessionTTL < time.Second || c.SessionTTL > time.Hour:
		return fmt.Errorf("session TTL %v outside 1s..1h", c.SessionTTL)
	case c.AttestationTTL < time.Second || c.AttestationTTL > time.Hour:
		return fmt.Errorf("attestation TTL %v outside 1s..1h", c.AttestationTTL)
	case c.RateWindow < time.Second || c.MaxPerNode < 1 || c.MaxPerEK < 1:
		return errors.New("rate limits must allow at least one attempt per window of at least 1s")
	case c.EK == nil:
		return errors.New("no EK policy")
	case c.MaxInFlight < 0 || c.RetryAfter < 0 || c.MaxOpenTunnels < 0:
		return errors.New("negative admission limit, open-tunnel limit or retry hint")
	}
	return nil
}

type metrics struct {
	passed   prometheus.Counter
	refusals *prometheus.CounterVec
}

// Server implements attestorv1.AttestorServiceServer.
type Server struct {
	attestorv1.UnsafeAttestorServiceServer

	cfg     Config
	store   *inventory.Store
	logger  *slog.Logger
	metrics metrics
	window  *admission.Window // nil: no admission control

	// Open tunnels are counted for the window by one caller at a time, at most every
	// downstreamEvery (countedAt: UnixNano of the last count).
	countMu   sync.Mutex
	countedAt atomic.Int64
}

// downstreamEvery is how often open tunnels are counted for admission control.
const downstreamEvery = 500 * time.Millisecond

// countOpenTunnels updates the admission window's count of open tunnels if the last count is
// older than downstreamEvery and no other caller is counting. A failed count keeps the last
// one (the refusal is recorded by whatever else fails then).
func (s *Server) countOpenTunnels(ctx context.Context) {
	if s.cfg.MaxOpenTunnels <= 0 || time.Since(time.Unix(0, s.countedAt.Load())) < downstreamEvery || !s.countMu.TryLock() {
		return
	}
	defer s.countMu.Unlock()
	s.countedAt.Store(time.Now().UnixNano())
	n, err := s.store.CountAllOpenTunnels(ctx)
	if err != nil {
		s.logger.WarnContext(ctx, "count open tunnels for admission control", "err", err)
		return
	}
	s.window.SetDownstream(int(n))
}

// New returns the service. reg may be nil.
func New(cfg Config, store *inventory.Store, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("attestation: %w", err)
	}
	m := metrics{
		passed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "attestboot_attestations_passed_total", Help: "Attestations that passed.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestboot_attestation_refusals_total", Help: "Attestation refusals by reason.",
		}, []string{"reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.passed, m.refusals} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("attestation: register metrics: %w", err)
			}
		}
	}
	s := &Server{cfg: cfg, store: store, logger: logger, metrics: m}
	if cfg.MaxInFlight > 0 {
		var err error
		if s.window, err = admission.New(admission.Config{
			Limit: cfg.MaxInFlight, TTL: cfg.SessionTTL, RetryAfter: cfg.RetryAfter, MaxDownstream: cfg.MaxOpenTunnels,
		}); err != nil {
			return nil, fmt.Errorf("attestation: %w", err)
		}
		inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "attestboot_attestations_in_flight",
			Help: "Sessions this replica has begun and not seen completed (admission control counts them against -max-in-flight).",
		}, func() float64 { return float64(s.window.InFlight()) })
		limit := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "attestboot_attestation_admission_limit",
			Help: "The sessions this replica admits at once now: -max-in-flight, less while open tunnels exceed half of -max-open-tunnels.",
		}, func() float64 { return float64(s.window.Limit()) })
		if reg != nil {
			for _, c := range []prometheus.Collector{inFlight, limit} {
				if err := reg.Register(c); err != nil {
					return nil, fmt.Errorf("attestation: register metrics: %w", err)
				}
			}
		}
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) { attestorv1.RegisterAttestorServiceServer(r, s) }

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// BeginAttestation checks the node, its EK and its AK, and issues the challenge.
func (s *Server) BeginAttestation(ctx context.Context, req *attestorv1.BeginAttestationRequest) (*attestorv1.BeginAttestationResponse, error) {
	nodeID := req.GetNodeId()
	// Turned away before any work: the cheapest answer there is.
	var ticket *admission.Ticket
	if s.window != nil {
		s.countOpenTunnels(ctx)
		var ok bool
		if ticket, ok = s.window.Admit(); !ok {
			return nil, s.record(ctx, nodeID, refuse(codes.ResourceExhausted, ReasonOverloaded,
				fmt.Errorf("%d attestations in flight", s.window.Limit())).retryAfter(s.window.RetryAfter()),
				map[string]any{"step": "begin"})
		}
	}
	resp, r := s.begin(ctx, req)
	if r != nil {
		if ticket != nil {
			ticket.Cancel()
		}
		return nil, s.record(ctx, nodeID, r, map[string]any{"step": "begin"})
	}
	if ticket != nil {
		ticket.Keep(resp.GetSessionId())
	}
	return resp, nil
}

func (s *Server) begin(ctx context.Context, req *attestorv1.BeginAttestationRequest) (*attestorv1.BeginAttestationResponse, *refusal) {
	nodeID := req.GetNodeId()
	if !nodeIDPattern.MatchString(nodeID) {
		return nil, refuse(codes.InvalidArgument, ReasonInvalidRequest, fmt.Errorf("node id %q", eventNodeID(nodeID)))
	}
	if n := len(req.GetWireguardPublicKey()); n != binding.WireGuardKeySize {
		return nil, refuse(codes.InvalidArgument, ReasonInvalidRequest, fmt.Errorf("WireGuard key of %d bytes", n))
	}
	now := s.store.Clock().Now()
	ek := req.GetEndorsementKey()
	id, err := s.cfg.EK.Identify(ek.GetCertificate(), ek.GetPublicKey(), now)
	if err != nil {
		return nil, ekRefusal(err)
	}
	akp := attest.AttestationParameters{
		Public:            req.GetAttestationKey().GetPublic(),
		CreateData:        req.GetAttestationKey().GetCreateData(),
		CreateAttestation: req.GetAttestationKey().GetCreateAttestation(),
		CreateSignature:   req.GetAttestationKey().GetCreateSignature(),
	}

	sub, err := s.store.AttestationSubject(ctx, nodeID, id.SHA256, now.Add(-s.cfg.RateWindow))
	if errors.Is(err, inventory.ErrNotFound) {
		return nil, refuse(codes.PermissionDenied, ReasonNodeUnknown, err)
	} else if err != nil {
		return nil, refuse(codes.Internal, "internal", err)
	}
	if !sub.Enabled {
		return nil, refuse(codes.PermissionDenied, ReasonNodeDisabled, errors.New("node is disabled"))
	}
	enroll, err := s.cfg.EK.Decide(nodeID, id, sub.Enrollment, sub.TrustOnFirstUse)
	if err != nil {
		return nil, ekRefusal(err)
	}
	if sub.SessionsByNode >= s.cfg.MaxPerNode {
		return nil, refuse(codes.ResourceExhausted, ReasonRateLimitedNode, fmt.Errorf("%d sessions in %v", sub.SessionsByNode, s.cfg.RateWindow))
	}
	if sub.SessionsByEK >= s.cfg.MaxPerEK {
		return nil, refuse(codes.ResourceExhausted, ReasonRateLimitedEK, fmt.Errorf("%d sessions in %v", sub.SessionsByEK, s.cfg.RateWindow))
	}

	secret, cred, err := akparams.Challenge(akp, id.Public)
	if err != nil {
		return nil, akRefusal(err)
	}
	defer clear(secret)
	nonce := make([]byte, binding.NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, refuse(codes.Internal, "internal", err)
	}
	secretHash := sha256.Sum256(secret)
	akHash := sha256.Sum256(akp.Public)

	session := inventory.Session{
		NodeID: nodeID, EKSHA256: id.SHA256, AKPublic: akp.Public, AKSHA256: akHash[:],
		WireGuardPublicKey: req.GetWireguardPublicKey(), Nonce: nonce, SecretSHA256: secretHash[:],
	}
	begun := inventory.Event{NodeID: nodeID, Kind: KindBegun, Service: "attestor",
		Detail: map[string]any{"ek_sha256": fmt.Sprintf("%x", id.SHA256)}}
	var sess inventory.Session
	if enroll == nil {
		// The common case: one round trip, in a commit shared with the other nodes beginning now.
		err = s.store.GroupTx(ctx, func(q *inventory.Queries) error {
			var err error
			sess, err = q.CreateSession(ctx, session, s.cfg.SessionTTL, begun)
			return err
		})
	} else {
		err = s.store.InTx(ctx, func(q *inventory.Queries) error {
			if _, _, err := q.Enroll(ctx, *enroll); err != nil {
				return err
			}
			if _, err := q.AppendEvent(ctx, inventory.Event{
				NodeID: nodeID, Kind: KindEnroll, Service: "attestor", Reason: string(enroll.Source),
				Detail: map[string]any{"ek_sha256": fmt.Sprintf("%x", id.SHA256)},
			}); err != nil {
				return err
			}
			var err error
			sess, err = q.CreateSession(ctx, session, s.cfg.SessionTTL, begun)
			return err
		})
	}
	if errors.Is(err, inventory.ErrConflict) && enroll != nil {
		// Another node holds this EK, or a concurrent first use enrolled a different one.
		return nil, refuse(codes.PermissionDenied, ReasonEKMismatch, err)
	} else if err != nil {
		return nil, refuse(codes.Internal, "internal", err)
	}
	return &attestorv1.BeginAttestationResponse{
		SessionId:  sess.ID,
		Credential: &attestorv1.EncryptedCredential{Credential: cred.Credential, Secret: cred.Secret},
		Nonce:      nonce,
		ExpiresAt:  timestamppb.New(sess.ExpiresAt),
	}, nil
}

// CompleteAttestation takes the session (whatever the outcome: a session is answered once),
// checks the secret and the quotes, and records the attestation.
func (s *Server) CompleteAttestation(ctx context.Context, req *attestorv1.CompleteAttestationRequest) (*attestorv1.CompleteAttestationResponse, error) {
	if r := validateComplete(req); r != nil {
		return nil, s.record(ctx, "", r, map[string]any{"step": "complete"})
	}
	sess, r := s.complete(ctx, req)
	if s.window != nil {
		s.window.Done(req.GetSessionId()) // taken, whatever the outcome
	}
	if r != nil {
		return nil, s.record(ctx, sess.NodeID, r, map[string]any{"step": "complete", "session_id": req.GetSessionId()})
	}
	// The session is already spent; if this insert fails the node begins again.
	var a inventory.Attestation
	err := s.store.GroupTx(ctx, func(q *inventory.Queries) error {
		var err error
		a, err = q.CreateAttestation(ctx, inventory.Attestation{
			SessionID: sess.ID, NodeID: sess.NodeID, EKSHA256: sess.EKSHA256, AKSHA256: sess.AKSHA256,
			WireGuardPublicKey: sess.WireGuardPublicKey,
		}, s.cfg.AttestationTTL, inventory.Event{
			NodeID: sess.NodeID, Kind: KindPassed, Service: "attestor",
			Detail: map[string]any{inventory.AttestationIDKey: "", "session_id": sess.ID},
		})
		return err
	})
	if err != nil {
		s.logger.ErrorContext(ctx, "record attestation", "session", sess.ID, "err", err)
		return nil, statusInternal()
	}
	s.metrics.passed.Inc()
	return &attestorv1.CompleteAttestationResponse{AttestationId: a.ID, ExpiresAt: timestamppb.New(a.ExpiresAt)}, nil
}

func statusInternal() error {
	return refuse(codes.Internal, "internal", nil).status()
}

func validateComplete(req *attestorv1.CompleteAttestationRequest) *refusal {
	if _, err := uuid.Parse(req.GetSessionId()); err != nil {
		return refuse(codes.InvalidArgument, ReasonInvalidRequest, fmt.Errorf("session id: %v", err))
	}
	if n := len(req.GetSecret()); n < 16 || n > 64 {
		return refuse(codes.InvalidArgument, ReasonInvalidRequest, fmt.Errorf("secret of %d bytes", n))
	}
	if n := len(req.GetQuotes()); n == 0 || n > quote.MaxQuotes {
		return refuse(codes.InvalidArgument, ReasonInvalidRequest, fmt.Errorf("%d quotes", n))
	}
	if n := len(req.GetPcrs()); n == 0 || n > quote.MaxPCRs {
		return refuse(codes.InvalidArgument, ReasonInvalidRequest, fmt.Errorf("%d PCR values", n))
	}
	if n := len(req.GetEventLog()); n > quote.MaxEventLogLen {
		return refuse(codes.InvalidArgument, ReasonInvalidRequest, fmt.Errorf("event log of %d bytes", n))
	}
	return nil
}

// complete takes the session — whatever the outcome, a session is answered once — and checks
// the answer. It returns the session (for the event's node id, when known) and a refusal, or no
// refusal when the attestation passed.
func (s *Server) complete(ctx context.Context, req *attestorv1.CompleteAttestationRequest) (inventory.Session, *refusal) {
	var (
		sess inventory.Session
		c    inventory.Completion
	)
	err := s.store.GroupTx(ctx, func(q *inventory.Queries) error {
		var err error
		sess, c, err = q.TakeSessionForCompletion(ctx, req.GetSessionId())
		return err
	})
	switch {
	case errors.Is(err, inventory.ErrNotFound):
		return sess, refuse(codes.FailedPrecondition, ReasonSessionUnknown, err)
	case errors.Is(err, inventory.ErrSessionEnded) && sess.State == inventory.SessionSuperseded:
		return sess, refuse(codes.FailedPrecondition, ReasonSessionReplaced, err)
	case errors.Is(err, inventory.ErrSessionEnded) && sess.State == inventory.SessionExpired:
		return sess, refuse(codes.FailedPrecondition, ReasonSessionExpired, err)
	case errors.Is(err, inventory.ErrSessionEnded):
		return sess, refuse(codes.FailedPrecondition, ReasonSessionReplayed, err)
	case err != nil:
		return sess, refuse(codes.Internal, "internal", err)
	case sess.State == inventory.SessionExpired:
		return sess, refuse(codes.FailedPrecondition, ReasonSessionExpired, fmt.Errorf("session expired at %v", sess.ExpiresAt))
	}
	got := sha256.Sum256(req.GetSecret())
	if subtle.ConstantTimeCompare(got[:], sess.SecretSHA256) != 1 {
		return sess, refuse(codes.PermissionDenied, ReasonSecretMismatch, errors.New("activated secret does not match"))
	}

	if !c.NodeEnabled {
		return sess, refuse(codes.PermissionDenied, ReasonNodeDisabled, errors.New("node was disabled during attestation"))
	}
	policy, r := mergePolicies(c.Policies)
	if r != nil {
		return sess, r
	}
	in := quote.Input{
		AKPublic: sess.AKPublic, Nonce: sess.Nonce, WireGuardKey: sess.WireGuardPublicKey, NodeID: sess.NodeID,
		EventLog: req.GetEventLog(), Policy: policy,
	}
	for _, qt := range req.GetQuotes() {
		in.Quotes = append(in.Quotes, attest.Quote{Quote: qt.GetQuote(), Signature: qt.GetSignature()})
	}
	for _, p := range req.GetPcrs() {
		h, ok := hashes[p.GetHash()]
		if !ok {
			return sess, refuse(codes.InvalidArgument, ReasonQuoteMalformed, fmt.Errorf("PCR bank %v", p.GetHash()))
		}
		in.PCRs = append(in.PCRs, quote.PCR{Index: int(p.GetIndex()), Hash: h, Digest: p.GetDigest()})
	}
	if err := quote.Verify(in); err != nil {
		return sess, quoteRefusal(err)
	}
	return sess, nil
}

// mergePolicies merges the policies of the node's groups: the node must satisfy every one, so
// two groups demanding different values for one PCR refuse every member.
func mergePolicies(policies map[string]inventory.PCRPolicy) (map[int][]byte, *refusal) {
	merged := map[int][]byte{}
	for group, p := range policies {
		for idx, want := range p {
			if prev, ok := merged[idx]; ok && string(prev) != string(want) {
				return nil, refuse(codes.PermissionDenied, ReasonPCRPolicy, fmt.Errorf("groups disagree on PCR %d (%s and another)", idx, group))
			}
			merged[idx] = want
		}
	}
	return merged, nil
}

var hashes = map[attestorv1.HashAlgorithm]crypto.Hash{
	attestorv1.HashAlgorithm_HASH_ALGORITHM_SHA1:   crypto.SHA1,
	attestorv1.HashAlgorithm_HASH_ALGORITHM_SHA256: crypto.SHA256,
	attestorv1.HashAlgorithm_HASH_ALGORITHM_SHA384: crypto.SHA384,
}
