package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/tunnelmgr/internal/addrpool"
	"github.com/attestboot/attestboot/tunnelmgr/internal/gateway"
)

// Event kinds and refusal reasons.
const (
	KindOpened  = "tunnel.opened"
	KindClosed  = "tunnel.closed"
	KindFailed  = "tunnel.failed"
	KindRefused = "tunnel.refused"

	ReasonInvalidRequest      = "invalid_request"
	ReasonAttestationUnknown  = "attestation_unknown"
	ReasonAttestationConsumed = "attestation_consumed"
	ReasonAttestationExpired  = "attestation_expired"
	ReasonKeyMismatch         = "key_mismatch"
	ReasonNodeDisabled        = "node_disabled"
	ReasonPoolExhausted       = "pool_exhausted"
	ReasonDeviceError         = "device_error"
)

// Config of the service.
type Config struct {
	// Gateway is this instance's gateway: its inventory row and its device.
	Gateway *gateway.Gateway
	Info    inventory.Gateway
	// TTL of a tunnel that is not closed by phone-home; default 10 min.
	TTL time.Duration
}

// Server implements TunnelManagerService and TunnelAdminService.
type Server struct {
	cfg     Config
	store   *inventory.Store
	logger  *slog.Logger
	metrics metrics
	// addrs allocates the gateway's addresses in memory (see addrpool); loaded is when it last
	// read the inventory's open tunnels.
	addrs    *addrpool.Pool
	loadedMu sync.Mutex
	loaded   time.Time
	loading  bool
	loadDone chan struct{} // closed when the load in progress ends

	node  nodeFacing
	admin adminAPI
}

type metrics struct {
	opens, closes prometheus.Counter
	refusals      *prometheus.CounterVec
}

// nodeFacing and adminAPI split the two gRPC services, which both have methods of the same
// name shape, over one Server.
type nodeFacing struct {
	tunnelmgrv1.UnsafeTunnelManagerServiceServer
	s *Server
}

type adminAPI struct {
	tunnelmgrv1.UnsafeTunnelAdminServiceServer
	s *Server
}

// New returns the service. reg may be nil.
func New(cfg Config, store *inventory.Store, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if cfg.Gateway == nil || cfg.Info.Name == "" {
		return nil, errors.New("tunnel: no gateway")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 10 * time.Minute
	}
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("tunnel: TTL %v too short", cfg.TTL)
	}
	m := metrics{
		opens: prometheus.NewCounter(prometheus.CounterOpts{Name: "attestboot_tunnel_opens_total", Help: "Tunnels opened."}),
		closes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "attestboot_tunnel_closes_total", Help: "Tunnels closed by phone-home or an admin."}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestboot_tunnel_refusals_total", Help: "OpenTunnel refusals by reason."}, []string{"reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.opens, m.closes, m.refusals} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("tunnel: register metrics: %w", err)
			}
		}
	}
	s := &Server{cfg: cfg, store: store, logger: logger, metrics: m,
		addrs: addrpool.New(cfg.Info.MaxOffset(), cfg.Info.OwnOffset())}
	s.node, s.admin = nodeFacing{s: s}, adminAPI{s: s}
	return s, nil
}

// Node is the node-facing service.
func (s *Server) Node() tunnelmgrv1.TunnelManagerServiceServer { return s.node }

// Admin is the admin service.
func (s *Server) Admin() tunnelmgrv1.TunnelAdminServiceServer { return s.admin }

// Register adds both services to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	tunnelmgrv1.RegisterTunnelManagerServiceServer(r, s.node)
	tunnelmgrv1.RegisterTunnelAdminServiceServer(r, s.admin)
}

type refusal struct {
	code   codes.Code
	reason string
	err    error
}

func (s *Server) refuse(ctx context.Context, nodeID string, r refusal, detail map[string]any) error {
	if r.code == codes.Internal {
		s.logger.ErrorContext(ctx, "open tunnel failed", "node", nodeID, "err", r.err)
		return status.Error(codes.Internal, "internal error")
	}
	s.logger.InfoContext(ctx, "tunnel refused", "node", nodeID, "reason", r.reason, "err", r.err)
	detail["gateway"] = s.cfg.Info.Name
	if err := s.store.AppendEventGrouped(ctx, inventory.Event{
		NodeID: nodeID, Kind: KindRefused, Service: "tunnelmgr", Reason: r.reason, Detail: detail,
	}); err != nil {
		s.logger.ErrorContext(ctx, "record tunnel refusal", "err", err)
		return status.Error(codes.Internal, "internal error")
	}
	s.metrics.refusals.WithLabelValues(r.reason).Inc()
	msg := "tunnel refused"
	if r.code == codes.InvalidArgument {
		msg = "invalid tunnel request"
	}
	return status.Error(r.code, msg)
}

// OpenTunnel consumes the attestation and adds the peer.
func (n nodeFacing) OpenTunnel(ctx context.Context, req *tunnelmgrv1.OpenTunnelRequest) (*tunnelmgrv1.OpenTunnelResponse, error) {
	s := n.s
	detail := map[string]any{"attestation_id": boundedString(req.GetAttestationId())}
	if _, err := uuid.Parse(req.GetAttestationId()); err != nil {
		return nil, s.refuse(ctx, "", refusal{codes.InvalidArgument, ReasonInvalidRequest, err}, detail)
	}
	if len(req.GetWireguardPublicKey()) != 32 {
		return nil, s.refuse(ctx, "", refusal{codes.InvalidArgument, ReasonInvalidRequest,
			fmt.Errorf("WireGuard key of %d bytes", len(req.GetWireguardPublicKey()))}, detail)
	}

	var (
		t      inventory.Tunnel
		nodeID string
		reused bool
		ref    *refusal
		offset int64 // taken from s.addrs; 0 when none is
	)
	if err := s.loadAddresses(ctx); err != nil {
		return nil, s.refuse(ctx, "", refusal{codes.Internal, "internal", err}, detail)
	}
	err := s.store.InTx(ctx, func(q *inventory.Queries) error {
		a, ok, err := q.ConsumeAttestationFor(ctx, req.GetAttestationId(), req.GetWireguardPublicKey())
		if err != nil {
			return err
		}
		if !ok {
			// Only refusals and retried calls read why: a boot's open is one statement here.
			nodeID, t, ref, err = s.unconsumed(ctx, q, req)
			reused = ref == nil && err == nil
			return err
		}
		nodeID = a.NodeID
		t, offset, err = s.insert(ctx, q, inventory.Tunnel{
			Gateway: s.cfg.Info.Name, NodeID: a.NodeID, AttestationID: a.ID, WireGuardPublicKey: a.WireGuardPublicKey,
		}, inventory.Event{NodeID: a.NodeID, Kind: KindOpened, Service: "tunnelmgr"})
		if errors.Is(err, inventory.ErrPoolExhausted) {
			ref = &refusal{codes.ResourceExhausted, ReasonPoolExhausted, err}
			return errRollback
		}
		return err
	})
	if offset != 0 {
		if err == nil && ref == nil {
			s.addrs.Confirm(offset)
		} else {
			s.addrs.Release(offset)
		}
	}
	if ref != nil {
		return nil, s.refuse(ctx, nodeID, *ref, detail)
	}
	if err != nil {
		return nil, s.refuse(ctx, nodeID, refusal{codes.Internal, "internal", err}, detail)
	}
	if err := s.cfg.Gateway.AddPeer(t); err != nil {
		return nil, s.fail(ctx, t, err)
	}
	if !reused {
		s.metrics.opens.Inc()
	}
	return s.response(t), nil
}

// unconsumed tells why ConsumeAttestationFor consumed nothing: the refusal, or, for a retry of
// a call whose answer was lost, the tunnel that call opened (then ref is nil).
func (s *Server) unconsumed(ctx context.Context, q *inventory.Queries, req *tunnelmgrv1.OpenTunnelRequest) (nodeID string, t inventory.Tunnel, ref *refusal, err error) {
	a, err := q.GetAttestation(ctx, req.GetAttestationId())
	if errors.Is(err, inventory.ErrNotFound) {
		return "", t, &refusal{codes.PermissionDenied, ReasonAttestationUnknown, err}, nil
	} else if err != nil {
		return "", t, nil, err
	}
	if !bytes.Equal(a.WireGuardPublicKey, req.GetWireguardPublicKey()) {
		return a.NodeID, t, &refusal{codes.PermissionDenied, ReasonKeyMismatch, errors.New("key differs from the one the quote bound")}, nil
	}
	if !a.ConsumedAt.IsZero() {
		prev, err := q.TunnelOfAttestation(ctx, a.ID)
		if err == nil && prev.State == inventory.TunnelOpen && prev.Gateway == s.cfg.Info.Name {
			return a.NodeID, prev, nil, nil
		}
		return a.NodeID, t, &refusal{codes.PermissionDenied, ReasonAttestationConsumed, errors.New("attestation already consumed")}, nil
	}
	node, err := q.GetNode(ctx, a.NodeID)
	if err != nil {
		return a.NodeID, t, nil, err
	}
	if !node.Enabled {
		return a.NodeID, t, &refusal{codes.PermissionDenied, ReasonNodeDisabled, errors.New("node is disabled")}, nil
	}
	// Expired. Not a verdict on the node: it was too slow (a storm). Like the attestor's expired
	// session, FailedPrecondition tells it to attest again.
	return a.NodeID, t, &refusal{codes.FailedPrecondition, ReasonAttestationExpired, inventory.ErrAttestationSpent}, nil
}

// maxGuesses bounds the addresses tried from the in-memory pool before the inventory decides;
// maxFallbacks the inventory's tries (each can lose its address to a guess committed first).
const (
	maxGuesses   = 3
	maxFallbacks = 10
)

// reloadEvery is how often the pool re-reads the inventory's open tunnels: addresses freed
// elsewhere (expiries, another replica) come back then.
const reloadEvery = time.Minute

// insert records t at an address from the in-memory pool; a wrong guess (another replica holds
// it) inserts nothing and costs a retry, not the transaction; after maxGuesses
// wrong guesses, or when the pool looks exhausted, the inventory's locked lowest-free search
// decides (and the pool re-reads the inventory at the next open); it too can lose its address
// to a guess committed first, and is retried. It returns the offset it took from the pool (0
// for none), for the caller to confirm or release once the transaction ends.
func (s *Server) insert(ctx context.Context, q *inventory.Queries, t inventory.Tunnel, ev inventory.Event) (inventory.Tunnel, int64, error) {
	for range maxGuesses {
		off, ok := s.addrs.Take()
		if !ok {
			break
		}
		out, err := q.OpenTunnelAt(ctx, s.cfg.Info, off, t, s.cfg.TTL, ev)
		if !errors.Is(err, inventory.ErrAddressTaken) {
			return out, off, err
		}
		s.addrs.MarkUsed(off)
		s.addrs.Scatter()
	}
	s.expireAddresses()
	var (
		out inventory.Tunnel
		err error
	)
	for range maxFallbacks {
		// The event goes with the insert: the gateway's lock is held until commit.
		err = q.Savepoint(ctx, func(q *inventory.Queries) error {
			var err error
			out, err = q.OpenTunnel(ctx, t, s.cfg.TTL, ev)
			return err
		})
		if !errors.Is(err, inventory.ErrAddressTaken) {
			break
		}
	}
	return out, 0, err
}

// loadAddresses fills the pool from the inventory's open tunnels when it never was, or not
// for reloadEvery. One open reads at a time; the others go on with the pool as it is (a stale
// pool only costs a wrong guess) — except before the very first load, which they wait for. No
// lock is held across the query: the opens waiting for one would hold database connections
// the query needs.
func (s *Server) loadAddresses(ctx context.Context) error {
	s.loadedMu.Lock()
	if s.loading || (!s.loaded.IsZero() && time.Since(s.loaded) < reloadEvery) {
		first := s.loaded.IsZero()
		done := s.loadDone
		s.loadedMu.Unlock()
		if first && done != nil {
			select {
			case <-done:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	s.loading, s.loadDone = true, make(chan struct{})
	s.loadedMu.Unlock()

	open, err := s.store.OpenTunnels(ctx, s.cfg.Info.Name)
	if err == nil {
		offs := make([]int64, 0, len(open))
		for _, t := range open {
			if off := s.cfg.Info.TunnelOffset(t); off != 0 {
				offs = append(offs, off)
			}
		}
		s.addrs.Reset(offs)
	}
	s.loadedMu.Lock()
	if err == nil {
		s.loaded = time.Now()
	}
	s.loading = false
	close(s.loadDone)
	s.loadedMu.Unlock()
	return err
}

// expireAddresses makes the next open re-read the inventory.
func (s *Server) expireAddresses() {
	s.loadedMu.Lock()
	defer s.loadedMu.Unlock()
	s.loaded = time.Time{}
}

// releaseAddress gives a closed tunnel's address back to the pool.
func (s *Server) releaseAddress(t inventory.Tunnel) {
	if t.Gateway == s.cfg.Info.Name {
		if off := s.cfg.Info.TunnelOffset(t); off != 0 {
			s.addrs.Release(off)
		}
	}
}

// errRollback ends a transaction whose refusal must leave nothing behind.
var errRollback = errors.New("rollback")

// fail marks a tunnel whose peer the device refused, so its address is released and nothing
// stays on the device.
func (s *Server) fail(ctx context.Context, t inventory.Tunnel, cause error) error {
	s.logger.ErrorContext(ctx, "add peer", "tunnel", t.ID, "node", t.NodeID, "err", cause)
	_ = s.cfg.Gateway.RemovePeer(t)
	err := s.store.InTx(ctx, func(q *inventory.Queries) error {
		if _, _, err := q.CloseTunnel(ctx, t.ID, inventory.TunnelFailed, ReasonDeviceError); err != nil {
			return err
		}
		_, err := q.AppendEvent(ctx, inventory.Event{
			NodeID: t.NodeID, Kind: KindFailed, Service: "tunnelmgr", Reason: ReasonDeviceError,
			Detail: map[string]any{"tunnel_id": t.ID, "gateway": t.Gateway},
		})
		return err
	})
	if err != nil {
		s.logger.ErrorContext(ctx, "mark tunnel failed", "tunnel", t.ID, "err", err)
	} else {
		s.releaseAddress(t)
	}
	return status.Error(codes.Unavailable, "gateway could not add the tunnel; retry")
}

func (s *Server) response(t inventory.Tunnel) *tunnelmgrv1.OpenTunnelResponse {
	g := s.cfg.Info
	resp := &tunnelmgrv1.OpenTunnelResponse{
		TunnelId:                   t.ID,
		GatewayPublicKey:           g.PublicKey,
		Endpoint:                   g.Endpoint,
		NodeAddresses:              addressStrings(t),
		MetadataUrl:                g.MetadataURL,
		PersistentKeepaliveSeconds: uint32(g.KeepaliveSeconds),
		ExpiresAt:                  timestamppb.New(t.ExpiresAt),
	}
	for _, a := range []netip.Addr{g.AddressV4, g.AddressV6} {
		if a.IsValid() {
			resp.GatewayAddresses = append(resp.GatewayAddresses, a.String())
			resp.AllowedIps = append(resp.AllowedIps, netip.PrefixFrom(a, a.BitLen()).String())
		}
	}
	return resp
}

func addressStrings(t inventory.Tunnel) []string {
	var out []string
	for _, p := range t.Addresses() {
		out = append(out, p.String())
	}
	return out
}

func boundedString(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

var reasonPattern = regexp.MustCompile(`^[a-z0-9_.-]{1,64}$`)
