package admin_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
)

// snapshot digests every table the admin API writes, to prove that a refused request changed
// nothing.
func (e *env) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, table := range []string{"nodes", "groups", "group_members", "group_pcr_policies", "ek_enrollments", "events"} {
		var digest *string
		err := e.pool.QueryRow(context.Background(),
			`SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM `+table+` t`).Scan(&digest)
		require.NoError(t, err)
		out[table] = ""
		if digest != nil {
			out[table] = *digest
		}
	}
	return out
}

func TestInvalidRequestsChangeNothing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := ctxT(t)
	c := e.client
	_, err := c.CreateNode(ctx, &inventoryv1.CreateNodeRequest{Node: &inventoryv1.Node{Id: "n1", Mac: "aa:bb:cc:dd:ee:01", Enabled: true}})
	require.NoError(t, err)
	_, err = c.CreateGroup(ctx, &inventoryv1.CreateGroupRequest{Group: &inventoryv1.Group{Name: "g1", PcrPolicy: []*inventoryv1.PCRValue{pcr(0, "fw")}}})
	require.NoError(t, err)
	_, err = c.AddGroupMembers(ctx, &inventoryv1.AddGroupMembersRequest{Group: "g1", NodeIds: []string{"n1"}})
	require.NoError(t, err)
	_, err = c.EnrollNode(ctx, byHash("n1", sha256.Sum256([]byte("ek"))))
	require.NoError(t, err)
	before := e.snapshot(t)
	require.NotEmpty(t, before["events"])

	node := func(n *inventoryv1.Node) error {
		_, err := c.CreateNode(ctx, &inventoryv1.CreateNodeRequest{Node: n})
		return err
	}
	updateNode := func(n *inventoryv1.Node, paths ...string) error {
		_, err := c.UpdateNode(ctx, &inventoryv1.UpdateNodeRequest{Node: n, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
		return err
	}
	group := func(g *inventoryv1.Group) error {
		_, err := c.CreateGroup(ctx, &inventoryv1.CreateGroupRequest{Group: g})
		return err
	}
	updateGroup := func(g *inventoryv1.Group, paths ...string) error {
		_, err := c.UpdateGroup(ctx, &inventoryv1.UpdateGroupRequest{Group: g, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
		return err
	}
	enroll := func(req *inventoryv1.EnrollNodeRequest) error {
		_, err := c.EnrollNode(ctx, req)
		return err
	}
	listEvents := func(req *inventoryv1.ListEventsRequest) error {
		_, err := c.ListEvents(ctx, req)
		return err
	}
	watch := func(req *inventoryv1.WatchEventsRequest) error {
		stream, err := c.WatchEvents(ctx, req)
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	edPub, _, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	edDER, err := x509.MarshalPKIXPublicKey(edPub)
	require.NoError(t, err)
	short := make([]byte, 31)
	now := time.Now()
	page, err := c.ListEvents(ctx, &inventoryv1.ListEventsRequest{PageSize: 1})
	require.NoError(t, err)
	eventsToken := page.GetNextPageToken()
	require.NotEmpty(t, eventsToken)
	many := make([]string, 1001)
	for i := range many {
		many[i] = "n1"
	}

	cases := []struct {
		name string
		call func() error
		msg  string
	}{
		{"create without node", func() error { return node(nil) }, "node is required"},
		{"create without id", func() error { return node(&inventoryv1.Node{}) }, "node.id is required"},
		{"create bad id", func() error { return node(&inventoryv1.Node{Id: "-n2"}) }, `node.id "-n2"`},
		{"create long id", func() error { return node(&inventoryv1.Node{Id: strings.Repeat("a", 64)}) }, "1 to 63"},
		{"create bad MAC", func() error { return node(&inventoryv1.Node{Id: "n2", Mac: "zz:zz"}) }, "node.mac"},
		{"create EUI-64 MAC", func() error { return node(&inventoryv1.Node{Id: "n2", Mac: "aa:bb:cc:dd:ee:ff:00:11"}) }, "node.mac"},
		{"create bad hostname", func() error { return node(&inventoryv1.Node{Id: "n2", Hostname: "under_score"}) }, "node.hostname"},
		{"create long hostname", func() error {
			return node(&inventoryv1.Node{Id: "n2", Hostname: strings.Repeat(strings.Repeat("a", 63)+".", 4)[:254]})
		}, "node.hostname"},
		{"create long description", func() error { return node(&inventoryv1.Node{Id: "n2", Description: strings.Repeat("é", 1025)}) }, "1025 characters"},
		{"create NUL description", func() error { return node(&inventoryv1.Node{Id: "n2", Description: "a\x00b"}) }, "NUL"},
		{"get without id", func() error { _, err := c.GetNode(ctx, &inventoryv1.GetNodeRequest{}); return err }, "id is required"},
		{"list negative page", func() error { _, err := c.ListNodes(ctx, &inventoryv1.ListNodesRequest{PageSize: -1}); return err }, "page_size -1"},
		{"list huge page", func() error { _, err := c.ListNodes(ctx, &inventoryv1.ListNodesRequest{PageSize: 1001}); return err }, "page_size 1001"},
		{"list bad prefix", func() error { _, err := c.ListNodes(ctx, &inventoryv1.ListNodesRequest{IdPrefix: "a b"}); return err }, "id_prefix"},
		{"list bad group", func() error { _, err := c.ListNodes(ctx, &inventoryv1.ListNodesRequest{Group: "a/b"}); return err }, "group"},
		{"list garbage token", func() error { _, err := c.ListNodes(ctx, &inventoryv1.ListNodesRequest{PageToken: "!!"}); return err }, "page_token"},
		{"update without node", func() error { return updateNode(nil, "enabled") }, "node is required"},
		{"update without mask", func() error { return updateNode(&inventoryv1.Node{Id: "n1"}) }, "update_mask is required"},
		{"update id", func() error { return updateNode(&inventoryv1.Node{Id: "n1"}, "id") }, `"id" cannot be updated`},
		{"update output-only field", func() error { return updateNode(&inventoryv1.Node{Id: "n1"}, "enabled", "enrolled") }, `"enrolled" cannot be updated`},
		{"update bad MAC", func() error { return updateNode(&inventoryv1.Node{Id: "n1", Mac: "nope"}, "mac") }, "node.mac"},
		{"update bad hostname", func() error { return updateNode(&inventoryv1.Node{Id: "n1", Hostname: "-x"}, "hostname") }, "node.hostname"},
		{"disable bad id", func() error { _, err := c.DisableNode(ctx, &inventoryv1.DisableNodeRequest{Id: "n 1"}); return err }, "id"},
		{"delete bad id", func() error { _, err := c.DeleteNode(ctx, &inventoryv1.DeleteNodeRequest{Id: ""}); return err }, "id is required"},
		{"group bad name", func() error { return group(&inventoryv1.Group{Name: "g 2"}) }, "group.name"},
		{"group PCR 24", func() error {
			return group(&inventoryv1.Group{Name: "g2", PcrPolicy: []*inventoryv1.PCRValue{pcr(24, "x")}})
		}, "index 24"},
		{"group short PCR value", func() error {
			return group(&inventoryv1.Group{Name: "g2", PcrPolicy: []*inventoryv1.PCRValue{{Index: 1, Sha256: short}}})
		}, "31 bytes"},
		{"group PCR twice", func() error {
			return group(&inventoryv1.Group{Name: "g2", PcrPolicy: []*inventoryv1.PCRValue{pcr(1, "a"), pcr(1, "b")}})
		}, "PCR 1 is listed twice"},
		{"update group name", func() error { return updateGroup(&inventoryv1.Group{Name: "g1"}, "name") }, `"name" cannot be updated`},
		{"update group bad policy", func() error {
			return updateGroup(&inventoryv1.Group{Name: "g1", PcrPolicy: []*inventoryv1.PCRValue{{Index: 0, Sha256: short}}}, "pcr_policy")
		}, "group.pcr_policy[0].sha256"},
		{"update group long description", func() error {
			return updateGroup(&inventoryv1.Group{Name: "g1", Description: strings.Repeat("x", 1025)}, "description")
		}, "group.description"},
		{"add no members", func() error {
			_, err := c.AddGroupMembers(ctx, &inventoryv1.AddGroupMembersRequest{Group: "g1"})
			return err
		}, "node_ids: 0 given"},
		{"add too many members", func() error {
			_, err := c.AddGroupMembers(ctx, &inventoryv1.AddGroupMembersRequest{Group: "g1", NodeIds: many})
			return err
		}, "node_ids: 1001 given"},
		{"add bad member", func() error {
			_, err := c.AddGroupMembers(ctx, &inventoryv1.AddGroupMembersRequest{Group: "g1", NodeIds: []string{"n1", "bad id"}})
			return err
		}, "node_ids[1]"},
		{"remove bad member", func() error {
			_, err := c.RemoveGroupMembers(ctx, &inventoryv1.RemoveGroupMembersRequest{Group: "g1", NodeIds: []string{"n1", ""}})
			return err
		}, "node_ids[1] is required"},
		{"members huge page", func() error {
			_, err := c.ListGroupMembers(ctx, &inventoryv1.ListGroupMembersRequest{Group: "g1", PageSize: 5000})
			return err
		}, "page_size"},
		{"enroll without EK", func() error { return enroll(&inventoryv1.EnrollNodeRequest{NodeId: "n1"}) }, "exactly one of"},
		{"enroll bad node id", func() error { return enroll(byHash("n/1", sha256.Sum256(nil))) }, "node_id"},
		{"enroll big certificate", func() error { return enroll(byCert("n1", make([]byte, 8<<10+1))) }, "ek_certificate: 8193 bytes"},
		{"enroll garbage certificate", func() error { return enroll(byCert("n1", []byte("not a certificate"))) }, "ek_certificate"},
		{"enroll big public key", func() error { return enroll(byKey("n1", make([]byte, 2<<10+1))) }, "ek_public_key: 2049 bytes"},
		{"enroll garbage public key", func() error { return enroll(byKey("n1", []byte{0x30, 0x03, 1, 2, 3})) }, "PKIX"},
		{"enroll Ed25519 key", func() error { return enroll(byKey("n1", edDER)) }, "not a TPM endorsement key"},
		{"enroll short hash", func() error {
			return enroll(&inventoryv1.EnrollNodeRequest{NodeId: "n1", Ek: &inventoryv1.EnrollNodeRequest_EkSha256{EkSha256: short}})
		}, "ek_sha256: 31 bytes"},
		{"delete enrollment long reason", func() error {
			_, err := c.DeleteEnrollment(ctx, &inventoryv1.DeleteEnrollmentRequest{NodeId: "n1", Reason: strings.Repeat("r", 257)})
			return err
		}, "reason: 257 characters"},
		{"events empty kind", func() error {
			return listEvents(&inventoryv1.ListEventsRequest{Filter: &inventoryv1.EventFilter{Kinds: []string{"node.created", ""}}})
		}, "filter.kinds[1]"},
		{"events since after until", func() error {
			return listEvents(&inventoryv1.ListEventsRequest{Filter: &inventoryv1.EventFilter{
				Since: timestamppb.New(now.Add(1)), Until: timestamppb.New(now),
			}})
		}, "since"},
		{"events invalid time", func() error {
			return listEvents(&inventoryv1.ListEventsRequest{Filter: &inventoryv1.EventFilter{Since: &timestamppb.Timestamp{Nanos: -1}}})
		}, "filter.since"},
		{"events bad page", func() error { return listEvents(&inventoryv1.ListEventsRequest{PageSize: -5}) }, "page_size -5"},
		{"events token with another filter", func() error {
			return listEvents(&inventoryv1.ListEventsRequest{PageToken: eventsToken, Filter: &inventoryv1.EventFilter{NodeId: "n1"}})
		}, "filter changed"},
		{"events token for nodes", func() error {
			_, err := c.ListNodes(ctx, &inventoryv1.ListNodesRequest{PageToken: eventsToken})
			return err
		}, "not a token returned by a previous ListNodes call"},
		{"watch negative cursor", func() error { return watch(&inventoryv1.WatchEventsRequest{AfterId: -1}) }, "after_id -1"},
		{"watch bad filter", func() error {
			return watch(&inventoryv1.WatchEventsRequest{Filter: &inventoryv1.EventFilter{NodeId: strings.Repeat("n", 257)}})
		}, "filter.node_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireCode(t, tc.call(), codes.InvalidArgument, tc.msg)
		})
	}
	require.Equal(t, before, e.snapshot(t), "refused requests must leave the inventory and its event log as they were")
}
