package grpcserver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Principal is the authenticated caller of an admin method.
type Principal struct {
	// Name is the client certificate identity (common name or URI SAN) or "token".
	Name string
	// Via is "certificate" or "token".
	Via string
}

func (p Principal) String() string { return p.Via + ":" + p.Name }

type principalKey struct{}

// PrincipalFromContext returns the admin who made the call, for audit records. Node-facing calls
// have none.
func PrincipalFromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// policy decides which methods are admin-only and who is an admin.
type policy struct {
	// methods and services map a method ("/pkg.Svc/M") or a service ("pkg.Svc") to whether it is
	// admin-only. A method missing from both is admin-only.
	methods    map[string]bool
	services   map[string]bool
	identities []string
	// tokenHash is the SHA-256 of the admin token, nil when token login is off. Comparing hashes
	// keeps the comparison constant-time in the token's length too.
	tokenHash []byte
}

func newPolicy(cfg Config, token string) (*policy, error) {
	p := &policy{
		methods:    make(map[string]bool),
		services:   make(map[string]bool),
		identities: cfg.AdminIdentities,
	}
	add := func(entry string, admin bool) error {
		svc, method, err := parseEntry(entry)
		if err != nil {
			return err
		}
		target, key := p.services, svc
		if method != "" {
			target, key = p.methods, "/"+svc+"/"+method
		}
		if prev, ok := target[key]; ok && prev != admin {
			return fmt.Errorf("grpcserver: %q is listed as both node-facing and admin", entry)
		}
		target[key] = admin
		return nil
	}
	for _, e := range cfg.NodeFacing {
		if err := add(e, false); err != nil {
			return nil, err
		}
	}
	for _, e := range cfg.Admin {
		if err := add(e, true); err != nil {
			return nil, err
		}
	}
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		p.tokenHash = sum[:]
	}
	return p, nil
}

// parseEntry splits "pkg.Service" or "pkg.Service/Method" (a leading slash is allowed).
func parseEntry(entry string) (service, method string, err error) {
	s := strings.TrimPrefix(strings.TrimSpace(entry), "/")
	service, method, _ = strings.Cut(s, "/")
	if service == "" || !strings.Contains(service, ".") || strings.ContainsAny(s, " \t") || strings.Contains(method, "/") ||
		(strings.Contains(s, "/") && method == "") {
		return "", "", fmt.Errorf("grpcserver: %q is neither a full service name (pkg.Service) nor a full method name (pkg.Service/Method)", entry)
	}
	return service, method, nil
}

// isAdmin classifies a full method name ("/pkg.Service/Method"): a method entry beats a service
// entry, and what neither names is admin-only (fail closed).
func (p *policy) isAdmin(fullMethod string) bool {
	if admin, ok := p.methods[fullMethod]; ok {
		return admin
	}
	svc, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if admin, ok := p.services[svc]; ok {
		return admin
	}
	// Health checks come from load balancers and orchestrators that hold no admin credential.
	return svc != grpc_health_v1.Health_ServiceDesc.ServiceName
}

// checkRegistered refuses policy entries that name no registered service or method, because a
// misspelt Admin entry would leave the method it meant node-facing.
func (p *policy) checkRegistered(info map[string]grpc.ServiceInfo) error {
	for svc := range p.services {
		if _, ok := info[svc]; !ok {
			return fmt.Errorf("grpcserver: policy names service %s, which is not registered", svc)
		}
	}
	for m := range p.methods {
		svc, name, _ := strings.Cut(strings.TrimPrefix(m, "/"), "/")
		si, ok := info[svc]
		if !ok || !slices.ContainsFunc(si.Methods, func(mi grpc.MethodInfo) bool { return mi.Name == name }) {
			return fmt.Errorf("grpcserver: policy names method %s, which is not registered", m)
		}
	}
	return nil
}

// authenticate decides whether the caller of an admin method is an admin.
//
//   - A verified client certificate (the TLS layer checked its chain) with an admin identity: OK.
//   - A bearer token: OK if it equals the admin token; otherwise Unauthenticated, because a wrong
//     or malformed token is a failed authentication (gRPC reserves PermissionDenied for callers
//     whose identity is known but not allowed).
//   - A verified client certificate with another identity: PermissionDenied.
//   - No credential: Unauthenticated.
//
// Error messages name no credential value.
func (p *policy) authenticate(ctx context.Context) (Principal, error) {
	certID := ""
	if pr, ok := peer.FromContext(ctx); ok {
		if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			leaf := ti.State.VerifiedChains[0][0]
			ids := []string{leaf.Subject.CommonName}
			for _, u := range leaf.URIs {
				ids = append(ids, u.String())
			}
			for _, id := range ids {
				if id != "" && slices.Contains(p.identities, id) {
					return Principal{Name: id, Via: "certificate"}, nil
				}
			}
			certID = leaf.Subject.CommonName
		}
	}

	md, _ := metadata.FromIncomingContext(ctx)
	if values := md.Get("authorization"); len(values) > 0 {
		if len(values) > 1 {
			return Principal{}, status.Error(codes.Unauthenticated, "more than one authorization header")
		}
		scheme, token, ok := strings.Cut(values[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
			return Principal{}, status.Error(codes.Unauthenticated, "authorization must be a bearer token")
		}
		if p.tokenHash == nil {
			return Principal{}, status.Error(codes.Unauthenticated, "bearer tokens are not accepted by this server")
		}
		sum := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(sum[:], p.tokenHash) != 1 {
			return Principal{}, status.Error(codes.Unauthenticated, "invalid admin token")
		}
		return Principal{Name: "token", Via: "token"}, nil
	}

	if certID != "" {
		return Principal{}, status.Errorf(codes.PermissionDenied, "client certificate %q is not an admin identity", certID)
	}
	return Principal{}, status.Error(codes.Unauthenticated, "admin credential required: an admin client certificate or a bearer token")
}

func (p *policy) unaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := p.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func (p *policy) streamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := p.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
	}
}

// authorize lets node-facing calls through and authenticates admin calls, returning a context
// that carries the Principal.
func (p *policy) authorize(ctx context.Context, fullMethod string) (context.Context, error) {
	if !p.isAdmin(fullMethod) {
		return ctx, nil
	}
	who, err := p.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if rec := recordFromContext(ctx); rec != nil {
		rec.principal = who.String()
	}
	return context.WithValue(ctx, principalKey{}, who), nil
}

// contextStream replaces the context of a server stream.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// BearerToken returns per-call credentials that send token as `authorization: Bearer <token>`,
// for admin clients. They refuse to travel over a connection without TLS.
func BearerToken(token string) credentials.PerRPCCredentials { return bearerToken(token) }

type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return true }
