package inventory_test

import (
	"context"
	"io"
	"log/slog"
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
	lis := startListener(t, b, "custom", inventory.ChannelTunnels)

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

	// The schema's triggers: tunnel changes name their gateway.
	fx := newTunnelFixture(t, b, "n1")
	id := fx.openTunnel(t, "10.100.0.2")
	require.Equal(t, inventory.Notification{Channel: inventory.ChannelTunnels, Payload: "gw1"}, receive(t, lis.l))

	// Events and phone-homes notify nothing (every notifying commit wakes every listener of the
	// database): the next notification is the marker sent after them, as notifications arrive
	// in commit order.
	_, err := b.store.AppendEvent(ctx, inventory.Event{Kind: "k", Service: "s"})
	require.NoError(t, err)
	require.NoError(t, b.store.InTx(ctx, func(q *inventory.Queries) error {
		_, err := q.MarkPhonedHome(ctx, id)
		return err
	}))
	require.NoError(t, b.store.Notify(ctx, "custom", "marker"))
	require.Equal(t, inventory.Notification{Channel: "custom", Payload: "marker"}, receive(t, lis.l))

	// Closing it does notify.
	require.NoError(t, b.store.InTx(ctx, func(q *inventory.Queries) error {
		_, _, err := q.CloseTunnel(ctx, id, inventory.TunnelClosed, "test")
		return err
	}))
	require.Equal(t, inventory.Notification{Channel: inventory.ChannelTunnels, Payload: "gw1"}, receive(t, lis.l))
}

func TestListenerReconnects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	lis := startListener(t, b, "custom")
	session, ok := lis.l.Listening()
	require.True(t, ok)
	require.Equal(t, uint64(1), session)

	// Kill the listener's backend, as a server restart or a network failure would.
	var killed bool
	require.NoError(t, b.pool.QueryRow(ctx, `
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&killed))
	require.True(t, killed)

	n := receive(t, lis.l)
	require.Equal(t, inventory.Notification{Channel: "custom", Reset: true}, n,
		"after reconnecting the listener says it may have missed notifications")
	session, ok = lis.l.Listening()
	require.True(t, ok)
	require.Equal(t, uint64(2), session, "a new session: notifications may have been missed")
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
	_, listening := l.Listening()
	require.False(t, listening)
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

// TestNodeDocsChangesNotify: every change to what node documents are made of notifies
// ChannelNodeDocs, once per statement; the columns a boot updates do not.
func TestNodeDocsChangesNotify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n1", Enabled: true})
	require.NoError(t, err)
	lis := startListener(t, b, "custom", inventory.ChannelNodeDocs)
	docs := inventory.Notification{Channel: inventory.ChannelNodeDocs}

	for _, c := range []struct {
		name   string
		change func() error
	}{
		{"group", func() error { _, err := b.store.CreateGroup(ctx, inventory.Group{Name: "g"}); return err }},
		{"member", func() error { return b.store.AddGroupMember(ctx, "g", "n1") }},
		{"cloud-init data", func() error {
			_, err := b.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: inventory.NodeScope("n1"), UserData: "#cloud-config\n"})
			return err
		}},
		{"secret", func() error {
			_, err := b.store.PutSecret(ctx, inventory.Secret{Scope: inventory.GroupScope("g"), Name: "k", Ciphertext: []byte("c"), Nonce: make([]byte, 12), KeyID: "k1"})
			return err
		}},
		{"hostname", func() error {
			_, err := b.pool.Exec(ctx, `UPDATE nodes SET hostname = 'n1.example' WHERE id = 'n1'`)
			return err
		}},
	} {
		require.NoError(t, c.change(), c.name)
		require.Equal(t, docs, receive(t, lis.l), c.name)
	}

	// A boot updates the node's last_boot_at: nothing its documents show. Notifications
	// arrive in commit order, so the next one is the marker sent after it.
	_, err = b.store.MarkNodeBooted(ctx, "n1")
	require.NoError(t, err)
	require.NoError(t, b.store.Notify(ctx, "custom", "marker"))
	require.Equal(t, inventory.Notification{Channel: "custom", Payload: "marker"}, receive(t, lis.l))
}
