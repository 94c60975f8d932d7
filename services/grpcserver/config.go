package grpcserver

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/attestboot/attestboot/services/config"
	"github.com/attestboot/attestboot/services/pki"
)

// minTokenLength rejects admin tokens short enough to guess.
const minTokenLength = 16

// Config configures a Server. Only the TLS source and the method policy need thought; the rest
// has defaults.
type Config struct {
	// Listen is the host:port of ListenAndServe. Serve takes its own listener instead.
	Listen string
	// ReusePort lets replicas on one host share Listen (see services/reuseport).
	ReusePort bool

	// TLS source, first match wins:
	//  1. TLS, a ready configuration (embedding, tests);
	//  2. CertFile and KeyFile, PEM files an operator provides, with ClientCAFile (optional) the
	//     CAs that admin client certificates must chain to;
	//  3. StateDir, where pki.Ensure keeps the development PKI, created on first start, with Hosts
	//     (DNS names, IPs) added to the server certificate;
	//  4. InsecurePlaintextForTests: no TLS at all. Only for tests: admin calls then need the token,
	//     which travels in clear text.
	TLS                       *tls.Config
	CertFile                  string
	KeyFile                   string
	ClientCAFile              string
	StateDir                  string
	Hosts                     []string
	InsecurePlaintextForTests bool

	// NodeFacing lists the services ("attestboot.attestor.v1.Attestor") and single methods
	// ("attestboot.tunnelmgr.v1.TunnelManager/OpenTunnel") that any caller may use over server
	// TLS. Every other method is admin-only: a service nobody classified fails closed. The gRPC
	// health service is node-facing by default; reflection is admin-only.
	NodeFacing []string
	// Admin lists services and methods that are admin-only. Needed only to carve an admin method
	// out of a node-facing service; a method entry beats a service entry, and a name in both lists
	// is a configuration error. Serve refuses entries of either list that name nothing registered,
	// so a typo cannot open an admin method.
	Admin []string

	// AdminIdentities are the client certificate identities (subject common name, or a URI SAN
	// such as spiffe://…) accepted for admin methods. Default: attestboot-admin.
	AdminIdentities []string
	// AdminToken is a bearer token accepted for admin methods (`authorization: Bearer <token>`),
	// at least 16 characters. AdminTokenFile reads it from a file instead. Neither is ever logged.
	// With neither set, only admin client certificates are accepted.
	AdminToken     string
	AdminTokenFile string

	// ShutdownGrace is how long Serve waits for calls in flight when its context ends before it
	// cuts them off. Default 10s.
	ShutdownGrace time.Duration
	// HandshakeTimeout bounds the TLS handshake of a new connection. Default 30s: during a
	// boot storm a saturated server (or client) takes seconds to finish handshakes, and one cut
	// off is CPU spent on both sides for nothing, to be spent again by the retry (at 10 s, a
	// 10,000-node storm had 1,931 connections cut and their nodes sent back to attest).
	HandshakeTimeout time.Duration
}

// RegisterFlags registers the operator-facing settings on fs with the current values as
// defaults: -listen, -state-dir, -tls-hosts, -tls-cert, -tls-key, -tls-client-ca,
// -admin-identities, -admin-token-file, -admin-token (environment only, see config.SecretVar),
// -shutdown-grace. The method policy is not a flag: it belongs to the service's code.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", c.Listen, "gRPC listen address, host:port")
	fs.BoolVar(&c.ReusePort, "reuse-port", c.ReusePort, "share the listen addresses with other replicas on this host (SO_REUSEPORT): the kernel spreads connections among them")
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "directory of the development PKI, created on first start; used when -tls-cert is empty")
	fs.Var((*config.StringList)(&c.Hosts), "tls-hosts", "comma-separated DNS names and IPs added to the development server certificate")
	fs.StringVar(&c.CertFile, "tls-cert", c.CertFile, "server certificate (PEM) provided by the operator")
	fs.StringVar(&c.KeyFile, "tls-key", c.KeyFile, "server private key (PEM) provided by the operator")
	fs.StringVar(&c.ClientCAFile, "tls-client-ca", c.ClientCAFile, "CA certificates (PEM) that admin client certificates must chain to, with -tls-cert")
	fs.Var((*config.StringList)(&c.AdminIdentities), "admin-identities", "comma-separated client certificate common names or URI SANs accepted as admin (default "+pki.AdminCommonName+")")
	fs.StringVar(&c.AdminTokenFile, "admin-token-file", c.AdminTokenFile, "file holding the admin bearer token")
	config.SecretVar(fs, &c.AdminToken, "admin-token", "admin bearer token")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "how long shutdown waits for calls in flight (0: 10s)")
}

func (c Config) withDefaults() Config {
	if len(c.AdminIdentities) == 0 {
		c.AdminIdentities = []string{pki.AdminCommonName}
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 30 * time.Second
	}
	return c
}

func (c Config) validate() error {
	sources := 0
	for _, set := range []bool{c.TLS != nil, c.CertFile != "" || c.KeyFile != "", c.StateDir != "", c.InsecurePlaintextForTests} {
		if set {
			sources++
		}
	}
	switch {
	case sources == 0:
		return errors.New("grpcserver: no TLS configured: set a state dir for the development PKI or a certificate and key")
	case sources > 1:
		return errors.New("grpcserver: configure exactly one TLS source (TLS, certificate files, state dir or insecure plaintext)")
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("grpcserver: a TLS certificate needs its key and a key its certificate")
	case c.ClientCAFile != "" && c.CertFile == "":
		return errors.New("grpcserver: a client CA file is used only with a certificate file")
	case len(c.Hosts) > 0 && c.StateDir == "":
		return errors.New("grpcserver: TLS hosts are used only with the development PKI (state dir)")
	case c.AdminToken != "" && c.AdminTokenFile != "":
		return errors.New("grpcserver: set the admin token or its file, not both")
	case c.AdminToken != "" && len(c.AdminToken) < minTokenLength:
		return fmt.Errorf("grpcserver: the admin token must be at least %d characters", minTokenLength)
	case c.ShutdownGrace < 0 || c.HandshakeTimeout < 0:
		return errors.New("grpcserver: timeouts must not be negative")
	}
	for _, id := range c.AdminIdentities {
		if strings.TrimSpace(id) == "" {
			return errors.New("grpcserver: empty admin identity")
		}
	}
	return nil
}

// LogValue logs the configuration without the admin token.
func (c Config) LogValue() slog.Value {
	tlsSource := "state-dir"
	switch {
	case c.TLS != nil:
		tlsSource = "tls-config"
	case c.CertFile != "":
		tlsSource = "files"
	case c.InsecurePlaintextForTests:
		tlsSource = "INSECURE-PLAINTEXT"
	}
	return slog.GroupValue(
		slog.String("listen", c.Listen),
		slog.String("tls", tlsSource),
		slog.String("state_dir", c.StateDir),
		slog.String("tls_cert", c.CertFile),
		slog.String("tls_client_ca", c.ClientCAFile),
		slog.Any("node_facing", c.NodeFacing),
		slog.Any("admin", c.Admin),
		slog.Any("admin_identities", c.AdminIdentities),
		slog.Bool("admin_token", c.AdminToken != "" || c.AdminTokenFile != ""),
		slog.Duration("shutdown_grace", c.ShutdownGrace),
	)
}
