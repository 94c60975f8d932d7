// Package admission bounds the attestations one attestor has in flight: sessions begun and not
// yet completed. Under a boot storm, a node turned away at BeginAttestation costs a few
// microseconds and retries after the hint it is given, jittered; a node admitted beyond what
// the machine can finish costs its share of every phase after it and makes all the others
// slower, until sessions expire and the work is lost. Admission control keeps the work in
// flight to what completes.
package admission

import (
	"errors"
	"sync"
	"time"

	"github.com/attestboot/attestboot/services/clock"
)

// Config of a Window.
type Config struct {
	// Limit is how many sessions may be in flight at once (begun, not completed).
	Limit int
	// TTL is how long a session counts when it is never completed: the attestor's session TTL.
	TTL time.Duration
	// RetryAfter is the hint given to a node turned away; the node adds jitter. Default 1 s.
	RetryAfter time.Duration
	// Clock; default the system clock.
	Clock clock.Clock
}

// Window counts the sessions in flight. It is safe for concurrent use.
type Window struct {
	cfg Config

	mu       sync.Mutex
	reserved int                  // admitted, session not yet created
	pending  map[string]time.Time // session id → when it stops counting
	order    []entry              // pending in creation order, for expiry
}

type entry struct {
	id    string
	until time.Time
}

// New returns an empty window.
func New(cfg Config) (*Window, error) {
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System()
	}
	switch {
	case cfg.Limit < 1:
		return nil, errors.New("admission: the limit must allow at least one session")
	case cfg.TTL <= 0 || cfg.RetryAfter < 0:
		return nil, errors.New("admission: TTL must be positive and RetryAfter not negative")
	}
	return &Window{cfg: cfg, pending: map[string]time.Time{}}, nil
}

// Ticket is an admitted BeginAttestation: Keep it with the session's id once the session
// exists, or Cancel it if none was created. Exactly one of the two must be called.
type Ticket struct {
	w    *Window
	done bool
}

// Admit takes a place for a new session, or reports false when the window is full.
func (w *Window) Admit() (*Ticket, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expire()
	if w.reserved+len(w.pending) >= w.cfg.Limit {
		return nil, false
	}
	w.reserved++
	return &Ticket{w: w}, true
}

// Keep turns the place into the session id's, counted until Done or the TTL.
func (t *Ticket) Keep(id string) {
	w := t.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if t.done {
		return
	}
	t.done = true
	w.reserved--
	until := w.cfg.Clock.Now().Add(w.cfg.TTL)
	w.pending[id] = until
	w.order = append(w.order, entry{id: id, until: until})
}

// Cancel gives the place back.
func (t *Ticket) Cancel() {
	w := t.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if !t.done {
		t.done = true
		w.reserved--
	}
}

// Done frees the place of a session that was completed (whatever the outcome). A session this
// window does not count — begun by another replica — is ignored.
func (w *Window) Done(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.pending, id)
}

// InFlight is how many places are taken.
func (w *Window) InFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expire()
	return w.reserved + len(w.pending)
}

// RetryAfter is the hint for a node turned away.
func (w *Window) RetryAfter() time.Duration { return w.cfg.RetryAfter }

// expire drops sessions past their TTL; w.mu is held. order is in creation order, so the
// expired ones are at its front (completed ones are skipped there when their turn comes).
func (w *Window) expire() {
	now := w.cfg.Clock.Now()
	i := 0
	for ; i < len(w.order) && !w.order[i].until.After(now); i++ {
		if until, ok := w.pending[w.order[i].id]; ok && until.Equal(w.order[i].until) {
			delete(w.pending, w.order[i].id)
		}
	}
	w.order = w.order[i:]
	// Completed sessions leave entries behind until they expire; compact when they dominate.
	if len(w.order) > 64 && len(w.order) > 4*len(w.pending) {
		kept := w.order[:0]
		for _, e := range w.order {
			if _, ok := w.pending[e.id]; ok {
				kept = append(kept, e)
			}
		}
		w.order = kept
	}
}
