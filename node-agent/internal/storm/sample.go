package storm

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"

	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/procstat"
)

// PeerSample is one reading of the gateway during the storm.
type PeerSample struct {
	// At is the time from the storm's start, in seconds.
	At          float64 `json:"t_s"`
	Peers       int64   `json:"peers"`
	OpenTunnels int64   `json:"open_tunnels"`
}

// gatewayStatus is what the sampler needs of the tunnel manager's admin API;
// tunnelmgrv1.TunnelAdminServiceClient implements it.
type gatewayStatus interface {
	GetGatewayStatus(ctx context.Context, in *tunnelmgrv1.GetGatewayStatusRequest, opts ...grpc.CallOption) (*tunnelmgrv1.GetGatewayStatusResponse, error)
}

// sampler reads the gateway's peers and the services' memory every period until stopped. The
// two loops are separate so that a slow GetGatewayStatus under load does not thin out the
// memory readings.
type sampler struct {
	start  time.Time
	period time.Duration
	pids   map[string]int
	gw     gatewayStatus // nil: no peer count

	mu         sync.Mutex
	peers      []PeerSample
	peerErrors int
	peakRSS    map[string]int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startSampler(ctx context.Context, start time.Time, period time.Duration, pids map[string]int, gw gatewayStatus) *sampler {
	s := &sampler{start: start, period: period, pids: pids, gw: gw, peakRSS: map[string]int64{}}
	ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Go(func() { s.loop(ctx, s.readRSS) })
	if gw != nil {
		s.wg.Go(func() { s.loop(ctx, s.readPeers) })
	}
	return s
}

// stop ends the sampling and takes one last reading of each kind.
func (s *sampler) stop() {
	s.cancel()
	s.wg.Wait()
	s.readRSS(context.Background())
	if s.gw != nil {
		s.readPeers(context.Background())
	}
}

func (s *sampler) loop(ctx context.Context, read func(context.Context)) {
	t := time.NewTicker(s.period)
	defer t.Stop()
	for {
		read(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sampler) readRSS(context.Context) {
	for name, pid := range s.pids {
		if name == Postgres {
			continue // shared buffers would count once per backend; the services' memory is the question
		}
		st, err := procstat.Read(pid)
		if err != nil {
			continue
		}
		s.mu.Lock()
		s.peakRSS[name] = max(s.peakRSS[name], st.RSS)
		s.mu.Unlock()
	}
}

func (s *sampler) readPeers(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	at := time.Since(s.start).Seconds()
	resp, err := s.gw.GetGatewayStatus(ctx, &tunnelmgrv1.GetGatewayStatusRequest{})
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			s.peerErrors++
		}
		return
	}
	g := resp.GetGateway()
	s.peers = append(s.peers, PeerSample{At: at, Peers: g.GetPeerCount(), OpenTunnels: g.GetOpenTunnels()})
}

// peak returns the highest peer and open tunnel counts seen.
func peak(samples []PeerSample) (peers, open int64) {
	for _, p := range samples {
		peers, open = max(peers, p.Peers), max(open, p.OpenTunnels)
	}
	return peers, open
}
