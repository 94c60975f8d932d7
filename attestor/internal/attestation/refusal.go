package attestation

import (
	"context"
	"errors"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/attestboot/attestboot/attestor/internal/akparams"
	"github.com/attestboot/attestboot/attestor/internal/ekpolicy"
	"github.com/attestboot/attestboot/attestor/internal/quote"
	"github.com/attestboot/attestboot/services/inventory"
)

// Event kinds this package records.
const (
	KindBegun   = "attestation.begun"
	KindPassed  = "attestation.passed"
	KindRefused = "attestation.refused"
	KindEnroll  = "enrollment.created"
)

// Reasons of refusals, as recorded in the event log.
const (
	ReasonInvalidRequest   = "invalid_request"
	ReasonNodeUnknown      = "node_unknown"
	ReasonNodeDisabled     = "node_disabled"
	ReasonNotEnrolled      = "not_enrolled"
	ReasonEKMismatch       = "ek_mismatch"
	ReasonEKMalformed      = "ek_malformed"
	ReasonEKCertUntrusted  = "ek_cert_untrusted"
	ReasonEKCertMismatch   = "ek_cert_key_mismatch"
	ReasonAKUnfit          = "ak_unfit"
	ReasonRateLimitedNode  = "rate_limited_node"
	ReasonRateLimitedEK    = "rate_limited_ek"
	ReasonSessionUnknown   = "session_unknown"
	ReasonSessionReplayed  = "session_replayed"
	ReasonSessionReplaced  = "session_superseded"
	ReasonSessionExpired   = "session_expired"
	ReasonSecretMismatch   = "secret_mismatch"
	ReasonQuoteSignature   = "quote_invalid"
	ReasonQuoteBinding     = "quote_binding_mismatch"
	ReasonQuoteMalformed   = "quote_malformed"
	ReasonPCRPolicy        = "pcr_policy_violation"
	ReasonEventLogMismatch = "event_log_mismatch"
	ReasonOverloaded       = "overloaded"
)

// refusal is a decision to refuse: the code the caller sees, the reason the event log keeps,
// and the error with the details for the service log.
type refusal struct {
	code   codes.Code
	reason string
	err    error
	retry  time.Duration // a RetryInfo hint for the caller, when set
}

func refuse(code codes.Code, reason string, err error) *refusal {
	return &refusal{code: code, reason: reason, err: err}
}

// retryAfter adds a hint: retry no sooner than d (google.rpc.RetryInfo in the status).
func (r *refusal) retryAfter(d time.Duration) *refusal {
	r.retry = d
	return r
}

// The caller sees only the code and one of these; the reason is for operators.
var publicMessages = map[codes.Code]string{
	codes.InvalidArgument:    "invalid attestation request",
	codes.PermissionDenied:   "attestation refused",
	codes.FailedPrecondition: "attestation session is not usable; begin again",
	codes.ResourceExhausted:  "too many attestation attempts, or the attestor is busy; retry later",
}

func (r *refusal) status() error {
	msg, ok := publicMessages[r.code]
	if !ok {
		msg = "attestation failed"
	}
	st := status.New(r.code, msg)
	if r.retry > 0 {
		if with, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(r.retry)}); err == nil {
			st = with
		}
	}
	return st.Err()
}

// ekRefusal classifies an ekpolicy error.
func ekRefusal(err error) *refusal {
	switch {
	case errors.Is(err, ekpolicy.ErrMalformed):
		return refuse(codes.InvalidArgument, ReasonEKMalformed, err)
	case errors.Is(err, ekpolicy.ErrCertKeyMismatch):
		return refuse(codes.PermissionDenied, ReasonEKCertMismatch, err)
	case errors.Is(err, ekpolicy.ErrCertUntrusted):
		return refuse(codes.PermissionDenied, ReasonEKCertUntrusted, err)
	case errors.Is(err, ekpolicy.ErrNotEnrolled):
		return refuse(codes.PermissionDenied, ReasonNotEnrolled, err)
	case errors.Is(err, ekpolicy.ErrEKMismatch):
		return refuse(codes.PermissionDenied, ReasonEKMismatch, err)
	}
	return refuse(codes.Internal, "internal", err)
}

func akRefusal(err error) *refusal {
	if errors.Is(err, akparams.ErrUnfit) {
		return refuse(codes.PermissionDenied, ReasonAKUnfit, err)
	}
	return refuse(codes.Internal, "internal", err)
}

func quoteRefusal(err error) *refusal {
	switch {
	case errors.Is(err, quote.ErrBinding):
		return refuse(codes.PermissionDenied, ReasonQuoteBinding, err)
	case errors.Is(err, quote.ErrSignature):
		return refuse(codes.PermissionDenied, ReasonQuoteSignature, err)
	case errors.Is(err, quote.ErrPCRPolicy):
		return refuse(codes.PermissionDenied, ReasonPCRPolicy, err)
	case errors.Is(err, quote.ErrEventLog):
		return refuse(codes.PermissionDenied, ReasonEventLogMismatch, err)
	case errors.Is(err, quote.ErrMalformed), errors.Is(err, quote.ErrUnsupported):
		return refuse(codes.InvalidArgument, ReasonQuoteMalformed, err)
	}
	return refuse(codes.Internal, "internal", err)
}

// record writes the refusal's event (in a commit shared with other callers: a flood of bad
// requests costs no commit each), logs it, and returns the status for the caller.
func (s *Server) record(ctx context.Context, nodeID string, r *refusal, detail map[string]any) error {
	if r.code == codes.Internal {
		s.logger.ErrorContext(ctx, "attestation failed", "node", nodeID, "err", r.err)
		return status.Error(codes.Internal, "internal error")
	}
	s.logger.InfoContext(ctx, "attestation refused", "node", nodeID, "reason", r.reason, "code", r.code, "err", r.err)
	if detail == nil {
		detail = map[string]any{}
	}
	detail["code"] = r.code.String()
	if err := s.store.AppendEventGrouped(ctx, inventory.Event{
		NodeID: eventNodeID(nodeID), Kind: KindRefused, Service: "attestor", Reason: r.reason, Detail: detail,
	}); err != nil {
		s.logger.ErrorContext(ctx, "record refusal", "node", nodeID, "reason", r.reason, "err", err)
		return status.Error(codes.Internal, "internal error")
	}
	s.metrics.refusals.WithLabelValues(r.reason).Inc()
	return r.status()
}

// eventNodeID keeps whatever a caller claimed as node id, bounded so an attacker cannot bloat the
// event log; it is data, never identity.
func eventNodeID(id string) string {
	const max = 128
	if len(id) > max {
		return id[:max]
	}
	return id
}
