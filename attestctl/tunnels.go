package attestctl

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
)

func runTunnels(a *app, args []string) error {
	return a.sub("tunnels", args, map[string]func([]string) error{
		"list":  a.tunnelsList,
		"close": a.tunnelsClose,
	})
}

func stateName(s tunnelmgrv1.TunnelState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "TUNNEL_STATE_"))
}

func parseState(s string) (tunnelmgrv1.TunnelState, error) {
	v, ok := tunnelmgrv1.TunnelState_value["TUNNEL_STATE_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, usagef("tunnel state %q: want open, closed, expired or failed", s)
	}
	return tunnelmgrv1.TunnelState(v), nil
}

func (a *app) tunnelsList(args []string) error {
	fs := a.flags("tunnels list", "tunnels list [--node ID] [--state open,closed,expired,failed] [--gateway NAME]")
	node := fs.String("node", "", "only this node's tunnels")
	states := fs.String("state", "", "only tunnels in these `states` (comma-separated)")
	gateway := fs.String("gateway", "", "only this gateway's tunnels")
	limit := fs.Int("limit", 1000, "at most this many tunnels, newest first")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	req := &tunnelmgrv1.ListTunnelsRequest{NodeId: *node, Gateway: *gateway, PageSize: 1000}
	for s := range strings.SplitSeq(*states, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		st, err := parseState(s)
		if err != nil {
			return err
		}
		req.States = append(req.States, st)
	}
	var all []*tunnelmgrv1.Tunnel
	for len(all) < *limit {
		var res *tunnelmgrv1.ListTunnelsResponse
		err := a.tun("list tunnels", func(ctx context.Context, c tunnelmgrv1.TunnelAdminServiceClient) (err error) {
			res, err = c.ListTunnels(ctx, req)
			return err
		})
		if err != nil {
			return err
		}
		all = append(all, res.GetTunnels()...)
		if req.PageToken = res.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	if len(all) > *limit {
		all = all[:*limit]
	}
	if a.cfg.JSON {
		return a.printProto(&tunnelmgrv1.ListTunnelsResponse{Tunnels: all})
	}
	t := a.table("ID", "NODE", "GATEWAY", "ADDRESSES", "STATE", "OPENED", "EXPIRES", "CLOSED", "REASON")
	for _, tu := range all {
		t.row(tu.GetId(), tu.GetNodeId(), tu.GetGateway(), strings.Join(tu.GetAddresses(), ","), stateName(tu.GetState()),
			fmtTime(tu.GetOpenTime()), fmtTime(tu.GetExpireTime()), fmtTime(tu.GetCloseTime()), tu.GetCloseReason())
	}
	return t.flush()
}

func (a *app) tunnelsClose(args []string) error {
	fs := a.flags("tunnels close", "tunnels close (--node ID | --id TUNNEL) [--reason R]")
	node := fs.String("node", "", "close this node's open tunnel")
	id := fs.String("id", "", "close the tunnel with this `id`")
	reason := fs.String("reason", "admin", "why, recorded on the tunnel and in the event log ([a-z0-9_.-], 1-64 characters)")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	req := &tunnelmgrv1.CloseTunnelRequest{Reason: *reason}
	switch {
	case (*node == "") == (*id == ""):
		return usagef("tunnels close: give exactly one of --node and --id")
	case *node != "":
		req.Target = &tunnelmgrv1.CloseTunnelRequest_NodeId{NodeId: *node}
	default:
		req.Target = &tunnelmgrv1.CloseTunnelRequest_TunnelId{TunnelId: *id}
	}
	var res *tunnelmgrv1.CloseTunnelResponse
	err := a.tun("close tunnel", func(ctx context.Context, c tunnelmgrv1.TunnelAdminServiceClient) (err error) {
		res, err = c.CloseTunnel(ctx, req)
		return err
	})
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return a.printProto(res.GetTunnel())
	}
	tu := res.GetTunnel()
	_, err = fmt.Fprintf(a.env.Stdout, "tunnel %s of %s: %s (%s)\n", tu.GetId(), tu.GetNodeId(), stateName(tu.GetState()), tu.GetCloseReason())
	return err
}

func runGateway(a *app, args []string) error {
	return a.sub("gateway", args, map[string]func([]string) error{"status": a.gatewayStatus})
}

func (a *app) gatewayStatus(args []string) error {
	fs := a.flags("gateway status", "gateway status [--gateway NAME]")
	name := fs.String("gateway", "", "gateway `name` (default: the one the tunnelmgr at -tunnelmgr runs)")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	var res *tunnelmgrv1.GetGatewayStatusResponse
	err := a.tun("gateway status", func(ctx context.Context, c tunnelmgrv1.TunnelAdminServiceClient) (err error) {
		res, err = c.GetGatewayStatus(ctx, &tunnelmgrv1.GetGatewayStatusRequest{Gateway: *name})
		return err
	})
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return a.printProto(res.GetGateway())
	}
	g := res.GetGateway()
	t := a.table()
	t.row("gateway:", g.GetName())
	t.row("public key:", base64.StdEncoding.EncodeToString(g.GetPublicKey()))
	t.row("endpoint:", g.GetEndpoint())
	t.row("pools:", strings.Join(g.GetPools(), ","))
	t.row("open tunnels:", strconv.FormatInt(g.GetOpenTunnels(), 10))
	t.row("peers on device:", strconv.FormatInt(g.GetPeerCount(), 10))
	if err := t.flush(); err != nil {
		return err
	}
	if len(g.GetPeers()) == 0 {
		return nil
	}
	fmt.Fprintln(a.env.Stdout)
	t = a.table("NODE", "TUNNEL", "PUBLIC KEY", "ALLOWED IPS", "ENDPOINT", "LAST HANDSHAKE", "RX", "TX")
	for _, p := range g.GetPeers() {
		node := p.GetNodeId()
		if node == "" {
			node = "(unknown)"
		}
		t.row(node, p.GetTunnelId(), base64.StdEncoding.EncodeToString(p.GetPublicKey()), strings.Join(p.GetAllowedIps(), ","),
			p.GetEndpoint(), fmtTime(p.GetLastHandshakeTime()), strconv.FormatInt(p.GetReceiveBytes(), 10), strconv.FormatInt(p.GetTransmitBytes(), 10))
	}
	return t.flush()
}
