// Package admission bounds the attestations one attestor has in flight: sessions begun and not
// yet completed. Under a boot storm, a node turned away at BeginAttestation costs a few
// microseconds and retries after the hint it is given, jittered; a node admitted beyond what
// the machine can finish costs its share of every phase after it and makes all the others
// slower, until sessions expire and the work is lost. Admission control keeps the work in
// flight to what completes.
//
// The hints are retry slots: the window estimates how many sessions it completes per second
// (sessions in flight over their mean time in flight, Little's law, or the completions of the
// last rateSpan or so if that is more) and gives the nodes it turns away times to come back
// spaced at twice that rate, one after the other, up to MaxRetryAfter ahead. So ten thousand
// nodes turned away together come back as a stream the attestor can take, instead of all
// every second (each return is a refused call and an event in the inventory's log: at 10,000
// nodes with a fixed one-second hint that was 22 refusals per node).
package admission

import (
	"errors"
	"math"
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
	// RetryAfter is the shortest hint given to a node turned away, and the hint while no
	// completion has been measured yet; the node adds jitter. Default 1 s.
	RetryAfter time.Duration
	// MaxRetryAfter is the longest hint (retry slots are handed out this far ahead at most).
	// Default 30 s (what the node agent accepts), or RetryAfter if longer.
	MaxRetryAfter time.Duration
	// MaxDownstream, when positive, shrinks the window as the downstream count (SetDownstream)
	// grows: the whole Limit up to half of MaxDownstream, then linearly down to Limit/16 at
	// MaxDownstream and beyond. The attestor counts open tunnels there: boots past
	// attestation, not yet finished, which a storm piles up faster than the later phases can
	// serve when nothing holds attestation back (two replicas, each admitting a full window
	// on one machine, collapsed a 10,000-node storm).
	MaxDownstream int
	// Clock; default the system clock.
	Clock clock.Clock
}

// Window counts the sessions in flight. It is safe for concurrent use.
type Window struct {
	cfg Config

	mu         sync.Mutex
	reserved   int                  // admitted, session not yet created
	pending    map[string]time.Time // session id → when it stops counting
	order      []entry              // pending in creation order, for expiry
	downstream int                  // the last SetDownstream
	latency    time.Duration        // mean time in flight of completed sessions (moving average)
	lastDone   time.Time            // when a counted session last completed
	rate       float64              // completions per second, averaged over about rateSpan, at lastDone
	nextSlot   time.Time            // the next free retry slot
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
	if cfg.MaxRetryAfter == 0 {
		cfg.MaxRetryAfter = max(30*time.Second, cfg.RetryAfter)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System()
	}
	switch {
	case cfg.Limit < 1:
		return nil, errors.New("admission: the limit must allow at least one session")
	case cfg.TTL <= 0 || cfg.RetryAfter < 0:
		return nil, errors.New("admission: TTL must be positive and RetryAfter not negative")
	case cfg.MaxRetryAfter < cfg.RetryAfter:
		return nil, errors.New("admission: MaxRetryAfter is shorter than RetryAfter")
	case cfg.MaxDownstream < 0:
		return nil, errors.New("admission: negative MaxDownstream")
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
	if w.reserved+len(w.pending) >= w.limit() {
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
	if until, ok := w.pending[id]; ok {
		delete(w.pending, id)
		now := w.cfg.Clock.Now()
		took := max(now.Sub(until.Add(-w.cfg.TTL)), time.Millisecond)
		if w.latency == 0 {
			w.latency = took
		} else {
			w.latency += (took - w.latency) / latencyWeight
		}
		w.rate = w.rateAt(now) + 1/rateSpan.Seconds()
		w.lastDone = now
	}
}

// SetDownstream records the downstream count that MaxDownstream bounds.
func (w *Window) SetDownstream(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.downstream = n
}

// Limit is how many places the window has now (see Config.MaxDownstream).
func (w *Window) Limit() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.limit()
}

// limit is Limit; w.mu is held.
func (w *Window) limit() int {
	half := w.cfg.MaxDownstream / 2
	if w.cfg.MaxDownstream <= 0 || w.downstream <= half {
		return w.cfg.Limit
	}
	floor := max(1, w.cfg.Limit/16)
	over := min(w.downstream, w.cfg.MaxDownstream) - half
	return max(floor, w.cfg.Limit-(w.cfg.Limit-floor)*over/(w.cfg.MaxDownstream-half))
}

// InFlight is how many places are taken.
func (w *Window) InFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expire()
	return w.reserved + len(w.pending)
}

// latencyWeight: each completion moves the mean time in flight by 1/latencyWeight of its
// difference from it.
const latencyWeight = 16

// idleAfter: when no session has completed for this long, the completion rate is unknown.
const idleAfter = 10 * time.Second

// rateSpan is the time constant of the averaged completion rate. Little's law on the window
// says what it completes now; when the window has shrunk (MaxDownstream) that is far below what
// it completes once the later phases drain, a few seconds later, and the nodes turned away
// meanwhile were given slots as sparse as the shrunk window: the storm went in waves (10,000
// nodes: 300 to 1,650 boots per 10 s, with the open tunnels swinging 200 to 1,400). Spacing
// the slots by the rate of the last tens of seconds keeps the nodes coming at what the
// pipeline as a whole has been finishing.
const rateSpan = 20 * time.Second

// rateAt is the averaged completion rate decayed to now; w.mu is held.
func (w *Window) rateAt(now time.Time) float64 {
	return w.rate * math.Exp(-now.Sub(w.lastDone).Seconds()/rateSpan.Seconds())
}

// RetryAfter hands a node turned away its retry slot: how long it should wait. Each call takes
// a slot, so call it once per node turned away. The slots follow each other at twice the
// estimated completion rate (half of the nodes coming back find a place, the rest take new
// slots: enough to keep the window full when the rate is underestimated, few enough to spare
// most refusals), starting no sooner than RetryAfter. Beyond MaxRetryAfter no slot is taken:
// those nodes are told MaxRetryAfter and will take one when they come back. While the rate is
// unknown (before the first completion, or after idleAfter without one) every node is told
// RetryAfter.
//
// The rate is the places taken over the mean time a session spends in flight (Little's law),
// not a count of recent completions: at the start of a storm completions lag behind what the
// window will sustain, and a count would spread the first nodes turned away too thin.
func (w *Window) RetryAfter() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.cfg.Clock.Now()
	w.expire()
	inFlight := w.reserved + len(w.pending)
	if w.latency == 0 || now.Sub(w.lastDone) > idleAfter || inFlight == 0 {
		return w.cfg.RetryAfter
	}
	rate := max(float64(inFlight)/w.latency.Seconds(), w.rateAt(now))
	slot := now.Add(w.cfg.RetryAfter)
	if w.nextSlot.After(slot) {
		slot = w.nextSlot
	}
	wait := slot.Sub(now)
	if wait > w.cfg.MaxRetryAfter {
		return w.cfg.MaxRetryAfter
	}
	w.nextSlot = slot.Add(time.Duration(float64(time.Second) / (2 * rate)))
	return wait
}

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
