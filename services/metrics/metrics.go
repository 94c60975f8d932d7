// Package metrics exposes Prometheus metrics of the attestboot services: gRPC server interceptors
// counting and timing every call, the /metrics handler, and a small HTTP server to serve it.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// NewRegistry returns a registry with the Go runtime and process collectors, what a service
// process registers its own metrics into.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// GRPC holds the gRPC server metrics. The names and labels are those of go-grpc-middleware's
// Prometheus provider, so existing dashboards and alerts work unchanged.
type GRPC struct {
	started *prometheus.CounterVec
	handled *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// NewGRPC creates the gRPC server metrics and registers them with reg (nil: not registered).
//
//   - grpc_server_started_total{grpc_type,grpc_service,grpc_method}
//   - grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}
//   - grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method} (histogram)
func NewGRPC(reg prometheus.Registerer) (*GRPC, error) {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	m := &GRPC{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total",
			Help: "Total number of RPCs started on the server.",
		}, labels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "Total number of RPCs completed on the server, regardless of success or failure.",
		}, append(labels, "grpc_code")),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "grpc_server_handling_seconds",
			Help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			// From 1 ms (a refused call) to 30 s (a TPM quote on a slow node behind a loaded attestor).
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, labels),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.started, m.handled, m.latency} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("metrics: register gRPC metrics: %w", err)
			}
		}
	}
	return m, nil
}

// UnaryServerInterceptor counts and times unary calls.
func (m *GRPC) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		done := m.start("unary", info.FullMethod)
		resp, err := handler(ctx, req)
		done(err)
		return resp, err
	}
}

// StreamServerInterceptor counts and times streaming calls (the whole stream is one call).
func (m *GRPC) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		typ := "bidi_stream"
		switch {
		case info.IsClientStream && !info.IsServerStream:
			typ = "client_stream"
		case !info.IsClientStream && info.IsServerStream:
			typ = "server_stream"
		}
		done := m.start(typ, info.FullMethod)
		err := handler(srv, ss)
		done(err)
		return err
	}
}

func (m *GRPC) start(typ, fullMethod string) func(error) {
	service, method := SplitMethod(fullMethod)
	m.started.WithLabelValues(typ, service, method).Inc()
	begin := time.Now()
	return func(err error) {
		m.handled.WithLabelValues(typ, service, method, status.Code(err).String()).Inc()
		m.latency.WithLabelValues(typ, service, method).Observe(time.Since(begin).Seconds())
	}
}

// SplitMethod splits a gRPC full method name "/pkg.Service/Method" into service and method.
func SplitMethod(fullMethod string) (service, method string) {
	s := strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndex(s, "/"); i >= 0 {
		return s[:i], s[i+1:]
	}
	return "unknown", s
}

// Handler returns the /metrics handler for g (a *prometheus.Registry is both a Registerer and a
// Gatherer). Errors while gathering are served as HTTP 500 rather than a partial page.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
}

// shutdownTimeout bounds how long Serve waits for scrapes in flight when ctx ends.
const shutdownTimeout = 5 * time.Second

// Serve serves /metrics of g (and Go profiles under /debug/pprof/) on lis until ctx ends, then shuts the server down gracefully.
// It returns nil after a shutdown through ctx, the server's error otherwise.
func Serve(ctx context.Context, lis net.Listener, g prometheus.Gatherer, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", Handler(g))
	// Profiles share the metrics listener, which is loopback by default: operators and the
	// boot-storm benchmark read them where they read the metrics.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	logger.Info("metrics server listening", "addr", lis.Addr().String())

	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve: %w", err)
	}
	return nil
}

// ListenAndServe listens on addr (host:port) and runs Serve.
func ListenAndServe(ctx context.Context, addr string, g prometheus.Gatherer, logger *slog.Logger) error {
	lis, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return Serve(ctx, lis, g, logger)
}
