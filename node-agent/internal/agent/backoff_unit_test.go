package agent

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

var errBusy = errors.New("busy")

func always(error) bool { return true }

func TestBackoffDefaults(t *testing.T) {
	t.Parallel()
	b := Backoff{}.withDefaults()
	require.Equal(t, 200*time.Millisecond, b.Initial)
	require.Equal(t, 10*time.Second, b.Max)
	b = Backoff{Initial: time.Millisecond, Max: time.Second}.withDefaults()
	require.Equal(t, Backoff{Initial: time.Millisecond, Max: time.Second}, b, "set values are kept")
}

// TestRetryFullJitter checks the waits between attempts: each at most the current bound,
// which doubles from Initial up to Max, and spread below it (full jitter) rather than equal to it.
func TestRetryFullJitter(t *testing.T) {
	t.Parallel()
	const (
		initial = 40 * time.Millisecond
		maxWait = 80 * time.Millisecond
		waits   = 10
		// slack absorbs scheduling delays on a loaded machine; an uncapped bound would reach
		// 40 ms * 2^9 = 20 s, so the cap still shows.
		slack = 60 * time.Millisecond
	)
	var calls []time.Time
	err := retry(context.Background(), Backoff{Initial: initial, Max: maxWait}, always, func(context.Context) error {
		calls = append(calls, time.Now())
		if len(calls) <= waits {
			return errBusy
		}
		return nil
	})
	require.NoError(t, err)
	require.Len(t, calls, waits+1)

	bound, short := initial, 0
	for i := 1; i < len(calls); i++ {
		gap := calls[i].Sub(calls[i-1])
		require.LessOrEqual(t, gap, bound+slack, "wait %d (bound %s)", i, bound)
		if gap < bound*3/4 {
			short++
		}
		bound = min(2*bound, maxWait)
	}
	// Without jitter every wait would equal its bound; the chance that ten uniform waits all
	// land in the top quarter is 1e-6.
	require.Positive(t, short, "waits are spread below their bound")
}

func TestRetryStopsOnPermanentError(t *testing.T) {
	t.Parallel()
	permanent := status.Error(codes.PermissionDenied, "not enrolled")
	calls := 0
	err := retry(context.Background(), Backoff{Initial: time.Millisecond}, retryableRPC, func(context.Context) error {
		calls++
		if calls == 1 {
			return status.Error(codes.Unavailable, "connecting")
		}
		return permanent
	})
	require.ErrorIs(t, err, permanent)
	require.Equal(t, 2, calls, "retried the unavailable service, not the refusal")
}

func TestRetryReturnsSuccessAfterRetryable(t *testing.T) {
	t.Parallel()
	calls := 0
	err := retry(context.Background(), Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond}, always, func(context.Context) error {
		calls++
		if calls < 4 {
			return errBusy
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 4, calls)
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	// A long bound: only the context can end the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	calls := 0
	start := time.Now()
	err := retry(ctx, Backoff{Initial: time.Hour, Max: time.Hour}, always, func(context.Context) error {
		calls++
		return fmt.Errorf("attempt %d: %w", calls, errBusy)
	})
	require.ErrorIs(t, err, errBusy, "the last error is returned, not just the context's")
	require.Less(t, time.Since(start), 5*time.Second)
	// The first wait is uniform in [0, 1h]: a second attempt within 100 ms is possible but
	// vanishingly rare; it must never loop.
	require.LessOrEqual(t, calls, 2)

	// An ended context still lets the operation report its own error once.
	calls = 0
	err = retry(ctx, Backoff{}, always, func(ctx context.Context) error {
		calls++
		return ctx.Err()
	})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, 1, calls)
}

func TestRetryableCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code             codes.Code
		rpc, attestation bool
	}{
		{codes.Unavailable, true, true},
		{codes.ResourceExhausted, true, true},
		{codes.DeadlineExceeded, true, true},
		{codes.Aborted, true, true},
		{codes.FailedPrecondition, false, true}, // session expired: a new Begin fixes it
		{codes.PermissionDenied, false, false},
		{codes.InvalidArgument, false, false},
		{codes.Unauthenticated, false, false},
		{codes.NotFound, false, false},
		{codes.Internal, true, true}, // a failure inside the service (database failover): within the deadline
		{codes.Unknown, false, false},
	} {
		err := fmt.Errorf("wrapped: %w", status.Error(tc.code, "x"))
		require.Equal(t, tc.rpc, retryableRPC(err), "rpc %s", tc.code)
		require.Equal(t, tc.attestation, retryableAttestation(err), "attestation %s", tc.code)
	}
	require.False(t, retryableRPC(errors.New("not a status")), "an error without a code is an answer (Unknown)")
}

// TestRetryHonoursTheServicesHint: a RetryInfo in the status sets the wait — at least the hint,
// at most a quarter more — whatever the backoff's own bound; a hint is capped.
func TestRetryHonoursTheServicesHint(t *testing.T) {
	t.Parallel()
	busy := func(d time.Duration) error {
		st, err := status.New(codes.ResourceExhausted, "busy").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		require.NoError(t, err)
		return st.Err()
	}
	require.Equal(t, 150*time.Millisecond, retryHint(busy(150*time.Millisecond)))
	require.Equal(t, maxRetryHint, retryHint(busy(time.Hour)), "capped")
	require.Zero(t, retryHint(busy(-time.Second)), "a negative hint is none")
	require.Zero(t, retryHint(status.Error(codes.Unavailable, "down")), "no hint")
	require.Zero(t, retryHint(errBusy), "not a gRPC status")

	const hint = 150 * time.Millisecond
	var calls []time.Time
	err := retry(context.Background(), Backoff{Initial: time.Millisecond, Max: time.Millisecond}, always, func(context.Context) error {
		calls = append(calls, time.Now())
		if len(calls) <= 3 {
			return busy(hint)
		}
		return nil
	})
	require.NoError(t, err)
	for i := 1; i < len(calls); i++ {
		gap := calls[i].Sub(calls[i-1])
		require.GreaterOrEqual(t, gap, hint, "wait %d: no sooner than the hint", i)
		require.LessOrEqual(t, gap, hint+hint/hintJitter+60*time.Millisecond, "wait %d: within the hint's jitter", i)
	}
}
