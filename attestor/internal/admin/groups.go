package admin

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"

	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/inventory"
)

// Fields UpdateGroup may change.
var groupMaskFields = []string{"priority", "description", "trust_on_first_use", "pcr_policy"}

func (s *Server) CreateGroup(ctx context.Context, req *inventoryv1.CreateGroupRequest) (*inventoryv1.CreateGroupResponse, error) {
	g, policy, err := groupFromProto(req.GetGroup())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var out *inventoryv1.Group
	err = s.store.InTx(ctx, func(q *inventory.Queries) error {
		created, err := q.CreateGroup(ctx, g)
		if err != nil {
			return err
		}
		if len(policy) > 0 {
			if err := q.SetPCRPolicy(ctx, g.Name, policy); err != nil {
				return err
			}
		}
		out = groupProto(created, policy)
		err = s.record(ctx, q, inventory.Event{Kind: "group.created", Detail: map[string]any{
			"group": g.Name, "priority": g.Priority, "trust_on_first_use": g.TrustOnFirstUse, "pcr_policy": policyDetail(policy),
		}})
		if err != nil {
			return err
		}
		// The opt-in and the pin get the events an auditor filters on, as later changes do.
		if g.TrustOnFirstUse {
			if err := s.recordTOFU(ctx, q, g.Name, false, true); err != nil {
				return err
			}
		}
		if len(policy) > 0 {
			return s.recordPCRPolicy(ctx, q, g.Name, nil, policy)
		}
		return nil
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.CreateGroupResponse{Group: out}, nil
}

func (s *Server) GetGroup(ctx context.Context, req *inventoryv1.GetGroupRequest) (*inventoryv1.GetGroupResponse, error) {
	if err := checkName("name", req.GetName()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	g, err := s.store.GetGroup(ctx, req.GetName())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	policy, err := s.store.GetPCRPolicy(ctx, g.Name)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.GetGroupResponse{Group: groupProto(g, policy)}, nil
}

func (s *Server) ListGroups(ctx context.Context, _ *inventoryv1.ListGroupsRequest) (*inventoryv1.ListGroupsResponse, error) {
	groups, err := s.store.ListGroups(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	slices.SortStableFunc(groups, func(a, b inventory.Group) int {
		return cmp.Or(cmp.Compare(b.Priority, a.Priority), cmp.Compare(a.Name, b.Name))
	})
	out := make([]*inventoryv1.Group, len(groups))
	for i, g := range groups {
		// One query per group: groups are tens, not thousands.
		policy, err := s.store.GetPCRPolicy(ctx, g.Name)
		if errors.Is(err, inventory.ErrNotFound) {
			policy = nil // deleted since the list was read
		} else if err != nil {
			return nil, s.toStatus(ctx, err)
		}
		out[i] = groupProto(g, policy)
	}
	return &inventoryv1.ListGroupsResponse{Groups: out}, nil
}

func (s *Server) UpdateGroup(ctx context.Context, req *inventoryv1.UpdateGroupRequest) (*inventoryv1.UpdateGroupResponse, error) {
	name, u, policy, fields, err := groupUpdate(req)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var out *inventoryv1.Group
	err = s.store.InTx(ctx, func(q *inventory.Queries) error {
		before, err := q.GetGroup(ctx, name)
		if err != nil {
			return err
		}
		oldPolicy, err := q.GetPCRPolicy(ctx, name)
		if err != nil {
			return err
		}
		// Even a mask naming only pcr_policy goes through UpdateGroup, which stamps update_time.
		after, err := q.UpdateGroup(ctx, name, u)
		if err != nil {
			return err
		}
		newPolicy := oldPolicy
		if fields["pcr_policy"] {
			if err := q.SetPCRPolicy(ctx, name, policy); err != nil {
				return err
			}
			newPolicy = policy
		}
		if before.TrustOnFirstUse != after.TrustOnFirstUse {
			if err := s.recordTOFU(ctx, q, name, before.TrustOnFirstUse, after.TrustOnFirstUse); err != nil {
				return err
			}
		}
		if !policiesEqual(oldPolicy, newPolicy) {
			if err := s.recordPCRPolicy(ctx, q, name, oldPolicy, newPolicy); err != nil {
				return err
			}
		}
		out = groupProto(after, newPolicy)
		return nil
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.UpdateGroupResponse{Group: out}, nil
}

func groupUpdate(req *inventoryv1.UpdateGroupRequest) (string, inventory.GroupUpdate, inventory.PCRPolicy, map[string]bool, error) {
	var u inventory.GroupUpdate
	g := req.GetGroup()
	if g == nil {
		return "", u, nil, nil, invalidf("group is required")
	}
	if err := checkName("group.name", g.GetName()); err != nil {
		return "", u, nil, nil, err
	}
	fields, err := maskPaths(req.GetUpdateMask(), groupMaskFields...)
	if err != nil {
		return "", u, nil, nil, err
	}
	if fields["priority"] {
		p := int(g.GetPriority())
		u.Priority = &p
	}
	if fields["description"] {
		if err := checkText("group.description", g.GetDescription(), maxDescription); err != nil {
			return "", u, nil, nil, err
		}
		u.Description = &g.Description
	}
	if fields["trust_on_first_use"] {
		u.TrustOnFirstUse = &g.TrustOnFirstUse
	}
	var policy inventory.PCRPolicy
	if fields["pcr_policy"] {
		if policy, err = pcrPolicy("group.pcr_policy", g.GetPcrPolicy()); err != nil {
			return "", u, nil, nil, err
		}
	}
	return g.GetName(), u, policy, fields, nil
}

func (s *Server) DeleteGroup(ctx context.Context, req *inventoryv1.DeleteGroupRequest) (*inventoryv1.DeleteGroupResponse, error) {
	if err := checkName("name", req.GetName()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	err := s.store.InTx(ctx, func(q *inventory.Queries) error {
		// Deleting a group lifts its PCR pins and trust on first use from its members: the
		// event keeps what was lifted.
		g, err := q.GetGroup(ctx, req.GetName())
		if err != nil {
			return err
		}
		policy, err := q.GetPCRPolicy(ctx, g.Name)
		if err != nil {
			return err
		}
		if err := q.DeleteGroup(ctx, g.Name); err != nil {
			return err
		}
		return s.record(ctx, q, inventory.Event{Kind: "group.deleted", Detail: map[string]any{
			"group": g.Name, "trust_on_first_use": g.TrustOnFirstUse, "pcr_policy": policyDetail(policy),
		}})
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.DeleteGroupResponse{}, nil
}

func (s *Server) AddGroupMembers(ctx context.Context, req *inventoryv1.AddGroupMembersRequest) (*inventoryv1.AddGroupMembersResponse, error) {
	if err := checkName("group", req.GetGroup()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	ids, err := memberIDs(req.GetNodeIds())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	err = s.store.InTx(ctx, func(q *inventory.Queries) error {
		// Checked first so that a missing group is not reported as a missing node.
		if _, err := q.GetGroup(ctx, req.GetGroup()); err != nil {
			return err
		}
		for _, id := range ids {
			// A missing node rolls the whole call back: all exist, or nothing changes.
			if err := q.AddGroupMember(ctx, req.GetGroup(), id); err != nil {
				return err
			}
		}
		// Membership decides which PCR policy and trust on first use apply to a node.
		return s.record(ctx, q, inventory.Event{Kind: "group.members_added", Detail: map[string]any{
			"group": req.GetGroup(), "node_ids": ids,
		}})
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.AddGroupMembersResponse{}, nil
}

func (s *Server) RemoveGroupMembers(ctx context.Context, req *inventoryv1.RemoveGroupMembersRequest) (*inventoryv1.RemoveGroupMembersResponse, error) {
	if err := checkName("group", req.GetGroup()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	ids, err := memberIDs(req.GetNodeIds())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	err = s.store.InTx(ctx, func(q *inventory.Queries) error {
		if _, err := q.GetGroup(ctx, req.GetGroup()); err != nil {
			return err
		}
		var removed []string
		for _, id := range ids {
			switch err := q.RemoveGroupMember(ctx, req.GetGroup(), id); {
			case err == nil:
				removed = append(removed, id)
			case errors.Is(err, inventory.ErrNotFound):
				// Not a member (or no such node): removal is idempotent.
			default:
				return err
			}
		}
		if len(removed) == 0 {
			return nil
		}
		return s.record(ctx, q, inventory.Event{Kind: "group.members_removed", Detail: map[string]any{
			"group": req.GetGroup(), "node_ids": removed,
		}})
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.RemoveGroupMembersResponse{}, nil
}

func (s *Server) ListGroupMembers(ctx context.Context, req *inventoryv1.ListGroupMembersRequest) (*inventoryv1.ListGroupMembersResponse, error) {
	if err := checkName("group", req.GetGroup()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	filter := filterDigest(req.GetGroup())
	after, err := decodePageToken(req.GetPageToken(), "ListGroupMembers", filter)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if after != "" && !nameRE.MatchString(after) {
		return nil, s.toStatus(ctx, invalidf("page_token: not a token returned by a previous ListGroupMembers call"))
	}
	// The store's ListNodes pages by id within a group; the group is looked up first because
	// an empty page would not tell a missing group from an empty one.
	if _, err := s.store.GetGroup(ctx, req.GetGroup()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	nodes, next, err := s.store.ListNodes(ctx, inventory.NodeFilter{Group: req.GetGroup(), After: after, Limit: limit})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &inventoryv1.ListGroupMembersResponse{NodeIds: make([]string, len(nodes))}
	for i, n := range nodes {
		resp.NodeIds[i] = n.ID
	}
	if next != "" {
		resp.NextPageToken = encodePageToken("ListGroupMembers", next, filter)
	}
	return resp, nil
}

func (s *Server) recordTOFU(ctx context.Context, q *inventory.Queries, group string, before, after bool) error {
	return s.record(ctx, q, inventory.Event{Kind: "group.trust_on_first_use", Detail: map[string]any{
		"group": group, "enabled": after, "previous": before,
	}})
}

func (s *Server) recordPCRPolicy(ctx context.Context, q *inventory.Queries, group string, before, after inventory.PCRPolicy) error {
	return s.record(ctx, q, inventory.Event{Kind: "group.pcr_policy", Detail: map[string]any{
		"group": group, "pcr_policy": policyDetail(after), "previous": policyDetail(before),
	}})
}

// groupFromProto checks a group given to CreateGroup; output-only fields are ignored.
func groupFromProto(g *inventoryv1.Group) (inventory.Group, inventory.PCRPolicy, error) {
	if g == nil {
		return inventory.Group{}, nil, invalidf("group is required")
	}
	if err := checkName("group.name", g.GetName()); err != nil {
		return inventory.Group{}, nil, err
	}
	if err := checkText("group.description", g.GetDescription(), maxDescription); err != nil {
		return inventory.Group{}, nil, err
	}
	policy, err := pcrPolicy("group.pcr_policy", g.GetPcrPolicy())
	if err != nil {
		return inventory.Group{}, nil, err
	}
	return inventory.Group{
		Name: g.GetName(), Priority: int(g.GetPriority()), Description: g.GetDescription(), TrustOnFirstUse: g.GetTrustOnFirstUse(),
	}, policy, nil
}

func groupProto(g inventory.Group, policy inventory.PCRPolicy) *inventoryv1.Group {
	out := &inventoryv1.Group{
		Name:            g.Name,
		Priority:        int32(g.Priority),
		Description:     g.Description,
		TrustOnFirstUse: g.TrustOnFirstUse,
		CreateTime:      timestamppb.New(g.CreatedAt),
		UpdateTime:      timestamppb.New(g.UpdatedAt),
	}
	for _, pcr := range slices.Sorted(maps.Keys(policy)) {
		out.PcrPolicy = append(out.PcrPolicy, &inventoryv1.PCRValue{Index: uint32(pcr), Sha256: policy[pcr]})
	}
	return out
}

// policyDetail renders a PCR policy for an event: PCR index to hex value.
func policyDetail(p inventory.PCRPolicy) map[string]any {
	out := make(map[string]any, len(p))
	for pcr, v := range p {
		out[strconv.Itoa(pcr)] = hexString(v)
	}
	return out
}

func policiesEqual(a, b inventory.PCRPolicy) bool {
	return maps.EqualFunc(a, b, func(x, y []byte) bool { return string(x) == string(y) })
}
