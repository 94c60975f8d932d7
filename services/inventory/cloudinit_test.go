package inventory_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

func TestCloudInitDataScopesAndLayers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n1", Enabled: true})
	require.NoError(t, err)
	_, err = b.store.CreateNode(ctx, inventory.Node{ID: "n2", Enabled: true})
	require.NoError(t, err)
	for _, g := range []inventory.Group{{Name: "hi", Priority: 20}, {Name: "lo", Priority: 10}, {Name: "other", Priority: 0}} {
		_, err := b.store.CreateGroup(ctx, g)
		require.NoError(t, err)
	}
	require.NoError(t, b.store.AddGroupMember(ctx, "hi", "n1"))
	require.NoError(t, b.store.AddGroupMember(ctx, "lo", "n1"))

	set := func(s inventory.Scope, ud string) {
		t.Helper()
		d, err := b.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: s, UserData: ud, MetaData: map[string]any{"k": ud}})
		require.NoError(t, err)
		require.Equal(t, s, d.Scope)
		require.Equal(t, ud, d.UserData)
	}
	set(inventory.DefaultsScope, "d0")
	set(inventory.DefaultsScope, "d") // replaces, no second defaults row
	set(inventory.GroupScope("hi"), "hi")
	set(inventory.GroupScope("lo"), "lo")
	set(inventory.GroupScope("other"), "other")
	set(inventory.NodeScope("n1"), "n1")
	set(inventory.NodeScope("n2"), "n2")

	got, err := b.store.GetCloudInitData(ctx, inventory.DefaultsScope)
	require.NoError(t, err)
	require.Equal(t, "d", got.UserData)
	require.Equal(t, map[string]any{"k": "d"}, got.MetaData)

	layers, err := b.store.CloudInitLayers(ctx, "n1")
	require.NoError(t, err)
	var order []string
	for _, l := range layers {
		order = append(order, l.UserData)
	}
	require.Equal(t, []string{"d", "lo", "hi", "n1"}, order, "defaults, groups by ascending priority, node; never another node's or group's")

	_, err = b.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: inventory.NodeScope("nope")})
	require.ErrorIs(t, err, inventory.ErrNotFound)
	_, err = b.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: inventory.Scope{Group: "hi", NodeID: "n1"}})
	require.ErrorIs(t, err, inventory.ErrInvalid)

	require.NoError(t, b.store.DeleteCloudInitData(ctx, inventory.GroupScope("hi")))
	require.ErrorIs(t, b.store.DeleteCloudInitData(ctx, inventory.GroupScope("hi")), inventory.ErrNotFound)
	_, err = b.store.GetCloudInitData(ctx, inventory.GroupScope("hi"))
	require.ErrorIs(t, err, inventory.ErrNotFound)
}
