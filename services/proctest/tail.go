package proctest

import (
	"bytes"
	"sync"
)

// Tail keeps the last bytes written to it — a child process's output, for error messages —
// and is safe for concurrent use.
type Tail struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

// NewTail returns a Tail that keeps at most max bytes.
func NewTail(max int) *Tail { return &Tail{max: max} }

func (b *Tail) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.max; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

// String is what was kept, without surrounding white space.
func (b *Tail) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(bytes.TrimSpace(b.buf.Bytes()))
}
