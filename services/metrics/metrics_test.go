package metrics_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attestboot/attestboot/services/metrics"
)

func TestSplitMethod(t *testing.T) {
	t.Parallel()
	s, m := metrics.SplitMethod("/attestboot.attestor.v1.Attestor/BeginAttestation")
	require.Equal(t, "attestboot.attestor.v1.Attestor", s)
	require.Equal(t, "BeginAttestation", m)
	s, m = metrics.SplitMethod("weird")
	require.Equal(t, "unknown", s)
	require.Equal(t, "weird", m)
}

type fakeStream struct{ grpc.ServerStream }

func TestInterceptorsCountAndTime(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.NewGRPC(reg)
	require.NoError(t, err)

	unary := m.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/pkg.Svc/Get"}
	for _, code := range []codes.Code{codes.OK, codes.OK, codes.NotFound} {
		_, _ = unary(context.Background(), nil, info, func(context.Context, any) (any, error) {
			if code == codes.OK {
				return "ok", nil
			}
			return nil, status.Error(code, "nope")
		})
	}
	stream := m.StreamServerInterceptor()
	err = stream(nil, fakeStream{}, &grpc.StreamServerInfo{FullMethod: "/pkg.Svc/Watch", IsServerStream: true},
		func(any, grpc.ServerStream) error { return errors.New("plain error") })
	require.Error(t, err)

	page := scrape(t, metrics.Handler(reg))
	for _, line := range []string{
		`grpc_server_handled_total{grpc_code="NotFound",grpc_method="Get",grpc_service="pkg.Svc",grpc_type="unary"} 1`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Get",grpc_service="pkg.Svc",grpc_type="unary"} 2`,
		`grpc_server_handled_total{grpc_code="Unknown",grpc_method="Watch",grpc_service="pkg.Svc",grpc_type="server_stream"} 1`,
		`grpc_server_started_total{grpc_method="Get",grpc_service="pkg.Svc",grpc_type="unary"} 3`,
		`grpc_server_handling_seconds_count{grpc_method="Get",grpc_service="pkg.Svc",grpc_type="unary"} 3`,
		`grpc_server_handling_seconds_count{grpc_method="Watch",grpc_service="pkg.Svc",grpc_type="server_stream"} 1`,
	} {
		require.Contains(t, page, line+"\n")
	}

	_, err = metrics.NewGRPC(reg)
	require.Error(t, err, "registering twice in one registry is reported, not a panic")
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}

func TestServeExposesMetricsAndStops(t *testing.T) {
	t.Parallel()
	reg := metrics.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "attestboot_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- metrics.Serve(ctx, lis, reg, nil) }()

	resp, err := http.Get("http://" + lis.Addr().String() + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), "attestboot_test_total 3")
	require.Contains(t, string(body), "go_goroutines", "runtime collector registered")

	resp, err = http.Post("http://"+lis.Addr().String()+"/metrics", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("metrics server did not stop")
	}
	_, err = net.DialTimeout("tcp", lis.Addr().String(), time.Second)
	require.Error(t, err, "listener closed after shutdown")
}
