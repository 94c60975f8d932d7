package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Channels the schema's triggers notify on. Every transaction that notifies wakes every
// listening session of the database, whatever channel it listens on, so the triggers notify
// only changes some listener acts on (migrations/0008).
const (
	// ChannelTunnels carries the name of a gateway whose tunnels changed in a way its
	// reconcilers act on: opened, closed, expired, deleted, or keys, addresses or expiry changed.
	ChannelTunnels = "attestboot_tunnels"
	// ChannelNodeDocs says that something node documents are made of changed (node facts,
	// groups, memberships, cloud-init data, secrets); its payload is empty.
	ChannelNodeDocs = "attestboot_node_docs"
)

// Notify sends payload on channel. Inside InTx it is delivered only if, and when, the
// transaction commits. Notifications only wake other services up early: they may be lost
// (a listener reconnecting), so nothing may depend on them for correctness.
func (q *Queries) Notify(ctx context.Context, channel, payload string) error {
	if _, err := q.db.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
		return dbError(fmt.Sprintf("notify %q", channel), err)
	}
	return nil
}

// Notification is one message received by a Listener.
type Notification struct {
	Channel string
	Payload string
	// Reset is set on a notification the Listener itself makes, once per channel, each time it
	// has (re)started listening. Anything sent while it was not listening is lost, so the
	// receiver should reconcile fully rather than rely on payloads. Payload is empty.
	Reset bool
}

// ListenerConfig configures a Listener.
type ListenerConfig struct {
	// Channels to LISTEN on; at least one.
	Channels []string
	// Logger receives connection failures. Default: slog.Default().
	Logger *slog.Logger
	// Buffer is the capacity of the notification channel. Default 64. When it is full the
	// listener waits for the receiver (Postgres queues the notifications meanwhile).
	Buffer int
	// ReconnectMin and ReconnectMax bound the exponential delay between reconnection attempts.
	// Defaults 100 ms and 10 s.
	ReconnectMin, ReconnectMax time.Duration
	// PingInterval is how long the listener waits for a notification before checking that the
	// connection is still alive, so a silently dropped TCP connection is noticed. Default 30 s.
	PingInterval time.Duration
}

func (c *ListenerConfig) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Buffer == 0 {
		c.Buffer = 64
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = 100 * time.Millisecond
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = 10 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = 30 * time.Second
	}
}

func (c *ListenerConfig) validate() error {
	if len(c.Channels) == 0 {
		return errors.New("listener: no channels")
	}
	for _, ch := range c.Channels {
		// Postgres truncates identifiers to 63 bytes: a longer name would listen elsewhere.
		if ch == "" || len(ch) > 63 {
			return fmt.Errorf("listener: channel name %q must be 1-63 bytes", ch)
		}
	}
	switch {
	case c.Buffer < 0:
		return errors.New("listener: negative buffer")
	case c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin:
		return errors.New("listener: need 0 < ReconnectMin <= ReconnectMax")
	case c.PingInterval <= 0:
		return errors.New("listener: PingInterval must be positive")
	}
	return nil
}

// Listener holds one dedicated connection (outside the pool, which would otherwise hand it to
// queries) that LISTENs on the configured channels, and delivers what arrives on a Go channel.
// It reconnects with backoff when the connection fails.
type Listener struct {
	pool    *pgxpool.Pool
	cfg     ListenerConfig
	c       chan Notification
	running atomic.Bool
	// state is 2 × the number of sessions that got as far as listening, plus 1 while the
	// current one listens (see Listening).
	state atomic.Uint64
}

// Listening reports whether the listener is listening now, and which session of it: a
// receiver that keeps something only as long as no notification says otherwise can tell
// whether notifications were missed in between (the session changed, or it is not listening).
// A silently dropped connection is noticed within PingInterval and the ping's timeout.
func (l *Listener) Listening() (session uint64, ok bool) {
	s := l.state.Load()
	return s / 2, s%2 == 1
}

// NewListener returns a listener that connects like pool does. Call Run to start it.
func NewListener(pool *pgxpool.Pool, cfg ListenerConfig) (*Listener, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Channels = append([]string(nil), cfg.Channels...)
	return &Listener{pool: pool, cfg: cfg, c: make(chan Notification, cfg.Buffer)}, nil
}

// Notifications returns the channel notifications arrive on. It is closed when Run returns.
func (l *Listener) Notifications() <-chan Notification { return l.c }

// Run listens until ctx ends, then closes the notification channel and returns nil. Connection
// failures are logged and retried, never returned. Run may be called only once.
func (l *Listener) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("listener: Run called twice")
	}
	defer close(l.c)
	delay := l.cfg.ReconnectMin
	for {
		listened, err := l.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if listened {
			delay = l.cfg.ReconnectMin
		}
		l.cfg.Logger.Warn("inventory listener: connection lost, reconnecting",
			"channels", l.cfg.Channels, "retry_in", delay, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, l.cfg.ReconnectMax)
	}
}

// session connects, listens and delivers until the connection fails or ctx ends. listened
// reports whether it got as far as listening, which resets the backoff.
func (l *Listener) session(ctx context.Context) (listened bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, l.pool.Config().ConnConfig)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	for _, ch := range l.cfg.Channels {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return false, fmt.Errorf("listen %q: %w", ch, err)
		}
	}
	l.state.Add(3) // next session, listening
	defer l.state.Add(^uint64(0))
	for _, ch := range l.cfg.Channels {
		if !l.deliver(ctx, Notification{Channel: ch, Reset: true}) {
			return true, ctx.Err()
		}
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, l.cfg.PingInterval)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			if !l.deliver(ctx, Notification{Channel: n.Channel, Payload: n.Payload}) {
				return true, ctx.Err()
			}
		case ctx.Err() != nil:
			return true, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			// Quiet for a while: make sure the connection is still there.
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("ping: %w", err)
			}
		default:
			return true, fmt.Errorf("wait for notification: %w", err)
		}
	}
}

func (l *Listener) deliver(ctx context.Context, n Notification) bool {
	select {
	case l.c <- n:
		return true
	case <-ctx.Done():
		return false
	}
}
