package storm

import (
	"context"
	"log/slog"
	"sync"
)

// sim.Run gives no hook at the start and the end of the storm itself (between them come the
// TPMs' start and the enrollment before, and stopping hundreds of swtpm processes after), but
// it logs a message at each point; the measurement's readings must be taken exactly there, or
// the enrollment's transactions and CPU would count as the storm's. These are the messages
// (internal/sim/sim.go). A marker that never fires fails the measurement rather than
// measuring the wrong interval.
const (
	markerEnrolled   = "nodes enrolled" // the last message before the storm, with enrollment
	markerTPMRunning = "TPMs running"   // the last one without
	markerStormDone  = "boot storm done"
)

// marker is a slog.Handler that passes records on to the next handler and calls the function
// registered for a record's message once, synchronously: the logging call, and so the
// simulation, waits until it returns.
type marker struct {
	next  slog.Handler
	hooks map[string]*hook
}

type hook struct {
	once sync.Once
	fire func()
}

// newMarker wraps next; fire maps messages to the function to run when one is logged.
func newMarker(next slog.Handler, fire map[string]func()) *marker {
	m := &marker{next: next, hooks: map[string]*hook{}}
	for msg, f := range fire {
		m.hooks[msg] = &hook{fire: f}
	}
	return m
}

// Enabled lets Info records through whatever the next handler's level, so that the marker sees
// its messages even when the progress log is quiet.
func (m *marker) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || m.next.Enabled(ctx, l)
}

func (m *marker) Handle(ctx context.Context, r slog.Record) error {
	if h := m.hooks[r.Message]; h != nil {
		h.once.Do(h.fire)
	}
	if !m.next.Enabled(ctx, r.Level) {
		return nil
	}
	return m.next.Handle(ctx, r)
}

func (m *marker) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &marker{next: m.next.WithAttrs(attrs), hooks: m.hooks}
}

func (m *marker) WithGroup(name string) slog.Handler {
	return &marker{next: m.next.WithGroup(name), hooks: m.hooks}
}
