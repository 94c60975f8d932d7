package inventory_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

func TestGroupCRUDAndMembership(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	g, err := b.store.CreateGroup(ctx, inventory.Group{Name: "compute", Priority: 10, Description: "all compute"})
	require.NoError(t, err)
	require.Equal(t, inventory.Group{Name: "compute", Priority: 10, Description: "all compute",
		CreatedAt: g.CreatedAt, UpdatedAt: g.UpdatedAt}, g)
	require.True(t, g.CreatedAt.Equal(t0))
	require.False(t, g.TrustOnFirstUse, "TOFU is off unless asked for")
	_, err = b.store.CreateGroup(ctx, inventory.Group{Name: "gpu", Priority: 20})
	require.NoError(t, err)
	_, err = b.store.CreateGroup(ctx, inventory.Group{Name: "alpha", Priority: 10})
	require.NoError(t, err)

	got, err := b.store.GetGroup(ctx, "compute")
	require.NoError(t, err)
	require.Equal(t, g, got)

	groups, err := b.store.ListGroups(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"alpha", "compute", "gpu"}, groupNames(groups))

	b.clock.Advance(time.Hour)
	g, err = b.store.UpdateGroup(ctx, "compute", inventory.GroupUpdate{TrustOnFirstUse: ptr(true), Priority: ptr(5)})
	require.NoError(t, err)
	require.True(t, g.TrustOnFirstUse)
	require.Equal(t, 5, g.Priority)
	require.Equal(t, "all compute", g.Description, "fields not in the update stay")
	require.True(t, g.UpdatedAt.Equal(t0.Add(time.Hour)))

	for _, id := range []string{"n2", "n1", "n3"} {
		_, err := b.store.CreateNode(ctx, inventory.Node{ID: id})
		require.NoError(t, err)
	}
	require.NoError(t, b.store.AddGroupMember(ctx, "compute", "n2"))
	require.NoError(t, b.store.AddGroupMember(ctx, "compute", "n1"))
	require.NoError(t, b.store.AddGroupMember(ctx, "compute", "n1"), "adding a member twice is a no-op")
	require.NoError(t, b.store.AddGroupMember(ctx, "gpu", "n1"))
	require.NoError(t, b.store.AddGroupMember(ctx, "alpha", "n1"))

	members, err := b.store.ListGroupMembers(ctx, "compute")
	require.NoError(t, err)
	require.Equal(t, []string{"n1", "n2"}, members)
	members, err = b.store.ListGroupMembers(ctx, "alpha")
	require.NoError(t, err)
	require.Equal(t, []string{"n1"}, members)

	// Merge order: ascending priority (compute 5, alpha 10, gpu 20), so the highest comes last.
	ofNode, err := b.store.GroupsOfNode(ctx, "n1")
	require.NoError(t, err)
	require.Equal(t, []string{"compute", "alpha", "gpu"}, groupNames(ofNode))
	ofNode, err = b.store.GroupsOfNode(ctx, "n3")
	require.NoError(t, err)
	require.Empty(t, ofNode)

	require.NoError(t, b.store.RemoveGroupMember(ctx, "compute", "n2"))
	require.ErrorIs(t, b.store.RemoveGroupMember(ctx, "compute", "n2"), inventory.ErrNotFound)
	require.ErrorIs(t, b.store.AddGroupMember(ctx, "compute", "ghost"), inventory.ErrNotFound)
	require.ErrorIs(t, b.store.AddGroupMember(ctx, "ghosts", "n1"), inventory.ErrNotFound)

	require.NoError(t, b.store.DeleteGroup(ctx, "gpu"))
	ofNode, err = b.store.GroupsOfNode(ctx, "n1")
	require.NoError(t, err)
	require.Equal(t, []string{"compute", "alpha"}, groupNames(ofNode), "deleting a group drops its memberships")
	_, err = b.store.GetNode(ctx, "n1")
	require.NoError(t, err, "but not its nodes")

	members, err = b.store.ListGroupMembers(ctx, "gpu")
	require.ErrorIs(t, err, inventory.ErrNotFound)
	require.Nil(t, members)
	_, err = b.store.GetGroup(ctx, "gpu")
	require.ErrorIs(t, err, inventory.ErrNotFound)
	require.ErrorIs(t, b.store.DeleteGroup(ctx, "gpu"), inventory.ErrNotFound)
	_, err = b.store.UpdateGroup(ctx, "gpu", inventory.GroupUpdate{Priority: ptr(1)})
	require.ErrorIs(t, err, inventory.ErrNotFound)
	_, err = b.store.CreateGroup(ctx, inventory.Group{Name: "compute"})
	require.ErrorIs(t, err, inventory.ErrConflict)
	_, err = b.store.CreateGroup(ctx, inventory.Group{Name: "bad name"})
	require.ErrorIs(t, err, inventory.ErrInvalid)
	require.ErrorContains(t, err, "groups_name_format")
}

func groupNames(gs []inventory.Group) []string {
	names := make([]string, len(gs))
	for i, g := range gs {
		names[i] = g.Name
	}
	return names
}

func TestPCRPolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateGroup(ctx, inventory.Group{Name: "compute"})
	require.NoError(t, err)

	p, err := b.store.GetPCRPolicy(ctx, "compute")
	require.NoError(t, err)
	require.Empty(t, p)

	want := inventory.PCRPolicy{0: key(0), 4: key(4), 7: key(7)}
	require.NoError(t, b.store.SetPCRPolicy(ctx, "compute", want))
	p, err = b.store.GetPCRPolicy(ctx, "compute")
	require.NoError(t, err)
	require.Equal(t, want, p)

	// Replacing drops PCRs not in the new policy, keeps and changes the others.
	want = inventory.PCRPolicy{4: key(0x44), 9: key(9)}
	require.NoError(t, b.store.SetPCRPolicy(ctx, "compute", want))
	p, err = b.store.GetPCRPolicy(ctx, "compute")
	require.NoError(t, err)
	require.Equal(t, want, p)

	require.NoError(t, b.store.SetPCRPolicy(ctx, "compute", nil))
	p, err = b.store.GetPCRPolicy(ctx, "compute")
	require.NoError(t, err)
	require.Empty(t, p)

	require.ErrorIs(t, b.store.SetPCRPolicy(ctx, "nope", want), inventory.ErrNotFound)
	require.ErrorIs(t, b.store.SetPCRPolicy(ctx, "nope", nil), inventory.ErrNotFound)
	_, err = b.store.GetPCRPolicy(ctx, "nope")
	require.ErrorIs(t, err, inventory.ErrNotFound)

	require.ErrorIs(t, b.store.SetPCRPolicy(ctx, "compute", inventory.PCRPolicy{24: key(1)}), inventory.ErrInvalid)
	err = b.store.SetPCRPolicy(ctx, "compute", inventory.PCRPolicy{1: key(1), 2: []byte{1, 2, 3}})
	require.ErrorIs(t, err, inventory.ErrInvalid)
	require.ErrorContains(t, err, "group_pcr_policies_sha256_length")
	p, err = b.store.GetPCRPolicy(ctx, "compute")
	require.NoError(t, err)
	require.Empty(t, p, "a rejected policy leaves nothing half-written")
}

func TestGroupNamesOfNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	for _, id := range []string{"n1", "n2", "n3"} {
		_, err := b.store.CreateNode(ctx, inventory.Node{ID: id})
		require.NoError(t, err)
	}
	for _, g := range []inventory.Group{{Name: "low", Priority: -1}, {Name: "b-high", Priority: 10}, {Name: "a-high", Priority: 10}} {
		_, err := b.store.CreateGroup(ctx, g)
		require.NoError(t, err)
		require.NoError(t, b.store.AddGroupMember(ctx, g.Name, "n1"))
	}
	require.NoError(t, b.store.AddGroupMember(ctx, "low", "n2"))

	got, err := b.store.GroupNamesOfNodes(ctx, []string{"n1", "n2", "n3", "ghost"})
	require.NoError(t, err)
	// Highest priority first, ties by name; n3 (no group) and ghost (no node) are absent.
	require.Equal(t, map[string][]string{"n1": {"a-high", "b-high", "low"}, "n2": {"low"}}, got)

	got, err = b.store.GroupNamesOfNodes(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, got)
}
