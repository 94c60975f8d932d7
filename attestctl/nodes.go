package attestctl

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
)

func runNodes(a *app, args []string) error {
	return a.sub("nodes", args, map[string]func([]string) error{
		"list":    a.nodesList,
		"get":     a.nodesGet,
		"create":  a.nodesCreate,
		"update":  a.nodesUpdate,
		"disable": a.nodesDisable,
		"enable":  a.nodesEnable,
		"delete":  a.nodesDelete,
	})
}

func (a *app) nodesList(args []string) error {
	fs := a.flags("nodes list", "nodes list [--prefix P] [--group G] [--enabled true|false]")
	prefix := fs.String("prefix", "", "only node ids starting with `prefix`")
	group := fs.String("group", "", "only members of `group`")
	enabled := fs.String("enabled", "", "only enabled (true) or disabled (false) nodes")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	req := &inventoryv1.ListNodesRequest{PageSize: 1000, IdPrefix: *prefix, Group: *group}
	if *enabled != "" {
		b, err := strconv.ParseBool(*enabled)
		if err != nil {
			return usagef("nodes list: --enabled %q: want true or false", *enabled)
		}
		req.Enabled = &b
	}
	nodes, err := a.listNodes(req)
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return a.printProto(&inventoryv1.ListNodesResponse{Nodes: nodes})
	}
	t := a.table("ID", "HOSTNAME", "MAC", "ENABLED", "ENROLLED", "GROUPS", "LAST BOOT")
	for _, n := range nodes {
		t.row(n.GetId(), n.GetHostname(), n.GetMac(), yesNo(n.GetEnabled()), yesNo(n.GetEnrolled()),
			strings.Join(n.GetGroups(), ","), fmtTime(n.GetLastBootTime()))
	}
	return t.flush()
}

// listNodes pages through every node req selects.
func (a *app) listNodes(req *inventoryv1.ListNodesRequest) ([]*inventoryv1.Node, error) {
	var all []*inventoryv1.Node
	for {
		var res *inventoryv1.ListNodesResponse
		err := a.inv("list nodes", func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
			res, err = c.ListNodes(ctx, req)
			return err
		})
		if err != nil {
			return nil, err
		}
		all = append(all, res.GetNodes()...)
		if res.GetNextPageToken() == "" {
			return all, nil
		}
		req.PageToken = res.GetNextPageToken()
	}
}

func (a *app) getNode(id string) (*inventoryv1.Node, error) {
	var res *inventoryv1.GetNodeResponse
	err := a.inv("get node "+id, func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
		res, err = c.GetNode(ctx, &inventoryv1.GetNodeRequest{Id: id})
		return err
	})
	return res.GetNode(), err
}

func (a *app) printNode(n *inventoryv1.Node) error {
	if a.cfg.JSON {
		return a.printProto(n)
	}
	t := a.table()
	t.row("id:", n.GetId())
	t.row("hostname:", n.GetHostname())
	t.row("mac:", n.GetMac())
	t.row("enabled:", yesNo(n.GetEnabled()))
	t.row("enrolled:", yesNo(n.GetEnrolled()))
	t.row("groups:", strings.Join(n.GetGroups(), ","))
	t.row("description:", n.GetDescription())
	t.row("created:", fmtTime(n.GetCreateTime()))
	t.row("updated:", fmtTime(n.GetUpdateTime()))
	t.row("last boot:", fmtTime(n.GetLastBootTime()))
	return t.flush()
}

func (a *app) nodesGet(args []string) error {
	fs := a.flags("nodes get", "nodes get NODE")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	n, err := a.getNode(pos[0])
	if err != nil {
		return err
	}
	return a.printNode(n)
}

func (a *app) nodesCreate(args []string) error {
	fs := a.flags("nodes create", "nodes create NODE [--hostname H] [--mac M] [--description D] [--disabled]")
	hostname := fs.String("hostname", "", "`hostname` cloud-init sets (default: the node id)")
	mac := fs.String("mac", "", "`MAC` of the boot interface (informational)")
	desc := fs.String("description", "", "free `text`")
	disabled := fs.Bool("disabled", false, "create the node disabled")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	node := &inventoryv1.Node{Id: pos[0], Hostname: *hostname, Mac: *mac, Description: *desc, Enabled: !*disabled}
	var res *inventoryv1.CreateNodeResponse
	err = a.inv("create node "+pos[0], func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
		res, err = c.CreateNode(ctx, &inventoryv1.CreateNodeRequest{Node: node})
		return err
	})
	if err != nil {
		return err
	}
	return a.printNode(res.GetNode())
}

func (a *app) nodesUpdate(args []string) error {
	fs := a.flags("nodes update", "nodes update NODE [--hostname H] [--mac M] [--description D] [--enabled true|false]")
	node := &inventoryv1.Node{}
	fs.StringVar(&node.Hostname, "hostname", "", "new `hostname`")
	fs.StringVar(&node.Mac, "mac", "", "new `MAC` (empty clears it)")
	fs.StringVar(&node.Description, "description", "", "new `text`")
	fs.BoolVar(&node.Enabled, "enabled", false, "enable or disable the node")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	node.Id = pos[0]
	var mask []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "json" {
			mask = append(mask, f.Name)
		}
	})
	if len(mask) == 0 {
		return usagef("nodes update: nothing to change: give --hostname, --mac, --description or --enabled")
	}
	return a.updateNode(node, mask)
}

func (a *app) updateNode(node *inventoryv1.Node, mask []string) error {
	var res *inventoryv1.UpdateNodeResponse
	err := a.inv("update node "+node.GetId(), func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
		res, err = c.UpdateNode(ctx, &inventoryv1.UpdateNodeRequest{Node: node, UpdateMask: &fieldmaskpb.FieldMask{Paths: mask}})
		return err
	})
	if err != nil {
		return err
	}
	return a.printNode(res.GetNode())
}

func (a *app) nodesDisable(args []string) error {
	fs := a.flags("nodes disable", "nodes disable NODE")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	var res *inventoryv1.DisableNodeResponse
	err = a.inv("disable node "+pos[0], func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
		res, err = c.DisableNode(ctx, &inventoryv1.DisableNodeRequest{Id: pos[0]})
		return err
	})
	if err != nil {
		return err
	}
	return a.printNode(res.GetNode())
}

func (a *app) nodesEnable(args []string) error {
	fs := a.flags("nodes enable", "nodes enable NODE")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return a.updateNode(&inventoryv1.Node{Id: pos[0], Enabled: true}, []string{"enabled"})
}

func (a *app) nodesDelete(args []string) error {
	fs := a.flags("nodes delete", "nodes delete NODE")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	err = a.inv("delete node "+pos[0], func(ctx context.Context, c inventoryv1.InventoryServiceClient) error {
		_, err := c.DeleteNode(ctx, &inventoryv1.DeleteNodeRequest{Id: pos[0]})
		return err
	})
	if err != nil {
		return err
	}
	return a.done(map[string]any{"deleted": pos[0]}, "deleted node %s", pos[0])
}

// done confirms a change that returns nothing: a sentence for people, an object for scripts.
func (a *app) done(js map[string]any, format string, args ...any) error {
	if a.cfg.JSON {
		return a.printJSON(js)
	}
	_, err := fmt.Fprintf(a.env.Stdout, format+"\n", args...)
	return err
}
