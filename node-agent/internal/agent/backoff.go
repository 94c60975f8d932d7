package agent

import (
	"context"
	"math/rand/v2"
	"time"
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
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		bound = min(bound*2, b.Max)
	}
}
