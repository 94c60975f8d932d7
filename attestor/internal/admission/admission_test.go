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
	for _, cfg := range []admission.Config{
		{Limit: 0, TTL: time.Minute}, {Limit: 1}, {Limit: 1, TTL: time.Minute, RetryAfter: -1},
		{Limit: 1, TTL: time.Minute, RetryAfter: 2 * time.Second, MaxRetryAfter: time.Second},
	} {
		_, err := admission.New(cfg)
		require.Error(t, err, "%+v", cfg)
	}
}

// cycle runs a full window of sessions that each take took, then fills the window again.
func cycle(t *testing.T, w *admission.Window, clk *clock.Fake, limit int, took time.Duration) {
	t.Helper()
	fill := func() []string {
		var ids []string
		for i := range limit {
			tk, ok := w.Admit()
			require.True(t, ok)
			id := fmt.Sprintf("c%d-%d", clk.Now().UnixNano(), i)
			tk.Keep(id)
			ids = append(ids, id)
		}
		_, ok := w.Admit()
		require.False(t, ok, "full")
		return ids
	}
	ids := fill()
	clk.Advance(took)
	for _, id := range ids {
		w.Done(id)
	}
	fill()
}

// TestRetrySlotsFollowTheCompletionRate: nodes turned away are given times to come back one
// after the other at twice the rate sessions complete (places over time in flight), from
// RetryAfter up to MaxRetryAfter; past that horizon they are all told MaxRetryAfter and no
// slot is used up.
func TestRetrySlotsFollowTheCompletionRate(t *testing.T) {
	t.Parallel()
	w, clk := newWindow(t, 4)
	for range 3 {
		require.Equal(t, time.Second, w.RetryAfter(), "nothing completed yet: the base hint")
	}
	w.Done("never-begun-here")
	require.Equal(t, time.Second, w.RetryAfter(), "another replica's completion is not measured")

	cycle(t, w, clk, 4, 400*time.Millisecond) // 4 places, 400 ms each: 10 per second
	const spacing = time.Second / 20          // 1 / (2 × 10 per second)

	var hints []time.Duration
	for {
		h := w.RetryAfter()
		hints = append(hints, h)
		if h == 30*time.Second {
			break
		}
		require.Less(t, len(hints), 10_000, "the slots never reached the horizon")
	}
	require.Equal(t, time.Second, hints[0], "the first slot is RetryAfter away")
	for i := 1; i < len(hints)-1; i++ {
		require.InDelta(t, float64(spacing), float64(hints[i]-hints[i-1]), float64(spacing)/10, "slot %d", i)
	}
	// (30 s - 1 s) / 50 ms slots fit before the horizon.
	require.InDelta(t, 29*time.Second/spacing, len(hints)-1, 5)
	for range 100 {
		require.Equal(t, 30*time.Second, w.RetryAfter(), "beyond the horizon: the longest hint, no slot taken")
	}
	clk.Advance(5 * time.Second)
	require.InDelta(t, float64(25*time.Second), float64(w.RetryAfter()), float64(100*time.Millisecond), "25 s of slots remain ahead")

	// Nothing completes for a while: back to the base hint.
	clk.Advance(time.Minute)
	require.Equal(t, time.Second, w.RetryAfter())
	cycle(t, w, clk, 4, 200*time.Millisecond) // 20 per second now
	require.Equal(t, time.Second, w.RetryAfter(), "slots start again from RetryAfter")
	gap := w.RetryAfter() - time.Second
	require.Less(t, gap, spacing, "the mean time in flight moves towards the faster sessions")
	require.Greater(t, gap, time.Second/40, "a moving average: not all the way at once")
}

// TestRetrySlotsKeepTheRateWhileTheWindowIsShrunk: when the later phases fill and the window
// shrinks to a place, the slots keep the spacing of what the window has been completing over
// the last tens of seconds, not of the one place (Little's law alone: 2.5 per second), so
// that nodes are there when the window opens again.
func TestRetrySlotsKeepTheRateWhileTheWindowIsShrunk(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	w, err := admission.New(admission.Config{Limit: 16, TTL: time.Minute, MaxDownstream: 32, Clock: clk})
	require.NoError(t, err)
	// A minute of 16 sessions every 400 ms: 40 completions per second.
	for c := range 150 {
		var ids []string
		for i := range 16 {
			tk, ok := w.Admit()
			require.True(t, ok)
			ids = append(ids, fmt.Sprintf("s%d-%d", c, i))
			tk.Keep(ids[i])
		}
		clk.Advance(400 * time.Millisecond)
		for _, id := range ids {
			w.Done(id)
		}
	}
	w.SetDownstream(32)
	require.Equal(t, 1, w.Limit(), "the later phases are full: one place")
	tk, ok := w.Admit()
	require.True(t, ok)
	tk.Keep("last")
	_, ok = w.Admit()
	require.False(t, ok)
	first, second := w.RetryAfter(), w.RetryAfter()
	// 1 / (2 × 40 per second) = 12.5 ms; the average has reached 95 % of the rate in a minute.
	require.InDelta(t, float64(time.Second/80), float64(second-first), float64(time.Second/400))

	clk.Advance(20 * time.Second)
	w.Done("last")
	tk, ok = w.Admit()
	require.True(t, ok)
	tk.Keep("after")
	first, second = w.RetryAfter(), w.RetryAfter()
	require.Greater(t, second-first, time.Second/40, "20 s later the average has decayed to about a third")
}

// TestWindowShrinksWithDownstream: with MaxDownstream, the window keeps its whole limit up to
// half of it, then shrinks linearly to a sixteenth at MaxDownstream and stays there beyond.
func TestWindowShrinksWithDownstream(t *testing.T) {
	t.Parallel()
	w, err := admission.New(admission.Config{Limit: 256, TTL: time.Minute, MaxDownstream: 1000})
	require.NoError(t, err)
	for _, tc := range []struct{ downstream, limit int }{
		{0, 256}, {500, 256}, {750, 136}, {1000, 16}, {5000, 16},
	} {
		w.SetDownstream(tc.downstream)
		require.Equal(t, tc.limit, w.Limit(), "downstream %d", tc.downstream)
	}
	w.SetDownstream(1000)
	for i := range 16 {
		tk, ok := w.Admit()
		require.True(t, ok, "place %d of 16", i)
		tk.Keep(fmt.Sprintf("s%d", i))
	}
	_, ok := w.Admit()
	require.False(t, ok, "the shrunk window is full")
	w.SetDownstream(0)
	_, ok = w.Admit()
	require.True(t, ok, "drained downstream: the whole window again")

	unbounded, err := admission.New(admission.Config{Limit: 256, TTL: time.Minute})
	require.NoError(t, err)
	unbounded.SetDownstream(1 << 20)
	require.Equal(t, 256, unbounded.Limit(), "without MaxDownstream the count is ignored")
	_, err = admission.New(admission.Config{Limit: 1, TTL: time.Minute, MaxDownstream: -1})
	require.Error(t, err)
}
