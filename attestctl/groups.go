package attestctl

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
)

func runGroups(a *app, args []string) error {
	return a.sub("groups", args, map[string]func([]string) error{
		"list":       a.groupsList,
		"get":        a.groupsGet,
		"create":     a.groupsCreate,
		"update":     a.groupsUpdate,
		"delete":     a.groupsDelete,
		"add":        func(args []string) error { return a.groupsMembers("add", args) },
		"remove":     func(args []string) error { return a.groupsMembers("remove", args) },
		"pcr-policy": a.groupsPCRPolicy,
	})
}

func pcrSummary(g *inventoryv1.Group) string {
	var idx []string
	for _, p := range g.GetPcrPolicy() {
		idx = append(idx, strconv.Itoa(int(p.GetIndex())))
	}
	return strings.Join(idx, ",")
}

func (a *app) groupsList(args []string) error {
	fs := a.flags("groups list", "groups list")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	var res *inventoryv1.ListGroupsResponse
	err := a.inv("list groups", func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
		res, err = c.ListGroups(ctx, &inventoryv1.ListGroupsRequest{})
		return err
	})
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return a.printProto(res)
	}
	t := a.table("NAME", "PRIORITY", "TOFU", "PCRS", "DESCRIPTION")
	for _, g := range res.GetGroups() {
		t.row(g.GetName(), strconv.Itoa(int(g.GetPriority())), yesNo(g.GetTrustOnFirstUse()), pcrSummary(g), g.GetDescription())
	}
	return t.flush()
}

func (a *app) printGroup(g *inventoryv1.Group, members []string) error {
	if a.cfg.JSON {
		if members == nil {
			return a.printProto(g)
		}
		return a.printJSON(map[string]any{"group": protoAsJSON(g), "members": members})
	}
	t := a.table()
	t.row("name:", g.GetName())
	t.row("priority:", strconv.Itoa(int(g.GetPriority())))
	t.row("trust on first use:", yesNo(g.GetTrustOnFirstUse()))
	t.row("description:", g.GetDescription())
	for _, p := range g.GetPcrPolicy() {
		t.row(fmt.Sprintf("pcr %d:", p.GetIndex()), hex.EncodeToString(p.GetSha256()))
	}
	if members != nil {
		t.row("members:", fmt.Sprintf("%d %s", len(members), strings.Join(members, ",")))
	}
	t.row("created:", fmtTime(g.GetCreateTime()))
	t.row("updated:", fmtTime(g.GetUpdateTime()))
	return t.flush()
}

func (a *app) groupsGet(args []string) error {
	fs := a.flags("groups get", "groups get GROUP")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	var res *inventoryv1.GetGroupResponse
	err = a.inv("get group "+pos[0], func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
		res, err = c.GetGroup(ctx, &inventoryv1.GetGroupRequest{Name: pos[0]})
		return err
	})
	if err != nil {
		return err
	}
	members := []string{}
	req := &inventoryv1.ListGroupMembersRequest{Group: pos[0], PageSize: 1000}
	for {
		var page *inventoryv1.ListGroupMembersResponse
		err := a.inv("list members of "+pos[0], func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
			page, err = c.ListGroupMembers(ctx, req)
			return err
		})
		if err != nil {
			return err
		}
		members = append(members, page.GetNodeIds()...)
		if req.PageToken = page.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	return a.printGroup(res.GetGroup(), members)
}

// groupFlags registers the settable fields of a group.
func groupFlags(fs *flag.FlagSet, g *inventoryv1.Group) {
	fs.Func("priority", "`priority`: higher wins when a node's groups disagree", func(s string) error {
		p, err := strconv.ParseInt(s, 10, 32)
		g.Priority = int32(p)
		return err
	})
	fs.StringVar(&g.Description, "description", "", "free `text`")
	fs.BoolVar(&g.TrustOnFirstUse, "trust-on-first-use", false, "enroll members without an enrollment with the first EK they present (explicit, logged opt-in)")
}

func (a *app) groupsCreate(args []string) error {
	fs := a.flags("groups create", "groups create GROUP [--priority N] [--description D] [--trust-on-first-use]")
	g := &inventoryv1.Group{}
	groupFlags(fs, g)
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	g.Name = pos[0]
	var res *inventoryv1.CreateGroupResponse
	err = a.inv("create group "+g.Name, func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
		res, err = c.CreateGroup(ctx, &inventoryv1.CreateGroupRequest{Group: g})
		return err
	})
	if err != nil {
		return err
	}
	return a.printGroup(res.GetGroup(), nil)
}

func (a *app) updateGroup(g *inventoryv1.Group, mask []string) error {
	var res *inventoryv1.UpdateGroupResponse
	err := a.inv("update group "+g.GetName(), func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
		res, err = c.UpdateGroup(ctx, &inventoryv1.UpdateGroupRequest{Group: g, UpdateMask: &fieldmaskpb.FieldMask{Paths: mask}})
		return err
	})
	if err != nil {
		return err
	}
	return a.printGroup(res.GetGroup(), nil)
}

func (a *app) groupsUpdate(args []string) error {
	fs := a.flags("groups update", "groups update GROUP [--priority N] [--description D] [--trust-on-first-use=true|false]")
	g := &inventoryv1.Group{}
	groupFlags(fs, g)
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	g.Name = pos[0]
	var mask []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "json" {
			mask = append(mask, strings.ReplaceAll(f.Name, "-", "_"))
		}
	})
	if len(mask) == 0 {
		return usagef("groups update: nothing to change: give --priority, --description or --trust-on-first-use")
	}
	return a.updateGroup(g, mask)
}

func (a *app) groupsDelete(args []string) error {
	fs := a.flags("groups delete", "groups delete GROUP")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	err = a.inv("delete group "+pos[0], func(ctx context.Context, c inventoryv1.InventoryServiceClient) error {
		_, err := c.DeleteGroup(ctx, &inventoryv1.DeleteGroupRequest{Name: pos[0]})
		return err
	})
	if err != nil {
		return err
	}
	return a.done(map[string]any{"deleted": pos[0]}, "deleted group %s", pos[0])
}

func (a *app) groupsMembers(verb string, args []string) error {
	fs := a.flags("groups "+verb, "groups "+verb+" GROUP NODE...")
	pos, err := parse(fs, args, 2, -1)
	if err != nil {
		return err
	}
	group, nodes := pos[0], pos[1:]
	err = a.inv(verb+" members of "+group, func(ctx context.Context, c inventoryv1.InventoryServiceClient) error {
		if verb == "add" {
			_, err := c.AddGroupMembers(ctx, &inventoryv1.AddGroupMembersRequest{Group: group, NodeIds: nodes})
			return err
		}
		_, err := c.RemoveGroupMembers(ctx, &inventoryv1.RemoveGroupMembersRequest{Group: group, NodeIds: nodes})
		return err
	})
	if err != nil {
		return err
	}
	past := map[string]string{"add": "added %d nodes to %s", "remove": "removed %d nodes from %s"}[verb]
	return a.done(map[string]any{"group": group, verb: nodes}, past, len(nodes), group)
}

// parsePCRPolicy parses "0=HEX,7=HEX" (also as several arguments); an empty list clears it.
func parsePCRPolicy(args []string) ([]*inventoryv1.PCRValue, error) {
	var out []*inventoryv1.PCRValue
	seen := map[uint64]bool{}
	for _, arg := range args {
		for item := range strings.SplitSeq(arg, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			is, hs, ok := strings.Cut(item, "=")
			idx, err := strconv.ParseUint(strings.TrimSpace(is), 10, 8)
			if !ok || err != nil || idx > 23 {
				return nil, fmt.Errorf("PCR %q: want INDEX=HEX with INDEX 0-23", item)
			}
			sum, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(hs), "0x"))
			if err != nil || len(sum) != 32 {
				return nil, fmt.Errorf("PCR %d: want the 64 hex digits of the SHA-256 bank value", idx)
			}
			if seen[idx] {
				return nil, fmt.Errorf("PCR %d given twice", idx)
			}
			seen[idx] = true
			out = append(out, &inventoryv1.PCRValue{Index: uint32(idx), Sha256: sum})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out, nil
}

func (a *app) groupsPCRPolicy(args []string) error {
	if len(args) == 0 || (args[0] != "set" && args[0] != "clear") {
		return usagef("groups pcr-policy: want `set GROUP 0=HEX,7=HEX` or `clear GROUP`")
	}
	verb := args[0]
	fs := a.flags("groups pcr-policy "+verb, "groups pcr-policy set GROUP INDEX=HEX,... | groups pcr-policy clear GROUP")
	min, max := 2, -1
	if verb == "clear" {
		min, max = 1, 1
	}
	pos, err := parse(fs, args[1:], min, max)
	if err != nil {
		return err
	}
	policy, err := parsePCRPolicy(pos[1:])
	if err != nil {
		return usagef("groups pcr-policy: %v", err)
	}
	if verb == "set" && len(policy) == 0 {
		return usagef("groups pcr-policy set: no PCR values (use `clear` to remove the policy)")
	}
	return a.updateGroup(&inventoryv1.Group{Name: pos[0], PcrPolicy: policy}, []string{"pcr_policy"})
}
