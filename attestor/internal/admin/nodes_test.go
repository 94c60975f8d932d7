package admin_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/inventory"
)

func TestAdminCredentialRequired(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := ctxT(t)

	// A node's TLS configuration: verifies the server, presents no client certificate.
	tc, err := e.pki.NodeClientTLS()
	require.NoError(t, err)
	anon := inventoryv1.NewInventoryServiceClient(e.dial(t, credentials.NewTLS(tc)))

	_, err = anon.GetNode(ctx, &inventoryv1.GetNodeRequest{Id: "n1"})
	requireCode(t, err, codes.Unauthenticated)
	_, err = anon.CreateNode(ctx, &inventoryv1.CreateNodeRequest{Node: &inventoryv1.Node{Id: "n1", Enabled: true}})
	requireCode(t, err, codes.Unauthenticated)
	stream, err := anon.WatchEvents(ctx, &inventoryv1.WatchEventsRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	requireCode(t, err, codes.Unauthenticated)
	require.Zero(t, e.count(t, "nodes"), "the unauthenticated CreateNode must change nothing")

	// The admin certificate gets through, and the change is recorded with its identity.
	created, err := e.client.CreateNode(ctx, &inventoryv1.CreateNodeRequest{Node: &inventoryv1.Node{Id: "n1", Enabled: true}})
	require.NoError(t, err)
	require.Equal(t, "n1", created.GetNode().GetId())
	_, err = e.client.GetNode(ctx, &inventoryv1.GetNodeRequest{Id: "n2"})
	requireCode(t, err, codes.NotFound, `"n2"`)
	events := e.events(t, inventory.EventQuery{})
	require.Len(t, events, 1)
	require.Equal(t, "node.created", events[0].Kind)
	require.Equal(t, "attestor", events[0].Service)
	require.Equal(t, adminPrincipal, events[0].Detail["admin"])
}

func TestNodeLifecycle(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := ctxT(t)

	resp, err := e.client.CreateNode(ctx, &inventoryv1.CreateNodeRequest{Node: &inventoryv1.Node{
		Id: "x1000c0s0b0n0", Mac: "AA-BB-CC-DD-EE-01", Hostname: "nid000001", Enabled: true, Description: "rack 1",
		Groups: []string{"ignored"}, Enrolled: true, // output only
	}})
	require.NoError(t, err)
	n := resp.GetNode()
	require.Equal(t, "x1000c0s0b0n0", n.GetId())
	require.Equal(t, "aa:bb:cc:dd:ee:01", n.GetMac(), "MACs come back in canonical form")
	require.Equal(t, "nid000001", n.GetHostname())
	require.True(t, n.GetEnabled())
	require.Empty(t, n.GetGroups())
	require.False(t, n.GetEnrolled())
	require.Nil(t, n.GetLastBootTime())
	require.WithinDuration(t, time.Now(), n.GetCreateTime().AsTime(), time.Minute)

	got, err := e.client.GetNode(ctx, &inventoryv1.GetNodeRequest{Id: "x1000c0s0b0n0"})
	require.NoError(t, err)
	require.True(t, proto.Equal(n, got.GetNode()), "get returns what create stored")

	// Taken id, taken MAC.
	_, err = e.client.CreateNode(ctx, &inventoryv1.CreateNodeRequest{Node: &inventoryv1.Node{Id: "x1000c0s0b0n0"}})
	requireCode(t, err, codes.AlreadyExists)
	_, err = e.client.CreateNode(ctx, &inventoryv1.CreateNodeRequest{Node: &inventoryv1.Node{Id: "other", Mac: "aa:bb:cc:dd:ee:01"}})
	requireCode(t, err, codes.AlreadyExists, "mac")

	// The mask decides: hostname and MAC are cleared, the description is not touched although
	// the request carries another one.
	upd, err := e.client.UpdateNode(ctx, &inventoryv1.UpdateNodeRequest{
		Node:       &inventoryv1.Node{Id: "x1000c0s0b0n0", Description: "not applied"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"hostname", "mac"}},
	})
	require.NoError(t, err)
	require.Empty(t, upd.GetNode().GetHostname())
	require.Empty(t, upd.GetNode().GetMac())
	require.Equal(t, "rack 1", upd.GetNode().GetDescription())
	require.True(t, upd.GetNode().GetEnabled())
	require.True(t, upd.GetNode().GetUpdateTime().AsTime().After(n.GetUpdateTime().AsTime()))

	// Disable, twice: the second changes and records nothing.
	for range 2 {
		dis, err := e.client.DisableNode(ctx, &inventoryv1.DisableNodeRequest{Id: "x1000c0s0b0n0"})
		require.NoError(t, err)
		require.False(t, dis.GetNode().GetEnabled())
	}
	// Enabled again through the mask.
	upd, err = e.client.UpdateNode(ctx, &inventoryv1.UpdateNodeRequest{
		Node:       &inventoryv1.Node{Id: "x1000c0s0b0n0", Enabled: true},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enabled"}},
	})
	require.NoError(t, err)
	require.True(t, upd.GetNode().GetEnabled())

	_, err = e.client.DeleteNode(ctx, &inventoryv1.DeleteNodeRequest{Id: "x1000c0s0b0n0"})
	require.NoError(t, err)
	_, err = e.client.GetNode(ctx, &inventoryv1.GetNodeRequest{Id: "x1000c0s0b0n0"})
	requireCode(t, err, codes.NotFound)
	_, err = e.client.DeleteNode(ctx, &inventoryv1.DeleteNodeRequest{Id: "x1000c0s0b0n0"})
	requireCode(t, err, codes.NotFound)
	_, err = e.client.DisableNode(ctx, &inventoryv1.DisableNodeRequest{Id: "x1000c0s0b0n0"})
	requireCode(t, err, codes.NotFound)
	_, err = e.client.UpdateNode(ctx, &inventoryv1.UpdateNodeRequest{
		Node:       &inventoryv1.Node{Id: "x1000c0s0b0n0"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enabled"}},
	})
	requireCode(t, err, codes.NotFound)

	// Every change is in the log, in order, about the node, by the admin; events outlive it.
	events := e.events(t, inventory.EventQuery{NodeID: "x1000c0s0b0n0"})
	var kinds []string
	for _, ev := range events {
		kinds = append(kinds, ev.Kind)
		require.Equal(t, "attestor", ev.Service)
		require.Equal(t, adminPrincipal, ev.Detail["admin"])
	}
	require.Equal(t, []string{"node.created", "node.updated", "node.disabled", "node.enabled", "node.deleted"}, kinds)
	require.Equal(t, []any{"mac", "hostname"}, events[1].Detail["fields"])
}

func TestListNodes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := ctxT(t)

	var all []string
	for i := range 25 {
		all = append(all, nodeID(i))
	}
	createNodes(t, e, all...)
	createNodes(t, e, "y1", "y2")
	all = append(all, "y1", "y2")
	for _, id := range []string{nodeID(3), nodeID(7), "y2"} {
		_, err := e.client.DisableNode(ctx, &inventoryv1.DisableNodeRequest{Id: id})
		require.NoError(t, err)
	}
	_, err := e.client.CreateGroup(ctx, &inventoryv1.CreateGroupRequest{Group: &inventoryv1.Group{Name: "compute"}})
	require.NoError(t, err)
	_, err = e.client.AddGroupMembers(ctx, &inventoryv1.AddGroupMembersRequest{Group: "compute", NodeIds: []string{"y1", nodeID(3), nodeID(4)}})
	require.NoError(t, err)

	// list pages through everything the request matches and returns the ids and page sizes.
	list := func(req *inventoryv1.ListNodesRequest) (ids []string, sizes []int) {
		t.Helper()
		for {
			resp, err := e.client.ListNodes(ctx, req)
			require.NoError(t, err)
			sizes = append(sizes, len(resp.GetNodes()))
			for _, n := range resp.GetNodes() {
				ids = append(ids, n.GetId())
			}
			if resp.GetNextPageToken() == "" {
				return ids, sizes
			}
			req = proto.Clone(req).(*inventoryv1.ListNodesRequest)
			req.PageToken = resp.GetNextPageToken()
		}
	}
	ids, sizes := list(&inventoryv1.ListNodesRequest{IdPrefix: "x1000", PageSize: 10})
	require.Equal(t, all[:25], ids, "every x node once, in id order")
	require.Equal(t, []int{10, 10, 5}, sizes)

	ids, sizes = list(&inventoryv1.ListNodesRequest{})
	require.Equal(t, all, ids)
	require.Equal(t, []int{27}, sizes, "page_size 0 means 100")

	ids, _ = list(&inventoryv1.ListNodesRequest{Group: "compute", PageSize: 2})
	require.Equal(t, []string{nodeID(3), nodeID(4), "y1"}, ids)

	ids, _ = list(&inventoryv1.ListNodesRequest{Enabled: proto.Bool(false)})
	require.Equal(t, []string{nodeID(3), nodeID(7), "y2"}, ids)

	ids, _ = list(&inventoryv1.ListNodesRequest{Enabled: proto.Bool(true), Group: "compute", IdPrefix: "x"})
	require.Equal(t, []string{nodeID(4)}, ids)

	// Listed nodes carry their groups and enrollment state.
	resp, err := e.client.ListNodes(ctx, &inventoryv1.ListNodesRequest{IdPrefix: "y1"})
	require.NoError(t, err)
	require.Len(t, resp.GetNodes(), 1)
	require.Equal(t, []string{"compute"}, resp.GetNodes()[0].GetGroups())

	// Tokens are tied to their list and filter.
	first, err := e.client.ListNodes(ctx, &inventoryv1.ListNodesRequest{PageSize: 5})
	require.NoError(t, err)
	require.NotEmpty(t, first.GetNextPageToken())
	_, err = e.client.ListNodes(ctx, &inventoryv1.ListNodesRequest{PageSize: 5, PageToken: first.GetNextPageToken(), IdPrefix: "y"})
	requireCode(t, err, codes.InvalidArgument, "filter changed")
	_, err = e.client.ListGroupMembers(ctx, &inventoryv1.ListGroupMembersRequest{Group: "compute", PageToken: first.GetNextPageToken()})
	requireCode(t, err, codes.InvalidArgument, "page_token")
	_, err = e.client.ListNodes(ctx, &inventoryv1.ListNodesRequest{PageToken: "bm90IGEgdG9rZW4"})
	requireCode(t, err, codes.InvalidArgument, "page_token")
	// Another page size with the same filter is fine.
	second, err := e.client.ListNodes(ctx, &inventoryv1.ListNodesRequest{PageSize: 100, PageToken: first.GetNextPageToken()})
	require.NoError(t, err)
	require.Len(t, second.GetNodes(), 22)
	require.True(t, slices.IsSortedFunc(second.GetNodes(), func(a, b *inventoryv1.Node) int {
		return strings.Compare(a.GetId(), b.GetId())
	}))
}
