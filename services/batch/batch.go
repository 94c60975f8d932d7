// Package batch runs work that many goroutines hand in at once in batches: the items queued
// while a batch runs make up the next one. It serves group commit (inventory.Store.GroupTx) and
// the gateway's device changes, where one call for many items costs about what a call for one
// does. The goroutine that runs batches exists only while there is work, so a Queue needs no
// Close.
package batch

import "sync"

// Queue hands the items added to it to run, in the order they were added, in batches of at
// most Max (0: no bound), one batch at a time. The zero value is not usable: set Run.
type Queue[T any] struct {
	// Run handles one batch. Items report their own outcome (a channel in each item, say):
	// Add does not wait.
	Run func(batch []T)
	// Max bounds a batch; 0 takes everything queued.
	Max int

	mu      sync.Mutex
	items   []T
	running bool
}

// Add queues item; a goroutine runs it with the others queued meanwhile.
func (q *Queue[T]) Add(item T) {
	q.mu.Lock()
	q.items = append(q.items, item)
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		go q.drain()
	}
}

// Len is how many items wait for a batch (not counting the one running).
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// drain runs batches until the queue is empty.
func (q *Queue[T]) drain() {
	for {
		q.mu.Lock()
		n := len(q.items)
		if q.Max > 0 {
			n = min(n, q.Max)
		}
		if n == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		batch := q.items[:n:n]
		q.items = q.items[n:]
		q.mu.Unlock()
		q.Run(batch)
	}
}
