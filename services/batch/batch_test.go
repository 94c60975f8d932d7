package batch_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/batch"
)

// TestQueueBatchesWhatWaits: the items added while a batch runs go together into the next,
// in order, bounded by Max; every item runs once.
func TestQueueBatchesWhatWaits(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		batches [][]int
		wg      sync.WaitGroup
	)
	first := make(chan struct{})
	unblock := make(chan struct{})
	q := &batch.Queue[int]{Max: 4}
	q.Run = func(b []int) {
		mu.Lock()
		batches = append(batches, append([]int(nil), b...))
		n := len(batches)
		mu.Unlock()
		if n == 1 {
			close(first)
			<-unblock // the others queue behind this batch
		}
		for range b {
			wg.Done()
		}
	}
	wg.Add(10)
	q.Add(0)
	<-first
	for i := 1; i < 10; i++ {
		q.Add(i)
	}
	require.Equal(t, 9, q.Len())
	close(unblock)
	wg.Wait()
	require.Equal(t, [][]int{{0}, {1, 2, 3, 4}, {5, 6, 7, 8}, {9}}, batches)
	require.Zero(t, q.Len())

	// Idle, the next item starts a runner again.
	wg.Add(1)
	q.Add(10)
	wg.Wait()
	require.Equal(t, []int{10}, batches[len(batches)-1])
}
