package inventory_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

type listening struct {
	l    *inventory.Listener
	done chan error
}

func startListener(t *testing.T, b bundle, channels ...string) listening {
	t.Helper()
	l, err := inventory.NewListener(b.pool, inventory.ListenerConfig{
		Channels:     channels,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		ReconnectMin: 10 * time.Millisecond,
		ReconnectMax: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	// Listening has started once the listener says so (Reset), not before.
	for range channels {
		n := receive(t, l)
		require.True(t, n.Reset, "first notification per channel is the reset marker, got %+v", n)
	}
	return listening{l: l, done: done}
}

func receive(t *testing.T, l *inventory.Listener) inventory.Notification {
	t.Helper()
	select {
	case n, ok := <-l.Notifications():
		require.True(t, ok, "notification channel closed")
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10s")
	}
	panic("unreachable")
}

func TestListenerReceivesNotify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	lis := startListener(t, b, "custom", inventory.ChannelEvents, inventory.ChannelTunnels)

	require.NoError(t, b.store.Notify(ctx, "custom", "hello"))
	require.Equal(t, inventory.Notification{Channel: "custom", Payload: "hello"}, receive(t, lis.l))

	// Inside a transaction: delivered at commit, not before, and not at all on rollback.
	require.ErrorIs(t, b.store.InTx(ctx, func(q *inventory.Queries) error {
		if err := q.Notify(ctx, "custom", "rolled back"); err != nil {
			return err
		}
		return context.Canceled
	}), context.Canceled)
	require.NoError(t, b.store.InTx(ctx, func(q *inventory.Queries) error {
		return q.Notify(ctx, "custom", "committed")
	}))
	require.Equal(t, inventory.Notification{Channel: "custom", Payload: "committed"}, receive(t, lis.l))

	// The schema's triggers: new events carry their id.
	e, err := b.store.AppendEvent(ctx, inventory.Event{Kind: "k", Service: "s"})
	require.NoError(t, err)
	require.Equal(t, inventory.Notification{Channel: inventory.ChannelEvents, Payload: strconv.FormatInt(e.ID, 10)}, receive(t, lis.l))

	// Tunnel changes name their gateway.
	fx := newTunnelFixture(t, b, "n1")
	fx.openTunnel(t, "10.100.0.2")
	require.Equal(t, inventory.Notification{Channel: inventory.ChannelTunnels, Payload: "gw1"}, receive(t, lis.l))
}

func TestListenerReconnects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	lis := startListener(t, b, "custom")

	// Kill the listener's backend, as a server restart or a network failure would.
	var killed bool
	require.NoError(t, b.pool.QueryRow(ctx, `
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&killed))
	require.True(t, killed)

	n := receive(t, lis.l)
	require.Equal(t, inventory.Notification{Channel: "custom", Reset: true}, n,
		"after reconnecting the listener says it may have missed notifications")
	require.NoError(t, b.store.Notify(ctx, "custom", "after"))
	require.Equal(t, inventory.Notification{Channel: "custom", Payload: "after"}, receive(t, lis.l))
}

func TestListenerStopsWithContext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l, err := inventory.NewListener(b.pool, inventory.ListenerConfig{Channels: []string{"c"}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	require.True(t, receive(t, l).Reset)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
	_, open := <-l.Notifications()
	require.False(t, open, "the channel is closed when Run returns")
	require.Error(t, l.Run(context.Background()), "Run may be called once")
}

func TestListenerConfigValidation(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]inventory.ListenerConfig{
		"no channels":   {},
		"empty channel": {Channels: []string{""}},
		"long channel":  {Channels: []string{string(make([]byte, 64))}},
		"backoff":       {Channels: []string{"c"}, ReconnectMin: time.Second, ReconnectMax: time.Millisecond},
	} {
		_, err := inventory.NewListener(nil, cfg)
		require.Error(t, err, name)
	}
}
