package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ServerTLS returns the server TLS configuration of the development PKI: see ServerTLSFromFiles.
func (b *Bundle) ServerTLS() (*tls.Config, error) {
	return ServerTLSFromFiles(b.ServerCertPath, b.ServerKeyPath, b.CACertPath)
}

// NodeClientTLS returns the TLS configuration of a node: it verifies the server against the
// development CA and presents no certificate.
func (b *Bundle) NodeClientTLS() (*tls.Config, error) {
	return NodeClientTLS(b.CACertPath)
}

// AdminClientTLS returns the TLS configuration of an admin: the development CA plus the admin
// client certificate.
func (b *Bundle) AdminClientTLS() (*tls.Config, error) {
	return AdminClientTLS(b.CACertPath, b.AdminCertPath, b.AdminKeyPath)
}

// ServerTLSFromFiles returns a server TLS configuration (TLS 1.3 only) from PEM files, for the
// development PKI or for certificates an operator provides. When clientCAFile is set, client
// certificates are optional but, when presented, must verify against it (nodes present none;
// admins may); without it no client certificate is requested, and admin callers must use a token.
// The files are read once: replacing them takes a restart. Unlike the development PKI's own keys,
// the key file's mode is not checked: secret mounts of orchestrators are often group-readable.
func ServerTLSFromFiles(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("pki: server TLS needs a certificate and a key file")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("pki: load server key pair: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.NoClientCert,
	}
	if clientCAFile != "" {
		pool, err := loadPool(clientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// NodeClientTLS returns a client TLS configuration (TLS 1.3 only) that trusts the CAs in caFile
// and presents no certificate: what a node needs, since its identity is its TPM, not TLS.
func NodeClientTLS(caFile string) (*tls.Config, error) {
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}, nil
}

// AdminClientTLS returns a client TLS configuration (TLS 1.3 only) that trusts the CAs in caFile
// and presents the client certificate in certFile with its key in keyFile.
func AdminClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg, err := NodeClientTLS(caFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("pki: load client key pair: %w", err)
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil
}

func loadPool(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, errors.New("pki: no CA file given")
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("pki: %s holds no PEM certificate", caFile)
	}
	return pool, nil
}
