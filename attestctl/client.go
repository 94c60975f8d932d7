package attestctl

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	metadatav1 "github.com/attestboot/attestboot/proto/attestboot/metadata/v1"
	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/pki"
)

// The services attestctl talks to.
const (
	svcAttestor  = "attestor"
	svcTunnelmgr = "tunnelmgr"
	svcMetadata  = "metadata"
)

// credentials is the TLS configuration and whether it carries an admin client certificate.
type credentials struct {
	tls     *tls.Config
	hasCert bool
}

func (a *app) addr(service string) string {
	switch service {
	case svcAttestor:
		return a.cfg.Attestor
	case svcTunnelmgr:
		return a.cfg.Tunnelmgr
	default:
		return a.cfg.Metadata
	}
}

// loadCredentials reads the CA and, when there is one, the admin client certificate. A
// certificate named explicitly must exist; the state dir's default is used only when present,
// so a token alone is enough.
func (a *app) loadCredentials() (*credentials, error) {
	if a.creds != nil {
		return a.creds, nil
	}
	ca := a.cfg.CA
	if ca == "" {
		ca = filepath.Join(a.cfg.StateDir, pki.CACertFile)
	}
	cert, key := a.cfg.Cert, a.cfg.Key
	if cert == "" {
		c, k := filepath.Join(a.cfg.StateDir, pki.AdminCertFile), filepath.Join(a.cfg.StateDir, pki.AdminKeyFile)
		if fileExists(c) && fileExists(k) {
			cert, key = c, k
		}
	}
	var (
		cfg *tls.Config
		err error
	)
	if cert != "" {
		cfg, err = pki.AdminClientTLS(ca, cert, key)
	} else {
		cfg, err = pki.NodeClientTLS(ca)
	}
	if err != nil {
		return nil, &exitError{code: ExitError, err: fmt.Errorf("TLS credentials: %w", err),
			hint: "pass -ca (and -cert/-key), or -state-dir with the services' PKI (default " + DefaultStateDir + ")"}
	}
	a.creds = &credentials{tls: cfg, hasCert: cert != ""}
	return a.creds, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// conn returns the (lazily opened) connection to service.
func (a *app) conn(service string) (*grpc.ClientConn, error) {
	if c, ok := a.conns[service]; ok {
		return c, nil
	}
	creds, err := a.loadCredentials()
	if err != nil {
		return nil, err
	}
	addr := a.addr(service)
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, usagef("-%s %q: want host:port", service, addr)
	}
	tc := creds.tls.Clone()
	if host, _, _ := net.SplitHostPort(addr); host != "" {
		tc.ServerName = host
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(grpccreds.NewTLS(tc))}
	if a.cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(grpcserver.BearerToken(a.cfg.Token)))
	}
	if a.env.Dial != nil {
		opts = append(opts, grpc.WithContextDialer(a.env.Dial))
	}
	// passthrough: the address goes to the dialer as given, without a DNS resolver in between.
	c, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s at %s: %w", service, addr, err)
	}
	a.conns[service] = c
	return c, nil
}

func (a *app) inventory() (inventoryv1.InventoryServiceClient, error) {
	c, err := a.conn(svcAttestor)
	if err != nil {
		return nil, err
	}
	return inventoryv1.NewInventoryServiceClient(c), nil
}

func (a *app) tunnels() (tunnelmgrv1.TunnelAdminServiceClient, error) {
	c, err := a.conn(svcTunnelmgr)
	if err != nil {
		return nil, err
	}
	return tunnelmgrv1.NewTunnelAdminServiceClient(c), nil
}

func (a *app) metadata() (metadatav1.MetadataServiceClient, error) {
	c, err := a.conn(svcMetadata)
	if err != nil {
		return nil, err
	}
	return metadatav1.NewMetadataServiceClient(c), nil
}

// inv runs one InventoryService call under -timeout; an error is wrapped for op.
func (a *app) inv(op string, call func(ctx context.Context, c inventoryv1.InventoryServiceClient) error) error {
	c, err := a.inventory()
	if err != nil {
		return err
	}
	ctx, cancel := a.callCtx()
	defer cancel()
	if err := call(ctx, c); err != nil {
		return a.rpcErr(svcAttestor, op, err)
	}
	return nil
}

// tun runs one TunnelAdminService call; see inv.
func (a *app) tun(op string, call func(ctx context.Context, c tunnelmgrv1.TunnelAdminServiceClient) error) error {
	c, err := a.tunnels()
	if err != nil {
		return err
	}
	ctx, cancel := a.callCtx()
	defer cancel()
	if err := call(ctx, c); err != nil {
		return a.rpcErr(svcTunnelmgr, op, err)
	}
	return nil
}

// meta runs one MetadataService call; see inv.
func (a *app) meta(op string, call func(ctx context.Context, c metadatav1.MetadataServiceClient) error) error {
	c, err := a.metadata()
	if err != nil {
		return err
	}
	ctx, cancel := a.callCtx()
	defer cancel()
	if err := call(ctx, c); err != nil {
		return a.rpcErr(svcMetadata, op, err)
	}
	return nil
}
