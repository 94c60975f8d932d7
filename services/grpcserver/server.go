package grpcserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/attestboot/attestboot/services/config"
	"github.com/attestboot/attestboot/services/metrics"
	"github.com/attestboot/attestboot/services/pki"
	"github.com/attestboot/attestboot/services/reuseport"
)

// Server is a gRPC server with the attestboot plumbing installed. Register services on it (it is
// a grpc.ServiceRegistrar) before calling Serve.
type Server struct {
	cfg    Config
	logger *slog.Logger
	grpc   *grpc.Server
	health *health.Server
	policy *policy
	bundle *pki.Bundle
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

// connReadBuffer is each connection's read buffer (gRPC's default is 32 KiB). Larger messages
// (admin uploads) are read in more calls, not refused.
const connReadBuffer = 8 << 10

// New builds the server: it loads or creates the TLS material (see Config), reads the admin
// token, registers the gRPC metrics with reg (nil: not registered) and installs, outermost first,
// the request logging, metrics, panic recovery and admin authorization interceptors, so that logs
// and metrics see every refusal and every recovered panic. opts are appended to the server's
// options (their interceptors run inside the authorization).
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer, opts ...grpc.ServerOption) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}

	token := cfg.AdminToken
	if cfg.AdminTokenFile != "" {
		t, err := config.ReadSecretFile(cfg.AdminTokenFile)
		if err != nil {
			return nil, fmt.Errorf("grpcserver: admin token: %w", err)
		}
		if len(t) < minTokenLength {
			return nil, fmt.Errorf("grpcserver: the admin token in %s must be at least %d characters", cfg.AdminTokenFile, minTokenLength)
		}
		token = t
	}
	pol, err := newPolicy(cfg, token)
	if err != nil {
		return nil, err
	}

	s := &Server{cfg: cfg, logger: logger, policy: pol, health: health.NewServer()}
	creds, err := s.transportCredentials()
	if err != nil {
		return nil, err
	}
	m, err := metrics.NewGRPC(reg)
	if err != nil {
		return nil, err
	}
	rl := requestLogger{logger: logger}
	rc := recoverer{logger: logger}
	s.grpc = grpc.NewServer(append([]grpc.ServerOption{
		grpc.Creds(creds),
		grpc.ConnectionTimeout(cfg.HandshakeTimeout),
		// A storm holds a connection per waiting node (10,000 at once), and each would keep a
		// 32 KiB read buffer for its whole life (write buffers are pooled already). A smaller
		// one fits any request of these services (an attestation request, with its EK
		// certificate, is a few KiB).
		grpc.ReadBufferSize(connReadBuffer),
		grpc.ChainUnaryInterceptor(rl.unary(), m.UnaryServerInterceptor(), rc.unary(), pol.unaryInterceptor()),
		grpc.ChainStreamInterceptor(rl.stream(), m.StreamServerInterceptor(), rc.stream(), pol.streamInterceptor()),
	}, opts...)...)
	grpc_health_v1.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	return s, nil
}

func (s *Server) transportCredentials() (credentials.TransportCredentials, error) {
	c := s.cfg
	switch {
	case c.TLS != nil:
		return credentials.NewTLS(c.TLS), nil
	case c.CertFile != "":
		tc, err := pki.ServerTLSFromFiles(c.CertFile, c.KeyFile, c.ClientCAFile)
		if err != nil {
			return nil, err
		}
		return credentials.NewTLS(tc), nil
	case c.StateDir != "":
		b, err := pki.Ensure(c.StateDir, pki.Options{Hosts: c.Hosts})
		if err != nil {
			return nil, err
		}
		tc, err := b.ServerTLS()
		if err != nil {
			return nil, err
		}
		s.bundle = b
		return credentials.NewTLS(tc), nil
	default:
		s.logger.Warn("gRPC server without TLS: for tests only, admin tokens travel in clear text")
		return insecure.NewCredentials(), nil
	}
}

// RegisterService registers a service implementation; generated RegisterXServer functions accept
// the Server directly.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
}

// GRPC returns the underlying grpc.Server.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Health returns the health service, so a service can report NOT_SERVING while, say, its database
// is unreachable.
func (s *Server) Health() *health.Server { return s.health }

// PKI returns the development PKI, or nil when TLS comes from elsewhere.
func (s *Server) PKI() *pki.Bundle { return s.bundle }

// Serve serves on lis until ctx ends, then reports NOT_SERVING, stops accepting calls, waits up
// to ShutdownGrace for calls in flight and cuts off what remains. It returns nil after a shutdown
// through ctx and an error if serving fails or the method policy names something that is not
// registered. A Server serves once.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	if err := s.policy.checkRegistered(s.grpc.GetServiceInfo()); err != nil {
		lis.Close()
		return err
	}
	for name := range s.grpc.GetServiceInfo() {
		s.health.SetServingStatus(name, grpc_health_v1.HealthCheckResponse_SERVING)
	}

	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(lis) }()
	s.logger.Info("gRPC server listening", "addr", lis.Addr().String(), "config", s.cfg)

	select {
	case err := <-errc:
		return fmt.Errorf("grpcserver: serve: %w", err)
	case <-ctx.Done():
	}

	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(s.cfg.ShutdownGrace)
	defer timer.Stop()
	select {
	case <-stopped:
		s.logger.Info("gRPC server stopped")
	case <-timer.C:
		s.logger.Warn("gRPC calls still in flight after the shutdown grace period: cutting them off", "grace", s.cfg.ShutdownGrace)
		s.grpc.Stop()
		<-stopped
	}
	// Serve returns nil once the server is stopped.
	if err := <-errc; err != nil {
		return fmt.Errorf("grpcserver: serve: %w", err)
	}
	return nil
}

// ListenAndServe listens on Config.Listen and runs Serve.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if s.cfg.Listen == "" {
		return fmt.Errorf("grpcserver: no listen address configured")
	}
	lc := net.ListenConfig{}
	if s.cfg.ReusePort {
		lc.Control = reuseport.Control
	}
	lis, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("grpcserver: listen on %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, lis)
}
