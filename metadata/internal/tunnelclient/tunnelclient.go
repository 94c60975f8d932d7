// Package tunnelclient calls tunnelmgr's TunnelAdminService as an admin, over TLS with an
// admin client certificate or a bearer token: the metadata service's way to close a tunnel
// once its node phoned home.
package tunnelclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/pki"
)

// Config locates tunnelmgr and the admin credential.
type Config struct {
	Addr     string // host:port
	CAFile   string // CA certificates (PEM) tunnelmgr's server certificate must chain to
	CertFile string // admin client certificate and key (PEM), or...
	KeyFile  string
	Token    string // ...an admin bearer token
}

func (c Config) validate() error {
	switch {
	case c.Addr == "":
		return errors.New("tunnelclient: no tunnelmgr address")
	case c.CAFile == "":
		return errors.New("tunnelclient: no CA file for tunnelmgr's certificate")
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("tunnelclient: a client certificate needs its key and a key its certificate")
	case c.CertFile == "" && c.Token == "":
		return errors.New("tunnelclient: no admin credential (client certificate or token)")
	}
	return nil
}

// Client is a connection to tunnelmgr.
type Client struct {
	conn   *grpc.ClientConn
	client tunnelmgrv1.TunnelAdminServiceClient
}

// Dial prepares a client; the connection is made on first use.
func Dial(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var (
		tc  *tls.Config
		err error
	)
	if cfg.CertFile != "" {
		tc, err = pki.AdminClientTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
	} else {
		tc, err = pki.NodeClientTLS(cfg.CAFile)
	}
	if err != nil {
		return nil, fmt.Errorf("tunnelclient: %w", err)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}
	if cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(grpcserver.BearerToken(cfg.Token)))
	}
	conn, err := grpc.NewClient(cfg.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("tunnelclient: %w", err)
	}
	return &Client{conn: conn, client: tunnelmgrv1.NewTunnelAdminServiceClient(conn)}, nil
}

// CloseTunnel asks tunnelmgr to close a tunnel.
func (c *Client) CloseTunnel(ctx context.Context, tunnelID, reason string) error {
	_, err := c.client.CloseTunnel(ctx, &tunnelmgrv1.CloseTunnelRequest{
		Target: &tunnelmgrv1.CloseTunnelRequest_TunnelId{TunnelId: tunnelID}, Reason: reason,
	})
	if err != nil {
		return fmt.Errorf("tunnelclient: close tunnel %s: %w", tunnelID, err)
	}
	return nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
