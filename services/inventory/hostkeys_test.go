package inventory_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

func TestHostKeysAndBoot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n1", Hostname: "c1", Enabled: true})
	require.NoError(t, err)

	require.NoError(t, b.store.InTx(ctx, func(q *inventory.Queries) error {
		return q.ReplaceHostKeys(ctx, "n1", []inventory.HostKey{
			{Type: "ssh-rsa", PublicKey: "ssh-rsa AAAA1"},
			{Type: "ssh-ed25519", PublicKey: "ssh-ed25519 AAAA2"},
		})
	}))
	require.NoError(t, b.store.InTx(ctx, func(q *inventory.Queries) error {
		return q.ReplaceHostKeys(ctx, "n1", []inventory.HostKey{{Type: "ssh-ed25519", PublicKey: "ssh-ed25519 AAAA3"}})
	}))
	keys, err := b.store.ListHostKeys(ctx, "")
	require.NoError(t, err)
	require.Len(t, keys, 1, "a key type no longer reported is dropped")
	require.Equal(t, inventory.HostKey{NodeID: "n1", Hostname: "c1", Type: "ssh-ed25519", PublicKey: "ssh-ed25519 AAAA3", ReportedAt: t0}, keys[0])

	err = b.store.ReplaceHostKeys(ctx, "nope", []inventory.HostKey{{Type: "ssh-rsa", PublicKey: "x"}})
	require.ErrorIs(t, err, inventory.ErrNotFound)
	err = b.store.ReplaceHostKeys(ctx, "n1", []inventory.HostKey{{Type: "bad type", PublicKey: "x"}})
	require.ErrorIs(t, err, inventory.ErrInvalid)

	n, err := b.store.MarkNodeBooted(ctx, "n1")
	require.NoError(t, err)
	require.Equal(t, t0, n.LastBootAt)
	_, err = b.store.MarkNodeBooted(ctx, "nope")
	require.ErrorIs(t, err, inventory.ErrNotFound)
}
