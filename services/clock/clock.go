// Package clock is the time source the services take as a dependency, so that expiry (sessions,
// attestations, tunnels) can be tested by moving a fake clock instead of sleeping.
package clock

import (
	"sync"
	"time"
)

// Clock tells the current time. Real reads the system clock; Fake is set by tests.
type Clock interface {
	Now() time.Time
}

// Real is the system clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// System returns the system clock.
func System() Clock { return Real{} }

// Fake is a clock that moves only when told to. It is safe for concurrent use.
type Fake struct {
	mu  sync.Mutex
	now time.Time
}

var _ Clock = (*Fake)(nil)

// NewFake returns a fake clock showing t0.
func NewFake(t0 time.Time) *Fake { return &Fake{now: t0} }

// Now returns the time the clock was last set to.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Set makes the clock show t.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
}

// Advance moves the clock by d (which may be negative) and returns the new time.
func (f *Fake) Advance(d time.Duration) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	return f.now
}
