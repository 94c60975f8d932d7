package admin

import (
	"context"
	"errors"

	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/inventory"
)

// Fields UpdateNode may change.
var nodeMaskFields = []string{"mac", "hostname", "enabled", "description"}

func (s *Server) CreateNode(ctx context.Context, req *inventoryv1.CreateNodeRequest) (*inventoryv1.CreateNodeResponse, error) {
	n, err := nodeFromProto(req.GetNode())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var out *inventoryv1.Node
	err = s.store.InTx(ctx, func(q *inventory.Queries) error {
		created, err := q.CreateNode(ctx, n)
		if err != nil {
			return err
		}
		out = nodeProto(created, nil, false)
		return s.record(ctx, q, inventory.Event{NodeID: created.ID, Kind: "node.created", Detail: map[string]any{
			"enabled": created.Enabled, "mac": out.Mac, "hostname": created.Hostname,
		}})
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.CreateNodeResponse{Node: out}, nil
}

func (s *Server) GetNode(ctx context.Context, req *inventoryv1.GetNodeRequest) (*inventoryv1.GetNodeResponse, error) {
	if err := checkName("id", req.GetId()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	n, err := s.store.GetNode(ctx, req.GetId())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	out, err := nodeDetails(ctx, s.store.Queries, n)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.GetNodeResponse{Node: out}, nil
}

func (s *Server) ListNodes(ctx context.Context, req *inventoryv1.ListNodesRequest) (*inventoryv1.ListNodesResponse, error) {
	f, filter, err := nodeFilter(req)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	nodes, next, err := s.store.ListNodes(ctx, f)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	out, err := nodesDetails(ctx, s.store.Queries, nodes)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &inventoryv1.ListNodesResponse{Nodes: out}
	if next != "" {
		resp.NextPageToken = encodePageToken("ListNodes", next, filter)
	}
	return resp, nil
}

func nodeFilter(req *inventoryv1.ListNodesRequest) (inventory.NodeFilter, string, error) {
	var f inventory.NodeFilter
	var err error
	if f.Limit, err = pageSize(req.GetPageSize()); err != nil {
		return f, "", err
	}
	// A prefix need not be a whole id, but only id characters can match anything.
	if p := req.GetIdPrefix(); p != "" && !nameRE.MatchString(p) {
		return f, "", invalidf("id_prefix %q: node ids are made of [A-Za-z0-9._-], starting with a letter or digit", p)
	}
	if req.GetGroup() != "" {
		if err := checkName("group", req.GetGroup()); err != nil {
			return f, "", err
		}
	}
	f.IDPrefix, f.Group, f.Enabled = req.GetIdPrefix(), req.GetGroup(), req.Enabled
	filter := filterDigest(f.IDPrefix, f.Group, f.Enabled)
	if f.After, err = decodePageToken(req.GetPageToken(), "ListNodes", filter); err != nil {
		return f, "", err
	}
	if f.After != "" && !nameRE.MatchString(f.After) {
		return f, "", invalidf("page_token: not a token returned by a previous ListNodes call")
	}
	return f, filter, nil
}

func (s *Server) UpdateNode(ctx context.Context, req *inventoryv1.UpdateNodeRequest) (*inventoryv1.UpdateNodeResponse, error) {
	id, u, fields, err := nodeUpdate(req)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var out *inventoryv1.Node
	err = s.store.InTx(ctx, func(q *inventory.Queries) error {
		before, err := q.GetNode(ctx, id)
		if err != nil {
			return err
		}
		after, err := q.UpdateNode(ctx, id, u)
		if err != nil {
			return err
		}
		if before.Enabled != after.Enabled {
			if err := s.recordEnabled(ctx, q, after); err != nil {
				return err
			}
		}
		if changed := changedNodeFields(before, after, fields); len(changed) > 0 {
			err := s.record(ctx, q, inventory.Event{NodeID: id, Kind: "node.updated", Detail: map[string]any{"fields": changed}})
			if err != nil {
				return err
			}
		}
		out, err = nodeDetails(ctx, q, after)
		return err
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.UpdateNodeResponse{Node: out}, nil
}

func nodeUpdate(req *inventoryv1.UpdateNodeRequest) (string, inventory.NodeUpdate, map[string]bool, error) {
	var u inventory.NodeUpdate
	n := req.GetNode()
	if n == nil {
		return "", u, nil, invalidf("node is required")
	}
	if err := checkName("node.id", n.GetId()); err != nil {
		return "", u, nil, err
	}
	fields, err := maskPaths(req.GetUpdateMask(), nodeMaskFields...)
	if err != nil {
		return "", u, nil, err
	}
	if fields["mac"] {
		mac, err := parseMAC("node.mac", n.GetMac())
		if err != nil {
			return "", u, nil, err
		}
		u.MAC = &mac
	}
	if fields["hostname"] {
		if err := checkHostname("node.hostname", n.GetHostname()); err != nil {
			return "", u, nil, err
		}
		u.Hostname = &n.Hostname
	}
	if fields["description"] {
		if err := checkText("node.description", n.GetDescription(), maxDescription); err != nil {
			return "", u, nil, err
		}
		u.Description = &n.Description
	}
	if fields["enabled"] {
		u.Enabled = &n.Enabled
	}
	return n.GetId(), u, fields, nil
}

// changedNodeFields lists the masked fields, other than enabled (which has events of its own),
// whose value changed.
func changedNodeFields(before, after inventory.Node, fields map[string]bool) []string {
	var changed []string
	if fields["mac"] && before.MAC.String() != after.MAC.String() {
		changed = append(changed, "mac")
	}
	if fields["hostname"] && before.Hostname != after.Hostname {
		changed = append(changed, "hostname")
	}
	if fields["description"] && before.Description != after.Description {
		changed = append(changed, "description")
	}
	return changed
}

// recordEnabled records that a node was enabled or disabled.
func (s *Server) recordEnabled(ctx context.Context, q *inventory.Queries, n inventory.Node) error {
	kind := "node.disabled"
	if n.Enabled {
		kind = "node.enabled"
	}
	return s.record(ctx, q, inventory.Event{NodeID: n.ID, Kind: kind})
}

func (s *Server) DisableNode(ctx context.Context, req *inventoryv1.DisableNodeRequest) (*inventoryv1.DisableNodeResponse, error) {
	if err := checkName("id", req.GetId()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var out *inventoryv1.Node
	err := s.store.InTx(ctx, func(q *inventory.Queries) error {
		n, err := q.GetNode(ctx, req.GetId())
		if err != nil {
			return err
		}
		// Disabling a disabled node changes nothing and records nothing.
		if n.Enabled {
			if n, err = q.DisableNode(ctx, n.ID); err != nil {
				return err
			}
			if err := s.recordEnabled(ctx, q, n); err != nil {
				return err
			}
		}
		out, err = nodeDetails(ctx, q, n)
		return err
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.DisableNodeResponse{Node: out}, nil
}

func (s *Server) DeleteNode(ctx context.Context, req *inventoryv1.DeleteNodeRequest) (*inventoryv1.DeleteNodeResponse, error) {
	if err := checkName("id", req.GetId()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	err := s.store.InTx(ctx, func(q *inventory.Queries) error {
		// The enrollment goes with the node: the event keeps which EK it was bound to.
		detail := map[string]any{}
		switch e, err := q.GetEnrollment(ctx, req.GetId()); {
		case err == nil:
			detail["ek_sha256"] = hexString(e.EKSHA256)
		case !errors.Is(err, inventory.ErrNotFound):
			return err
		}
		if err := q.DeleteNode(ctx, req.GetId()); err != nil {
			return err
		}
		return s.record(ctx, q, inventory.Event{NodeID: req.GetId(), Kind: "node.deleted", Detail: detail})
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.DeleteNodeResponse{}, nil
}

// nodeFromProto checks a node given to CreateNode; output-only fields are ignored.
func nodeFromProto(n *inventoryv1.Node) (inventory.Node, error) {
	if n == nil {
		return inventory.Node{}, invalidf("node is required")
	}
	if err := checkName("node.id", n.GetId()); err != nil {
		return inventory.Node{}, err
	}
	mac, err := parseMAC("node.mac", n.GetMac())
	if err != nil {
		return inventory.Node{}, err
	}
	if err := checkHostname("node.hostname", n.GetHostname()); err != nil {
		return inventory.Node{}, err
	}
	if err := checkText("node.description", n.GetDescription(), maxDescription); err != nil {
		return inventory.Node{}, err
	}
	return inventory.Node{ID: n.GetId(), MAC: mac, Hostname: n.GetHostname(), Enabled: n.GetEnabled(), Description: n.GetDescription()}, nil
}

func nodeProto(n inventory.Node, groups []string, enrolled bool) *inventoryv1.Node {
	out := &inventoryv1.Node{
		Id:          n.ID,
		Hostname:    n.Hostname,
		Enabled:     n.Enabled,
		Description: n.Description,
		Groups:      groups,
		Enrolled:    enrolled,
		CreateTime:  timestamppb.New(n.CreatedAt),
		UpdateTime:  timestamppb.New(n.UpdatedAt),
	}
	if len(n.MAC) > 0 {
		out.Mac = n.MAC.String()
	}
	if !n.LastBootAt.IsZero() {
		out.LastBootTime = timestamppb.New(n.LastBootAt)
	}
	return out
}

func nodeDetails(ctx context.Context, q *inventory.Queries, n inventory.Node) (*inventoryv1.Node, error) {
	out, err := nodesDetails(ctx, q, []inventory.Node{n})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// nodesDetails converts nodes, adding their groups and whether they are enrolled: two queries
// per page, whatever its size.
func nodesDetails(ctx context.Context, q *inventory.Queries, nodes []inventory.Node) ([]*inventoryv1.Node, error) {
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ID
	}
	groups, err := q.GroupNamesOfNodes(ctx, ids)
	if err != nil {
		return nil, err
	}
	enrolled, err := q.EnrolledNodes(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*inventoryv1.Node, len(nodes))
	for i, n := range nodes {
		out[i] = nodeProto(n, groups[n.ID], enrolled[n.ID])
	}
	return out, nil
}
