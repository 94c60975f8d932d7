package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/inventory"
)

// toStatus is the one place store errors become gRPC codes for the admin API.
func (s *Server) toStatus(ctx context.Context, op string, err error) error {
	switch {
	case errors.Is(err, inventory.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s: not found", op)
	case errors.Is(err, inventory.ErrInvalid):
		return status.Errorf(codes.InvalidArgument, "%s: %v", op, err)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, op)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, op)
	}
	s.logger.ErrorContext(ctx, op, "err", err)
	return status.Errorf(codes.Internal, "%s: internal error", op)
}

// CloseTunnel ends a tunnel (by id, or a node's open one), records why and removes the peer.
func (a adminAPI) CloseTunnel(ctx context.Context, req *tunnelmgrv1.CloseTunnelRequest) (*tunnelmgrv1.CloseTunnelResponse, error) {
	s := a.s
	if !reasonPattern.MatchString(req.GetReason()) {
		return nil, status.Error(codes.InvalidArgument, "reason must be 1 to 64 characters of [a-z0-9_.-]")
	}
	var (
		t       inventory.Tunnel
		changed bool
	)
	// Closes come in crowds (every node of a storm phones home within seconds): they share
	// commits.
	err := s.store.GroupTx(ctx, func(q *inventory.Queries) error {
		var err error
		switch target := req.GetTarget().(type) {
		case *tunnelmgrv1.CloseTunnelRequest_TunnelId:
			if _, perr := uuid.Parse(target.TunnelId); perr != nil {
				return fmt.Errorf("tunnel id: %w", inventory.ErrInvalid)
			}
			t, err = q.GetTunnel(ctx, target.TunnelId)
		case *tunnelmgrv1.CloseTunnelRequest_NodeId:
			t, err = q.OpenTunnelOfNode(ctx, target.NodeId)
		default:
			return fmt.Errorf("tunnel_id or node_id is required: %w", inventory.ErrInvalid)
		}
		if err != nil {
			return err
		}
		if t, changed, err = q.CloseTunnel(ctx, t.ID, inventory.TunnelClosed, req.GetReason()); err != nil || !changed {
			return err
		}
		detail := map[string]any{"tunnel_id": t.ID, "gateway": t.Gateway}
		if p, ok := grpcserver.PrincipalFromContext(ctx); ok {
			detail["by"] = p.String()
		}
		_, err = q.AppendEvent(ctx, inventory.Event{
			NodeID: t.NodeID, Kind: KindClosed, Service: "tunnelmgr", Reason: req.GetReason(), Detail: detail,
		})
		return err
	})
	if err != nil {
		return nil, s.toStatus(ctx, "close tunnel", err)
	}
	if changed {
		s.metrics.closes.Inc()
		s.releaseAddress(t)
		// Another gateway's peer is removed by that gateway's reconciler, woken by the change.
		if t.Gateway == s.cfg.Info.Name {
			if err := s.cfg.Gateway.RemovePeer(t); err != nil {
				s.logger.WarnContext(ctx, "remove peer; the reconciler will retry", "tunnel", t.ID, "err", err)
			}
		}
	}
	return &tunnelmgrv1.CloseTunnelResponse{Tunnel: toProto(t)}, nil
}

// ListTunnels pages through tunnels, newest first.
func (a adminAPI) ListTunnels(ctx context.Context, req *tunnelmgrv1.ListTunnelsRequest) (*tunnelmgrv1.ListTunnelsResponse, error) {
	s := a.s
	if req.GetPageSize() < 0 || req.GetPageSize() > inventory.MaxPageSize {
		return nil, status.Errorf(codes.InvalidArgument, "page_size must be 0 to %d", inventory.MaxPageSize)
	}
	f := inventory.TunnelFilter{NodeID: req.GetNodeId(), Gateway: req.GetGateway(), After: req.GetPageToken(), Limit: int(req.GetPageSize())}
	for _, st := range req.GetStates() {
		state, ok := states[st]
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "unknown state %v", st)
		}
		f.States = append(f.States, state)
	}
	ts, next, err := s.store.ListTunnels(ctx, f)
	if err != nil {
		return nil, s.toStatus(ctx, "list tunnels", err)
	}
	resp := &tunnelmgrv1.ListTunnelsResponse{NextPageToken: next}
	for _, t := range ts {
		resp.Tunnels = append(resp.Tunnels, toProto(t))
	}
	return resp, nil
}

// GetGatewayStatus reads this instance's device.
func (a adminAPI) GetGatewayStatus(ctx context.Context, req *tunnelmgrv1.GetGatewayStatusRequest) (*tunnelmgrv1.GetGatewayStatusResponse, error) {
	s := a.s
	if name := req.GetGateway(); name != "" && name != s.cfg.Info.Name {
		return nil, status.Errorf(codes.FailedPrecondition, "this instance serves gateway %q; ask the instance of %q", s.cfg.Info.Name, name)
	}
	peers, err := s.cfg.Gateway.Peers()
	if err != nil {
		return nil, s.toStatus(ctx, "read gateway device", err)
	}
	open, err := s.store.OpenTunnels(ctx, s.cfg.Info.Name)
	if err != nil {
		return nil, s.toStatus(ctx, "list open tunnels", err)
	}
	byKey := make(map[string]inventory.Tunnel, len(open))
	for _, t := range open {
		byKey[string(t.WireGuardPublicKey)] = t
	}
	g := s.cfg.Info
	st := &tunnelmgrv1.GatewayStatus{
		Name: g.Name, PublicKey: g.PublicKey, Endpoint: g.Endpoint,
		OpenTunnels: int64(len(open)), PeerCount: int64(len(peers)),
	}
	for _, p := range []netip.Prefix{g.IPv4Pool, g.IPv6Pool} {
		if p.IsValid() {
			st.Pools = append(st.Pools, p.String())
		}
	}
	for _, p := range peers {
		ps := &tunnelmgrv1.PeerStatus{
			PublicKey: p.PublicKey[:], ReceiveBytes: p.ReceiveBytes, TransmitBytes: p.TransmitBytes,
		}
		if t, ok := byKey[string(p.PublicKey[:])]; ok {
			ps.NodeId, ps.TunnelId = t.NodeID, t.ID
		}
		for _, n := range p.AllowedIPs {
			ps.AllowedIps = append(ps.AllowedIps, n.String())
		}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.String()
		}
		if !p.LastHandshakeTime.IsZero() && p.LastHandshakeTime.After(time.Unix(0, 0)) {
			ps.LastHandshakeTime = timestamppb.New(p.LastHandshakeTime)
		}
		st.Peers = append(st.Peers, ps)
	}
	return &tunnelmgrv1.GetGatewayStatusResponse{Gateway: st}, nil
}

var states = map[tunnelmgrv1.TunnelState]inventory.TunnelState{
	tunnelmgrv1.TunnelState_TUNNEL_STATE_OPEN:    inventory.TunnelOpen,
	tunnelmgrv1.TunnelState_TUNNEL_STATE_CLOSED:  inventory.TunnelClosed,
	tunnelmgrv1.TunnelState_TUNNEL_STATE_EXPIRED: inventory.TunnelExpired,
	tunnelmgrv1.TunnelState_TUNNEL_STATE_FAILED:  inventory.TunnelFailed,
}

func toProto(t inventory.Tunnel) *tunnelmgrv1.Tunnel {
	out := &tunnelmgrv1.Tunnel{
		Id: t.ID, NodeId: t.NodeID, Gateway: t.Gateway, WireguardPublicKey: t.WireGuardPublicKey,
		Addresses: addressStrings(t), OpenTime: timestamppb.New(t.OpenedAt), ExpireTime: timestamppb.New(t.ExpiresAt),
		CloseReason: t.CloseReason,
	}
	for k, v := range states {
		if v == t.State {
			out.State = k
		}
	}
	if !t.ClosedAt.IsZero() {
		out.CloseTime = timestamppb.New(t.ClosedAt)
	}
	if !t.PhonedHomeAt.IsZero() {
		out.PhoneHomeTime = timestamppb.New(t.PhonedHomeAt)
	}
	return out
}
