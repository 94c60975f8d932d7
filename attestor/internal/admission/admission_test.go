package admission_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/attestor/internal/admission"
	"github.com/attestboot/attestboot/services/clock"
)

func newWindow(t *testing.T, limit int) (*admission.Window, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	w, err := admission.New(admission.Config{Limit: limit, TTL: time.Minute, Clock: clk})
	require.NoError(t, err)
	return w, clk
}

func TestWindowAdmitsUpToTheLimit(t *testing.T) {
	t.Parallel()
	w, _ := newWindow(t, 2)
	a, ok := w.Admit()
	require.True(t, ok)
	b, ok := w.Admit()
	require.True(t, ok)
	_, ok = w.Admit()
	require.False(t, ok, "two places, both reserved")

	b.Cancel() // its Begin failed before a session existed
	b.Cancel() // twice is once
	c, ok := w.Admit()
	require.True(t, ok, "a cancelled reservation frees its place")
	a.Keep("s1")
	c.Keep("s2")
	require.Equal(t, 2, w.InFlight())
	_, ok = w.Admit()
	require.False(t, ok, "two sessions in flight")

	w.Done("other-replicas-session")
	require.Equal(t, 2, w.InFlight(), "a session it does not count changes nothing")
	w.Done("s1")
	require.Equal(t, 1, w.InFlight())
	_, ok = w.Admit()
	require.True(t, ok, "a completed session frees its place")
	require.Equal(t, time.Second, w.RetryAfter())
}

func TestWindowForgetsSessionsNeverCompleted(t *testing.T) {
	t.Parallel()
	w, clk := newWindow(t, 3)
	for i := range 3 {
		tk, ok := w.Admit()
		require.True(t, ok)
		tk.Keep(fmt.Sprintf("s%d", i))
		clk.Advance(10 * time.Second)
	}
	_, ok := w.Admit()
	require.False(t, ok)
	clk.Advance(31 * time.Second) // s0 began 61 s ago: its session has expired
	require.Equal(t, 2, w.InFlight())
	tk, ok := w.Admit()
	require.True(t, ok)
	tk.Cancel()
	clk.Advance(time.Hour)
	require.Zero(t, w.InFlight(), "every session expired")
}

// TestWindowUnderContention: many goroutines admitting, keeping and completing never let more
// than the limit in at once, and leave the window empty.
func TestWindowUnderContention(t *testing.T) {
	t.Parallel()
	const limit = 8
	w, _ := newWindow(t, limit)
	var (
		mu       sync.Mutex
		in, peak int
		wg       sync.WaitGroup
	)
	for g := range 32 {
		wg.Go(func() {
			for i := range 200 {
				tk, ok := w.Admit()
				if !ok {
					continue
				}
				mu.Lock()
				in++
				peak = max(peak, in)
				mu.Unlock()
				id := fmt.Sprintf("%d-%d", g, i)
				tk.Keep(id)
				mu.Lock()
				in--
				mu.Unlock()
				w.Done(id)
			}
		})
	}
	wg.Wait()
	require.LessOrEqual(t, peak, limit)
	require.Zero(t, w.InFlight())
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []admission.Config{{Limit: 0, TTL: time.Minute}, {Limit: 1}, {Limit: 1, TTL: time.Minute, RetryAfter: -1}} {
		_, err := admission.New(cfg)
		require.Error(t, err, "%+v", cfg)
	}
}
