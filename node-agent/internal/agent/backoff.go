package agent

import (
	"context"
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// Backoff spaces retries: exponential growth with full jitter (a random wait between zero and
// the current bound), so thousands of nodes failing together do not retry together.
type Backoff struct {
	Initial time.Duration // first bound; default 200 ms
	Max     time.Duration // largest bound; default 10 s
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = 200 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 10 * time.Second
	}
	return b
}

// retry calls op until it succeeds, returns a permanent error (retryable says which are not),
// or ctx ends; it returns the last error.
func retry(ctx context.Context, b Backoff, retryable func(error) bool, op func(context.Context) error) error {
	b = b.withDefaults()
	bound := b.Initial
	for {
		err := op(ctx)
		if err == nil || !retryable(err) {
			return err
		}
		wait := time.Duration(rand.Int64N(int64(bound) + 1))
		if hint := retryHint(err); hint > 0 {
			// The service said when: no sooner, and a little later at random so that nodes
			// given the same hint do not come back in step. Only a little: the attestor
			// hands out hints as retry slots, spread at the rate it completes attestations,
			// which a larger jitter would undo.
			wait = hint + time.Duration(rand.Int64N(int64(hint/hintJitter)+1))
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		bound = min(bound*2, b.Max)
	}
}

// hintJitter: a hint is waited out plus up to a hintJitter-th of it.
const hintJitter = 4

// maxRetryHint caps what a service may ask a node to wait, so that a wrong hint cannot stall
// a boot.
const maxRetryHint = 30 * time.Second

// retryHint is the google.rpc.RetryInfo delay in err's gRPC status (an attestor busy with other
// nodes gives one with ResourceExhausted), or zero.
func retryHint(err error) time.Duration {
	st, ok := status.FromError(err)
	if !ok {
		return 0
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.RetryInfo); ok {
			return min(max(info.GetRetryDelay().AsDuration(), 0), maxRetryHint)
		}
	}
	return 0
}
