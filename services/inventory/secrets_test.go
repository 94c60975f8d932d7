package inventory_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

func TestSecretsScopesAndLookupOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	for _, id := range []string{"n1", "n2"} {
		_, err := b.store.CreateNode(ctx, inventory.Node{ID: id, Enabled: true})
		require.NoError(t, err)
	}
	for _, g := range []inventory.Group{{Name: "hi", Priority: 20}, {Name: "lo", Priority: 10}} {
		_, err := b.store.CreateGroup(ctx, g)
		require.NoError(t, err)
		require.NoError(t, b.store.AddGroupMember(ctx, g.Name, "n1"))
	}
	put := func(s inventory.Scope, name string, ct string) inventory.Secret {
		t.Helper()
		sec, err := b.store.PutSecret(ctx, inventory.Secret{Scope: s, Name: name, Ciphertext: []byte(ct), Nonce: []byte("nonce"), KeyID: "k1"})
		require.NoError(t, err)
		return sec
	}
	first := put(inventory.DefaultsScope, "munge.key", "d0")
	b.clock.Advance(1)
	again := put(inventory.DefaultsScope, "munge.key", "d")
	require.Equal(t, first.CreatedAt, again.CreatedAt, "a replaced secret keeps its creation time")
	require.Equal(t, []byte("d"), again.Ciphertext)
	put(inventory.GroupScope("lo"), "munge.key", "lo")
	put(inventory.GroupScope("hi"), "munge.key", "hi")
	put(inventory.NodeScope("n1"), "munge.key", "n1")
	put(inventory.NodeScope("n2"), "munge.key", "n2")
	put(inventory.NodeScope("n2"), "only.n2", "x")

	ss, err := b.store.SecretsOfNode(ctx, "n1")
	require.NoError(t, err)
	var order []string
	for _, s := range ss {
		order = append(order, string(s.Ciphertext))
	}
	require.Equal(t, []string{"n1", "hi", "lo", "d"}, order, "node, groups by descending priority, defaults; nothing of n2")

	all, err := b.store.ListSecrets(ctx, nil)
	require.NoError(t, err)
	require.Len(t, all, 6)
	n2 := inventory.NodeScope("n2")
	mine, err := b.store.ListSecrets(ctx, &n2)
	require.NoError(t, err)
	require.Len(t, mine, 2)
	names, err := b.store.SecretNames(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"munge.key", "only.n2"}, names)

	_, err = b.store.PutSecret(ctx, inventory.Secret{Scope: inventory.DefaultsScope, Name: "../bad", Ciphertext: []byte("x"), Nonce: []byte("n"), KeyID: "k"})
	require.ErrorIs(t, err, inventory.ErrInvalid)
	_, err = b.store.PutSecret(ctx, inventory.Secret{Scope: inventory.GroupScope("nope"), Name: "a", Ciphertext: []byte("x"), Nonce: []byte("n"), KeyID: "k"})
	require.ErrorIs(t, err, inventory.ErrNotFound)

	require.NoError(t, b.store.DeleteSecret(ctx, n2, "only.n2"))
	require.ErrorIs(t, b.store.DeleteSecret(ctx, n2, "only.n2"), inventory.ErrNotFound)
}
