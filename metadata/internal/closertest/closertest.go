// Package closertest is a hand-written fake of the datasource's tunnel closer, recording the
// tunnels it was asked to close.
package closertest

import (
	"context"
	"sync"
)

// Call is one CloseTunnel call.
type Call struct {
	TunnelID, Reason string
}

// Fake records calls and returns Err.
type Fake struct {
	mu    sync.Mutex
	calls []Call
	// Err is returned by every call.
	Err error
	// Called receives every call, if set (buffered by the test).
	Called chan Call
}

// CloseTunnel records the call.
func (f *Fake) CloseTunnel(_ context.Context, tunnelID, reason string) error {
	f.mu.Lock()
	f.calls = append(f.calls, Call{tunnelID, reason})
	ch, err := f.Called, f.Err
	f.mu.Unlock()
	if ch != nil {
		ch <- Call{tunnelID, reason}
	}
	return err
}

// Calls returns the calls so far.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}
