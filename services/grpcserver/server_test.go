package grpcserver_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/logging"
	"github.com/attestboot/attestboot/services/logging/loggingtest"
	"github.com/attestboot/attestboot/services/metrics"
	"github.com/attestboot/attestboot/services/pki"
)

const adminToken = "correct-horse-battery-staple-0123"

// testService: EmptyCall and the streams are node-facing, UnaryCall and StreamingInputCall admin
// (see policy in setup); CacheableUnaryCall and StreamingOutputCall panic; FullDuplexCall blocks
// until its stream ends.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (testService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

func (testService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	who, _ := grpcserver.PrincipalFromContext(ctx)
	return &testgrpc.SimpleResponse{Payload: req.GetPayload(), Username: who.String()}, nil
}

func (testService) CacheableUnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	panic("handler bug")
}

func (testService) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	if err := stream.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
		return err
	}
	panic("stream handler bug")
}

func (testService) StreamingInputCall(stream testgrpc.TestService_StreamingInputCallServer) error {
	n := 0
	for {
		_, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(n)})
		}
		if err != nil {
			return err
		}
		n++
	}
}

func (testService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	<-stream.Context().Done()
	return stream.Context().Err()
}

// secretsService registers loggingtest's dynamic Secrets service, whose requests carry
// debug_redact and bytes fields. No policy entry names it: it is admin-only by default.
func secretsService(t *testing.T) *grpc.ServiceDesc {
	t.Helper()
	reqMD, respMD, err := loggingtest.Messages()
	require.NoError(t, err)
	return &grpc.ServiceDesc{
		ServiceName: loggingtest.ServiceName,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Put",
			Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
				in := dynamicpb.NewMessage(reqMD)
				if err := dec(in); err != nil {
					return nil, err
				}
				handle := func(_ context.Context, req any) (any, error) {
					out := dynamicpb.NewMessage(respMD)
					name := req.(protoreflect.ProtoMessage).ProtoReflect().Get(reqMD.Fields().ByName("name"))
					out.Set(respMD.Fields().ByName("name"), name)
					return out, nil
				}
				return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: loggingtest.PutMethod}, handle)
			},
		}},
	}
}

// lockedBuffer is an io.Writer for a logger used by concurrent calls.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type env struct {
	addr   string
	bundle *pki.Bundle
	logs   *lockedBuffer
	reg    *prometheus.Registry
	stop   func() error // cancels Serve and returns its result
}

func setup(t *testing.T, mutate func(*grpcserver.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin-token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600))
	cfg := grpcserver.Config{
		StateDir:       filepath.Join(dir, "state"),
		AdminTokenFile: tokenFile,
		NodeFacing:     []string{"grpc.testing.TestService"},
		Admin:          []string{"grpc.testing.TestService/UnaryCall", "/grpc.testing.TestService/StreamingInputCall"},
		ShutdownGrace:  5 * time.Second,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	srv, err := grpcserver.New(cfg, logger, reg)
	require.NoError(t, err)
	testgrpc.RegisterTestServiceServer(srv, testService{})
	srv.RegisterService(secretsService(t), struct{}{})

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	var once sync.Once
	var result error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(30 * time.Second):
				result = fmt.Errorf("Serve did not return")
			}
		})
		return result
	}
	t.Cleanup(func() { require.NoError(t, stop()) })

	b := srv.PKI()
	if b == nil && cfg.CertFile != "" {
		b, err = pki.Load(filepath.Dir(cfg.CertFile))
		require.NoError(t, err)
	}
	return &env{addr: lis.Addr().String(), bundle: b, logs: logs, reg: reg, stop: stop}
}

func (e *env) dial(t *testing.T, tc *tls.Config, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (e *env) nodeConn(t *testing.T, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	tc, err := e.bundle.NodeClientTLS()
	require.NoError(t, err)
	return e.dial(t, tc, opts...)
}

func (e *env) adminConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	tc, err := e.bundle.AdminClientTLS()
	require.NoError(t, err)
	return e.dial(t, tc)
}

// certConn connects with a client certificate for commonName signed by the server's CA.
func (e *env) certConn(t *testing.T, commonName string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	certPEM, keyPEM, err := e.bundle.IssueClientCert(commonName, time.Hour)
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	tc, err := e.bundle.NodeClientTLS()
	require.NoError(t, err)
	tc.Certificates = []tls.Certificate{pair}
	return e.dial(t, tc, opts...)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNodeFacingNeedsOnlyServerTLS(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	client := testgrpc.NewTestServiceClient(e.nodeConn(t))
	_, err := client.EmptyCall(ctxT(t), &testgrpc.Empty{})
	require.NoError(t, err)
	require.Contains(t, e.logs.String(), `msg="grpc call" grpc.method=/grpc.testing.TestService/EmptyCall grpc.code=OK`)
}

func TestAdminAuthorization(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	withToken := func(tok string) grpc.DialOption { return grpc.WithPerRPCCredentials(grpcserver.BearerToken(tok)) }
	withHeader := func(v string) grpc.DialOption {
		return grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", v), method, req, reply, cc, opts...)
		})
	}
	const wrongToken = "wrong-token-but-long-enough-xyz"

	cases := []struct {
		name      string
		conn      func(t *testing.T) *grpc.ClientConn
		code      codes.Code
		principal string
	}{
		{"no credential", func(t *testing.T) *grpc.ClientConn { return e.nodeConn(t) }, codes.Unauthenticated, ""},
		{"non-admin client certificate", func(t *testing.T) *grpc.ClientConn { return e.certConn(t, "node-7") }, codes.PermissionDenied, ""},
		{"admin client certificate", func(t *testing.T) *grpc.ClientConn { return e.adminConn(t) }, codes.OK, "certificate:attestboot-admin"},
		{"admin token", func(t *testing.T) *grpc.ClientConn { return e.nodeConn(t, withToken(adminToken)) }, codes.OK, "token:token"},
		{"wrong token", func(t *testing.T) *grpc.ClientConn { return e.nodeConn(t, withToken(wrongToken)) }, codes.Unauthenticated, ""},
		{"not a bearer token", func(t *testing.T) *grpc.ClientConn { return e.nodeConn(t, withHeader("Basic "+adminToken)) }, codes.Unauthenticated, ""},
		{"non-admin certificate with admin token", func(t *testing.T) *grpc.ClientConn { return e.certConn(t, "node-7", withToken(adminToken)) }, codes.OK, "token:token"},
		{"non-admin certificate with wrong token", func(t *testing.T) *grpc.ClientConn { return e.certConn(t, "node-7", withToken(wrongToken)) }, codes.Unauthenticated, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn := tc.conn(t)
			client := testgrpc.NewTestServiceClient(conn)

			// An explicitly admin method.
			resp, err := client.UnaryCall(ctxT(t), &testgrpc.SimpleRequest{})
			require.Equal(t, tc.code, status.Code(err), "UnaryCall: %v", err)
			if tc.code == codes.OK {
				require.Equal(t, tc.principal, resp.GetUsername())
			}

			// A method of a service no policy entry names: admin-only by default.
			reqMD, respMD, err := loggingtest.Messages()
			require.NoError(t, err)
			err = conn.Invoke(ctxT(t), loggingtest.PutMethod, dynamicpb.NewMessage(reqMD), dynamicpb.NewMessage(respMD))
			require.Equal(t, tc.code, status.Code(err), "Secrets/Put: %v", err)

			// Node-facing methods stay open whatever credential comes along.
			_, err = client.EmptyCall(ctxT(t), &testgrpc.Empty{})
			require.NoError(t, err)
		})
	}

	t.Run("admin stream", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			conn *grpc.ClientConn
			code codes.Code
		}{{e.nodeConn(t), codes.Unauthenticated}, {e.adminConn(t), codes.OK}} {
			stream, err := testgrpc.NewTestServiceClient(c.conn).StreamingInputCall(ctxT(t))
			require.NoError(t, err)
			_ = stream.Send(&testgrpc.StreamingInputCallRequest{})
			resp, err := stream.CloseAndRecv()
			require.Equal(t, c.code, status.Code(err), "%v", err)
			if c.code == codes.OK {
				require.EqualValues(t, 1, resp.GetAggregatedPayloadSize())
			}
		}
	})

	t.Run("client certificate of another CA", func(t *testing.T) {
		t.Parallel()
		other, err := pki.Ensure(t.TempDir(), pki.Options{})
		require.NoError(t, err)
		pair, err := tls.LoadX509KeyPair(other.AdminCertPath, other.AdminKeyPath)
		require.NoError(t, err)
		tc, err := e.bundle.NodeClientTLS()
		require.NoError(t, err)
		// Present it even though the server did not ask for its issuer, as an attacker would.
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
		_, err = testgrpc.NewTestServiceClient(e.dial(t, tc)).EmptyCall(ctxT(t), &testgrpc.Empty{})
		require.Equal(t, codes.Unavailable, status.Code(err), "the TLS handshake fails: %v", err)
	})

	t.Cleanup(func() {
		logs := e.logs.String()
		require.NotContains(t, logs, adminToken)
		require.NotContains(t, logs, wrongToken)
		require.Contains(t, logs, "grpc.code=PermissionDenied")
		require.Contains(t, logs, "principal=certificate:attestboot-admin")
	})
}

func TestAdminIdentitiesAreConfigurable(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *grpcserver.Config) { c.AdminIdentities = []string{"ops-alice"} })
	resp, err := testgrpc.NewTestServiceClient(e.certConn(t, "ops-alice")).UnaryCall(ctxT(t), &testgrpc.SimpleRequest{})
	require.NoError(t, err)
	require.Equal(t, "certificate:ops-alice", resp.GetUsername())
	_, err = testgrpc.NewTestServiceClient(e.adminConn(t)).UnaryCall(ctxT(t), &testgrpc.SimpleRequest{})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "the default identity is replaced, not extended")
}

func TestHealthAndReflection(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	health := grpc_health_v1.NewHealthClient(e.nodeConn(t))
	for _, svc := range []string{"", "grpc.testing.TestService", loggingtest.ServiceName} {
		resp, err := health.Check(ctxT(t), &grpc_health_v1.HealthCheckRequest{Service: svc})
		require.NoError(t, err, "health is node-facing")
		require.Equal(t, grpc_health_v1.HealthCheckResponse_SERVING, resp.GetStatus(), svc)
	}

	list := func(conn *grpc.ClientConn) ([]string, error) {
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctxT(t))
		if err != nil {
			return nil, err
		}
		// A stream the server refused may fail Send with io.EOF; gRPC then reports the real
		// status on Recv.
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		return names, stream.CloseSend()
	}
	_, err := list(e.nodeConn(t))
	require.Equal(t, codes.Unauthenticated, status.Code(err), "reflection is admin-only by default: %v", err)
	names, err := list(e.adminConn(t))
	require.NoError(t, err)
	require.Contains(t, names, "grpc.testing.TestService")
	require.Contains(t, names, "grpc.health.v1.Health")
}

func TestPanicsBecomeInternal(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	client := testgrpc.NewTestServiceClient(e.nodeConn(t))

	_, err := client.CacheableUnaryCall(ctxT(t), &testgrpc.SimpleRequest{})
	require.Equal(t, codes.Internal, status.Code(err))
	require.Equal(t, "internal error", status.Convert(err).Message(), "no detail reaches the caller")

	stream, err := client.StreamingOutputCall(ctxT(t), &testgrpc.StreamingOutputCallRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Internal, status.Code(err))

	_, err = client.EmptyCall(ctxT(t), &testgrpc.Empty{})
	require.NoError(t, err, "the server survives")

	logs := e.logs.String()
	require.Contains(t, logs, `msg="panic in gRPC handler" grpc.method=/grpc.testing.TestService/CacheableUnaryCall panic="handler bug"`)
	require.Contains(t, logs, `panic="stream handler bug"`)
	require.Contains(t, logs, "goroutine ", "the stack is logged")
	require.Contains(t, logs, `level=ERROR msg="grpc call" grpc.method=/grpc.testing.TestService/CacheableUnaryCall grpc.code=Internal`)
}

func TestRequestLogRedactsSecrets(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	const marker = "M4RKER-never-logged"
	key := []byte("wireguard-private-key-material-" + marker)
	req, err := loggingtest.NewPutRequest(loggingtest.Values{Name: "x3000c0s1b0n0", Marker: marker, Key: key, Note: "visible", ItemsLen: 1})
	require.NoError(t, err)
	_, respMD, err := loggingtest.Messages()
	require.NoError(t, err)
	resp := dynamicpb.NewMessage(respMD)
	require.NoError(t, e.adminConn(t).Invoke(ctxT(t), loggingtest.PutMethod, req, resp))
	require.Equal(t, "x3000c0s1b0n0", resp.Get(respMD.Fields().ByName("name")).String())

	logs := e.logs.String()
	t.Log(logs)
	require.NotContains(t, logs, marker)
	require.NotContains(t, logs, "wireguard-private-key")
	line := ""
	for l := range strings.Lines(logs) {
		if strings.Contains(l, "grpc.method="+loggingtest.PutMethod) {
			line = l
		}
	}
	require.NotEmpty(t, line)
	for _, want := range []string{
		"level=INFO", "grpc.code=OK", "duration=", "peer=127.0.0.1:", "principal=certificate:attestboot-admin",
		`name:\"x3000c0s1b0n0\"`, "value:[REDACTED]", fmt.Sprintf("key:<%d bytes>", len(key)), "pin:[REDACTED]",
		"hidden:[REDACTED]", "kind:[REDACTED]",
	} {
		require.Contains(t, line, want)
	}
	// The redaction used by the log is the exported one.
	require.Contains(t, line, strings.ReplaceAll(logging.Redact(req), `"`, `\"`))
}

func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	client := testgrpc.NewTestServiceClient(e.nodeConn(t))
	for range 2 {
		_, err := client.EmptyCall(ctxT(t), &testgrpc.Empty{})
		require.NoError(t, err)
	}
	_, err := client.UnaryCall(ctxT(t), &testgrpc.SimpleRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- metrics.Serve(ctx, lis, e.reg, nil) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	resp, err := http.Get("http://" + lis.Addr().String() + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	page := string(body)
	require.Contains(t, page, `grpc_server_handled_total{grpc_code="OK",grpc_method="EmptyCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 2`)
	require.Contains(t, page, `grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 1`)
	require.Contains(t, page, `grpc_server_handling_seconds_bucket{grpc_method="EmptyCall",grpc_service="grpc.testing.TestService",grpc_type="unary",le="+Inf"} 2`)
}

func TestGracefulShutdownCutsOffAfterGrace(t *testing.T) {
	t.Parallel()
	const grace = 300 * time.Millisecond
	e := setup(t, func(c *grpcserver.Config) { c.ShutdownGrace = grace })
	conn := e.nodeConn(t)
	client := testgrpc.NewTestServiceClient(conn)
	stream, err := client.FullDuplexCall(ctxT(t))
	require.NoError(t, err)
	_, err = client.EmptyCall(ctxT(t), &testgrpc.Empty{}) // the stream is open once a call on the same connection succeeds
	require.NoError(t, err)

	start := time.Now()
	require.NoError(t, e.stop(), "a shutdown through ctx is not an error")
	took := time.Since(start)
	require.GreaterOrEqual(t, took, grace, "waited for the call in flight")
	require.Less(t, took, grace+5*time.Second, "then cut it off")

	_, err = stream.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	_, err = testgrpc.NewTestServiceClient(e.nodeConn(t)).EmptyCall(ctxT(t), &testgrpc.Empty{}, grpc.WaitForReady(false))
	require.Error(t, err, "no longer serving")
	require.Contains(t, e.logs.String(), "cutting them off")
}

func TestGracefulShutdownWithoutCallsIsQuick(t *testing.T) {
	t.Parallel()
	e := setup(t, nil) // 5 s grace
	_, err := testgrpc.NewTestServiceClient(e.nodeConn(t)).EmptyCall(ctxT(t), &testgrpc.Empty{})
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, e.stop())
	require.Less(t, time.Since(start), 2*time.Second)
	require.Contains(t, e.logs.String(), `msg="gRPC server stopped"`)
}

func TestOperatorProvidedFiles(t *testing.T) {
	t.Parallel()
	// An operator's files: here, those of a PKI made elsewhere.
	b, err := pki.Ensure(t.TempDir(), pki.Options{})
	require.NoError(t, err)
	e := setup(t, func(c *grpcserver.Config) {
		c.StateDir = ""
		c.CertFile, c.KeyFile, c.ClientCAFile = b.ServerCertPath, b.ServerKeyPath, b.CACertPath
	})
	resp, err := testgrpc.NewTestServiceClient(e.adminConn(t)).UnaryCall(ctxT(t), &testgrpc.SimpleRequest{})
	require.NoError(t, err)
	require.Equal(t, "certificate:attestboot-admin", resp.GetUsername())
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	shortToken := filepath.Join(dir, "short")
	require.NoError(t, os.WriteFile(shortToken, []byte("short\n"), 0o600))
	cases := map[string]grpcserver.Config{
		"no TLS source":       {},
		"two TLS sources":     {StateDir: dir, InsecurePlaintextForTests: true},
		"cert without key":    {CertFile: "cert.pem"},
		"short token":         {StateDir: dir, AdminToken: "short"},
		"short token file":    {StateDir: dir, AdminTokenFile: shortToken},
		"token and file":      {StateDir: dir, AdminToken: adminToken, AdminTokenFile: shortToken},
		"bad policy name":     {StateDir: dir, NodeFacing: []string{"Attestor"}},
		"bad method name":     {StateDir: dir, Admin: []string{"pkg.Svc/"}},
		"listed in both":      {StateDir: dir, NodeFacing: []string{"pkg.Svc"}, Admin: []string{"/pkg.Svc"}},
		"missing token file":  {StateDir: dir, AdminTokenFile: filepath.Join(dir, "nope")},
		"hosts without state": {InsecurePlaintextForTests: true, Hosts: []string{"a"}},
	}
	for name, cfg := range cases {
		_, err := grpcserver.New(cfg, nil, nil)
		require.Error(t, err, name)
		require.NotContains(t, err.Error(), adminToken, name)
	}
}

func TestServeRefusesPolicyNamingUnregisteredMethods(t *testing.T) {
	t.Parallel()
	for _, entry := range []string{"grpc.testing.TestService/UnaryCal", "grpc.testing.TestServic"} {
		srv, err := grpcserver.New(grpcserver.Config{
			InsecurePlaintextForTests: true,
			NodeFacing:                []string{"grpc.testing.TestService"},
			Admin:                     []string{entry},
		}, nil, nil)
		require.NoError(t, err)
		testgrpc.RegisterTestServiceServer(srv, testService{})
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		err = srv.Serve(context.Background(), lis)
		require.ErrorContains(t, err, "not registered", entry)
	}
}
