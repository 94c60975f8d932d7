package admin_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/inventory"
)

func pcr(index uint32, content string) *inventoryv1.PCRValue {
	sum := sha256.Sum256([]byte(content))
	return &inventoryv1.PCRValue{Index: index, Sha256: sum[:]}
}

func hexOf(v *inventoryv1.PCRValue) string { return hex.EncodeToString(v.GetSha256()) }

func TestGroupsMembershipAndPolicy(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := ctxT(t)

	created, err := e.client.CreateGroup(ctx, &inventoryv1.CreateGroupRequest{Group: &inventoryv1.Group{
		Name: "compute", Priority: 10, Description: "compute nodes",
		PcrPolicy: []*inventoryv1.PCRValue{pcr(7, "secure boot"), pcr(4, "kernel")},
	}})
	require.NoError(t, err)
	g := created.GetGroup()
	require.Equal(t, int32(10), g.GetPriority())
	require.False(t, g.GetTrustOnFirstUse(), "trust on first use is off unless asked for")
	require.Equal(t, []uint32{4, 7}, indexes(g.GetPcrPolicy()), "policy in PCR order")
	_, err = e.client.CreateGroup(ctx, &inventoryv1.CreateGroupRequest{Group: &inventoryv1.Group{Name: "compute"}})
	requireCode(t, err, codes.AlreadyExists)
	_, err = e.client.CreateGroup(ctx, &inventoryv1.CreateGroupRequest{Group: &inventoryv1.Group{Name: "lab", Priority: -5, TrustOnFirstUse: true}})
	require.NoError(t, err)
	_, err = e.client.CreateGroup(ctx, &inventoryv1.CreateGroupRequest{Group: &inventoryv1.Group{Name: "gpu", Priority: 10}})
	require.NoError(t, err)

	got, err := e.client.GetGroup(ctx, &inventoryv1.GetGroupRequest{Name: "compute"})
	require.NoError(t, err)
	require.Equal(t, []uint32{4, 7}, indexes(got.GetGroup().GetPcrPolicy()))
	require.Equal(t, pcr(7, "secure boot").GetSha256(), got.GetGroup().GetPcrPolicy()[1].GetSha256())
	_, err = e.client.GetGroup(ctx, &inventoryv1.GetGroupRequest{Name: "nope"})
	requireCode(t, err, codes.NotFound)

	list, err := e.client.ListGroups(ctx, &inventoryv1.ListGroupsRequest{})
	require.NoError(t, err)
	var names []string
	for _, g := range list.GetGroups() {
		names = append(names, g.GetName())
	}
	require.Equal(t, []string{"compute", "gpu", "lab"}, names, "highest priority first, then by name")
	require.Len(t, list.GetGroups()[0].GetPcrPolicy(), 2)

	// Update: the mask picks priority, trust on first use and the policy; the description
	// in the request is ignored.
	upd, err := e.client.UpdateGroup(ctx, &inventoryv1.UpdateGroupRequest{
		Group: &inventoryv1.Group{Name: "compute", Priority: 20, Description: "ignored", TrustOnFirstUse: true,
			PcrPolicy: []*inventoryv1.PCRValue{pcr(7, "secure boot v2")}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"priority", "trust_on_first_use", "pcr_policy"}},
	})
	require.NoError(t, err)
	require.Equal(t, int32(20), upd.GetGroup().GetPriority())
	require.Equal(t, "compute nodes", upd.GetGroup().GetDescription())
	require.True(t, upd.GetGroup().GetTrustOnFirstUse())
	require.Equal(t, []uint32{7}, indexes(upd.GetGroup().GetPcrPolicy()))
	// Setting the same policy again is not a change.
	_, err = e.client.UpdateGroup(ctx, &inventoryv1.UpdateGroupRequest{
		Group:      &inventoryv1.Group{Name: "compute", PcrPolicy: []*inventoryv1.PCRValue{pcr(7, "secure boot v2")}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"pcr_policy"}},
	})
	require.NoError(t, err)
	// An empty policy in the mask removes it.
	upd, err = e.client.UpdateGroup(ctx, &inventoryv1.UpdateGroupRequest{
		Group:      &inventoryv1.Group{Name: "compute"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"pcr_policy", "trust_on_first_use"}},
	})
	require.NoError(t, err)
	require.Empty(t, upd.GetGroup().GetPcrPolicy())
	require.False(t, upd.GetGroup().GetTrustOnFirstUse())
	_, err = e.client.UpdateGroup(ctx, &inventoryv1.UpdateGroupRequest{
		Group: &inventoryv1.Group{Name: "nope"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"priority"}},
	})
	requireCode(t, err, codes.NotFound)

	// Membership.
	var ids []string
	for i := range 5 {
		ids = append(ids, nodeID(i))
	}
	createNodes(t, e, ids...)
	_, err = e.client.AddGroupMembers(ctx, &inventoryv1.AddGroupMembersRequest{Group: "compute", NodeIds: []string{ids[0], "ghost", ids[1]}})
	requireCode(t, err, codes.NotFound, "ghost")
	require.Zero(t, e.count(t, "group_members"), "all exist, or nothing changes")
	_, err = e.client.AddGroupMembers(ctx, &inventoryv1.AddGroupMembersRequest{Group: "nope", NodeIds: ids[:1]})
	requireCode(t, err, codes.NotFound, "nope")
	for range 2 { // idempotent
		_, err = e.client.AddGroupMembers(ctx, &inventoryv1.AddGroupMembersRequest{Group: "compute", NodeIds: ids})
		require.NoError(t, err)
	}
	_, err = e.client.AddGroupMembers(ctx, &inventoryv1.AddGroupMembersRequest{Group: "lab", NodeIds: ids[:1]})
	require.NoError(t, err)
	node, err := e.client.GetNode(ctx, &inventoryv1.GetNodeRequest{Id: ids[0]})
	require.NoError(t, err)
	require.Equal(t, []string{"compute", "lab"}, node.GetNode().GetGroups(), "highest priority first")

	var members []string
	req := &inventoryv1.ListGroupMembersRequest{Group: "compute", PageSize: 2}
	for pages := 1; ; pages++ {
		resp, err := e.client.ListGroupMembers(ctx, req)
		require.NoError(t, err)
		require.LessOrEqual(t, len(resp.GetNodeIds()), 2)
		members = append(members, resp.GetNodeIds()...)
		if resp.GetNextPageToken() == "" {
			require.Equal(t, 3, pages)
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	require.Equal(t, ids, members)
	_, err = e.client.ListGroupMembers(ctx, &inventoryv1.ListGroupMembersRequest{Group: "nope"})
	requireCode(t, err, codes.NotFound)
	empty, err := e.client.ListGroupMembers(ctx, &inventoryv1.ListGroupMembersRequest{Group: "gpu"})
	require.NoError(t, err)
	require.Empty(t, empty.GetNodeIds())

	// Removing non-members is fine; only actual removals are recorded.
	_, err = e.client.RemoveGroupMembers(ctx, &inventoryv1.RemoveGroupMembersRequest{Group: "compute", NodeIds: []string{ids[1], "ghost"}})
	require.NoError(t, err)
	_, err = e.client.RemoveGroupMembers(ctx, &inventoryv1.RemoveGroupMembersRequest{Group: "compute", NodeIds: []string{ids[1]}})
	require.NoError(t, err)
	_, err = e.client.RemoveGroupMembers(ctx, &inventoryv1.RemoveGroupMembersRequest{Group: "nope", NodeIds: []string{ids[1]}})
	requireCode(t, err, codes.NotFound)
	left, err := e.client.ListGroupMembers(ctx, &inventoryv1.ListGroupMembersRequest{Group: "compute"})
	require.NoError(t, err)
	require.Equal(t, []string{ids[0], ids[2], ids[3], ids[4]}, left.GetNodeIds())

	// Deleting the group lifts its policy from its members; the nodes stay.
	_, err = e.client.DeleteGroup(ctx, &inventoryv1.DeleteGroupRequest{Name: "compute"})
	require.NoError(t, err)
	_, err = e.client.DeleteGroup(ctx, &inventoryv1.DeleteGroupRequest{Name: "compute"})
	requireCode(t, err, codes.NotFound)
	node, err = e.client.GetNode(ctx, &inventoryv1.GetNodeRequest{Id: ids[0]})
	require.NoError(t, err)
	require.Equal(t, []string{"lab"}, node.GetNode().GetGroups())

	// The security-relevant history, in order.
	require.Equal(t, []string{
		"group.created", "group.pcr_policy", // compute, created pinned
		"group.created", "group.trust_on_first_use", // lab, created with TOFU
		"group.created",                                // gpu
		"group.trust_on_first_use", "group.pcr_policy", // compute: TOFU on, PCR 4 dropped and 7 changed
		"group.trust_on_first_use", "group.pcr_policy", // compute: both off again
		"group.members_added", "group.members_added", "group.members_added",
		"group.members_removed",
		"group.deleted",
	}, e.kinds(t, inventory.EventQuery{KindPrefixes: []string{"group."}}))
	policyEvents := e.events(t, inventory.EventQuery{Kinds: []string{"group.pcr_policy"}})
	require.Equal(t, map[string]any{"7": hexOf(pcr(7, "secure boot v2"))}, policyEvents[1].Detail["pcr_policy"])
	require.Equal(t, map[string]any{"4": hexOf(pcr(4, "kernel")), "7": hexOf(pcr(7, "secure boot"))}, policyEvents[1].Detail["previous"])
	require.Equal(t, adminPrincipal, policyEvents[1].Detail["admin"])
	tofu := e.events(t, inventory.EventQuery{Kinds: []string{"group.trust_on_first_use"}})
	require.Equal(t, map[string]any{"group": "lab", "enabled": true, "previous": false, "admin": adminPrincipal}, tofu[0].Detail)
	removed := e.events(t, inventory.EventQuery{Kinds: []string{"group.members_removed"}})
	require.Equal(t, []any{ids[1]}, removed[0].Detail["node_ids"])
}

func indexes(p []*inventoryv1.PCRValue) []uint32 {
	var out []uint32
	for _, v := range p {
		out = append(out, v.GetIndex())
	}
	return out
}
