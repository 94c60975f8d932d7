package clock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/clock"
)

func TestRealFollowsSystemTime(t *testing.T) {
	t.Parallel()
	before := time.Now()
	got := clock.System().Now()
	require.False(t, got.Before(before), "real clock %v is behind time.Now() %v", got, before)
	require.WithinDuration(t, time.Now(), got, time.Second)
}

func TestFakeMovesOnlyWhenTold(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	f := clock.NewFake(t0)
	require.True(t, f.Now().Equal(t0))
	require.True(t, f.Now().Equal(t0), "reading must not move the clock")

	require.True(t, f.Advance(90*time.Second).Equal(t0.Add(90*time.Second)))
	require.True(t, f.Now().Equal(t0.Add(90*time.Second)))

	t1 := t0.Add(-time.Hour)
	f.Set(t1)
	require.True(t, f.Now().Equal(t1), "Set may move the clock backwards")
}

func TestFakeConcurrentAdvance(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(0, 0)
	f := clock.NewFake(t0)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			f.Advance(time.Second)
			_ = f.Now()
		})
	}
	wg.Wait()
	require.True(t, f.Now().Equal(t0.Add(50*time.Second)), "no advance may be lost: got %v", f.Now())
}
