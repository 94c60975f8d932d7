package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/pki"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	block, _ := pem.Decode(data)
	require.NotNil(t, block, path)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}

func verify(t *testing.T, b *pki.Bundle, cert *x509.Certificate, usage x509.ExtKeyUsage) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(b.CA)
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}})
	require.NoError(t, err)
}

func files(b *pki.Bundle) []string {
	return []string{b.CACertPath, b.CAKeyPath, b.ServerCertPath, b.ServerKeyPath, b.AdminCertPath, b.AdminKeyPath}
}

func snapshot(t *testing.T, b *pki.Bundle) map[string]string {
	t.Helper()
	out := make(map[string]string)
	for _, f := range files(b) {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		out[f] = string(data)
	}
	return out
}

func TestEnsureCreatesDevelopmentPKI(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state", "pki")
	b, err := pki.Ensure(dir, pki.Options{Hosts: []string{"attestor.example", "10.1.2.3", "fd00::7"}})
	require.NoError(t, err)

	fi, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	for _, f := range []string{b.CAKeyPath, b.ServerKeyPath, b.AdminKeyPath} {
		fi, err := os.Stat(f)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), f)
	}

	ca := readCert(t, b.CACertPath)
	require.True(t, ca.IsCA)
	require.Equal(t, ca.Raw, b.CA.Raw)
	caKey, ok := ca.PublicKey.(*ecdsa.PublicKey)
	require.True(t, ok)
	require.Equal(t, elliptic.P256(), caKey.Curve)
	require.InDelta(t, (10 * 365 * 24 * time.Hour).Hours(), ca.NotAfter.Sub(ca.NotBefore).Hours(), 1)

	srv := readCert(t, b.ServerCertPath)
	verify(t, b, srv, x509.ExtKeyUsageServerAuth)
	for _, host := range []string{"localhost", "127.0.0.1", "::1", "attestor.example", "10.1.2.3", "fd00::7"} {
		require.NoError(t, srv.VerifyHostname(host), host)
	}
	require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, srv.ExtKeyUsage, "server cert must not pass as a client cert")

	admin := readCert(t, b.AdminCertPath)
	verify(t, b, admin, x509.ExtKeyUsageClientAuth)
	require.Equal(t, pki.AdminCommonName, admin.Subject.CommonName)
	require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, admin.ExtKeyUsage)

	loaded, err := pki.Load(dir)
	require.NoError(t, err)
	require.Equal(t, b.CA.Raw, loaded.CA.Raw)
	require.Equal(t, b.AdminKeyPath, loaded.AdminKeyPath)
}

func TestEnsureIsIdempotent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := pki.Ensure(dir, pki.Options{Hosts: []string{"metadata.example"}})
	require.NoError(t, err)
	before := snapshot(t, first)

	second, err := pki.Ensure(dir, pki.Options{Hosts: []string{"metadata.example"}})
	require.NoError(t, err)
	require.Equal(t, before, snapshot(t, second), "a second start reuses every file")

	// Asking for no extra host is covered by the existing certificate too.
	third, err := pki.Ensure(dir, pki.Options{})
	require.NoError(t, err)
	require.Equal(t, before, snapshot(t, third))
}

func TestEnsureConcurrentFirstStarts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const n = 8
	bundles := make([]*pki.Bundle, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// Different services sharing one state dir, each asking for its own name.
			bundles[i], errs[i] = pki.Ensure(dir, pki.Options{Hosts: []string{"svc" + string(rune('a'+i)) + ".example"}})
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, bundles[0].CA.Raw, bundles[i].CA.Raw, "all share one CA")
	}

	ca := readCert(t, bundles[0].CACertPath)
	require.Equal(t, bundles[0].CA.Raw, ca.Raw, "the CA on disk is the one every caller got")
	srv := readCert(t, bundles[0].ServerCertPath)
	verify(t, bundles[0], srv, x509.ExtKeyUsageServerAuth)
	for i := range n {
		require.NoError(t, srv.VerifyHostname("svc"+string(rune('a'+i))+".example"), "names converge, none is lost")
	}
	_, err := tls.LoadX509KeyPair(bundles[0].ServerCertPath, bundles[0].ServerKeyPath)
	require.NoError(t, err, "server key matches its certificate")
	_, err = tls.LoadX509KeyPair(bundles[0].AdminCertPath, bundles[0].AdminKeyPath)
	require.NoError(t, err)

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		require.NotContains(t, e.Name(), ".tmp-", "no temporary file left behind")
	}
}

func TestEnsureAddsHostsAndKeepsCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, err := pki.Ensure(dir, pki.Options{Hosts: []string{"a.example"}})
	require.NoError(t, err)
	adminBefore, err := os.ReadFile(a.AdminCertPath)
	require.NoError(t, err)

	b, err := pki.Ensure(dir, pki.Options{Hosts: []string{"b.example", "192.0.2.1"}})
	require.NoError(t, err)
	require.Equal(t, a.CA.Raw, b.CA.Raw)
	srv := readCert(t, b.ServerCertPath)
	for _, h := range []string{"a.example", "b.example", "192.0.2.1", "localhost"} {
		require.NoError(t, srv.VerifyHostname(h), h)
	}
	adminAfter, err := os.ReadFile(b.AdminCertPath)
	require.NoError(t, err)
	require.Equal(t, adminBefore, adminAfter, "the admin certificate is not touched")
}

func TestEnsureRenewsLeavesButNeverTheCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	first, err := pki.Ensure(dir, pki.Options{Now: func() time.Time { return start }})
	require.NoError(t, err)
	before := snapshot(t, first)

	// Eleven months on, leaves of one year are within the 30-day renewal window.
	later := start.Add(340 * 24 * time.Hour)
	second, err := pki.Ensure(dir, pki.Options{Now: func() time.Time { return later }})
	require.NoError(t, err)
	after := snapshot(t, second)
	require.Equal(t, before[first.CACertPath], after[second.CACertPath])
	require.Equal(t, before[first.CAKeyPath], after[second.CAKeyPath])
	require.NotEqual(t, before[first.ServerCertPath], after[second.ServerCertPath])
	require.NotEqual(t, before[first.AdminCertPath], after[second.AdminCertPath])
	require.True(t, readCert(t, second.ServerCertPath).NotAfter.After(later.Add(300*24*time.Hour)))

	// Near the CA's end, Ensure refuses instead of silently replacing what everyone trusts.
	_, err = pki.Ensure(dir, pki.Options{Now: func() time.Time { return start.Add(3640 * 24 * time.Hour) }})
	require.ErrorContains(t, err, "development CA")
}

func TestEnsureRepairsAndRefuses(t *testing.T) {
	t.Parallel()
	t.Run("corrupt leaf is reissued", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		b, err := pki.Ensure(dir, pki.Options{})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(b.ServerCertPath, []byte("garbage"), 0o644))
		_, err = pki.Ensure(dir, pki.Options{})
		require.NoError(t, err)
		verify(t, b, readCert(t, b.ServerCertPath), x509.ExtKeyUsageServerAuth)
	})
	t.Run("loose CA key mode is refused", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		b, err := pki.Ensure(dir, pki.Options{})
		require.NoError(t, err)
		require.NoError(t, os.Chmod(b.CAKeyPath, 0o644))
		_, err = pki.Ensure(dir, pki.Options{})
		require.ErrorContains(t, err, "mode 0644")
	})
	t.Run("bad options", func(t *testing.T) {
		t.Parallel()
		_, err := pki.Ensure(t.TempDir(), pki.Options{Hosts: []string{"a b"}})
		require.Error(t, err)
		_, err = pki.Ensure(t.TempDir(), pki.Options{LeafValidity: time.Hour, RenewBefore: 2 * time.Hour})
		require.Error(t, err)
	})
}

func TestIssueClientCert(t *testing.T) {
	t.Parallel()
	b, err := pki.Ensure(t.TempDir(), pki.Options{})
	require.NoError(t, err)
	certPEM, keyPEM, err := b.IssueClientCert("node-7", time.Hour)
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	verify(t, b, pair.Leaf, x509.ExtKeyUsageClientAuth)
	require.Equal(t, "node-7", pair.Leaf.Subject.CommonName)
	require.WithinDuration(t, time.Now().Add(time.Hour), pair.Leaf.NotAfter, time.Minute)
}

// handshake runs one TLS handshake over loopback and returns the client's error and the
// connection state the server saw.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", server)
	require.NoError(t, err)
	defer lis.Close()
	states := make(chan tls.ConnectionState, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			close(states)
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if tc.Handshake() != nil {
			close(states)
			return
		}
		states <- tc.ConnectionState()
		// Keep the connection until the client has read the session tickets of TLS 1.3.
		_, _ = c.Read(make([]byte, 1))
	}()
	conn, err := tls.Dial("tcp", lis.Addr().String(), client)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	// TLS 1.3 clients learn about a rejected certificate only on their first read.
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			return tls.ConnectionState{}, err
		}
	}
	st, ok := <-states
	require.True(t, ok, "server handshake failed although the client's succeeded")
	return st, nil
}

func TestTLSConfigs(t *testing.T) {
	t.Parallel()
	b, err := pki.Ensure(t.TempDir(), pki.Options{})
	require.NoError(t, err)
	server, err := b.ServerTLS()
	require.NoError(t, err)
	require.Equal(t, uint16(tls.VersionTLS13), server.MinVersion)
	require.Equal(t, tls.VerifyClientCertIfGiven, server.ClientAuth)

	t.Run("node: server TLS only", func(t *testing.T) {
		t.Parallel()
		client, err := b.NodeClientTLS()
		require.NoError(t, err)
		client.ServerName = "localhost"
		st, err := handshake(t, server, client)
		require.NoError(t, err)
		require.Empty(t, st.PeerCertificates)
		require.Equal(t, uint16(tls.VersionTLS13), st.Version)
	})
	t.Run("admin: verified client certificate", func(t *testing.T) {
		t.Parallel()
		client, err := b.AdminClientTLS()
		require.NoError(t, err)
		client.ServerName = "127.0.0.1"
		st, err := handshake(t, server, client)
		require.NoError(t, err)
		require.NotEmpty(t, st.VerifiedChains)
		require.Equal(t, pki.AdminCommonName, st.VerifiedChains[0][0].Subject.CommonName)
	})
	t.Run("client certificate of another CA is refused", func(t *testing.T) {
		t.Parallel()
		other, err := pki.Ensure(t.TempDir(), pki.Options{})
		require.NoError(t, err)
		client, err := pki.AdminClientTLS(b.CACertPath, other.AdminCertPath, other.AdminKeyPath)
		require.NoError(t, err)
		client.ServerName = "localhost"
		// Go's client withholds a certificate whose issuer the server did not ask for; force it, as
		// a hostile client would.
		foreign := client.Certificates[0]
		client.Certificates = nil
		client.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
		_, err = handshake(t, server, client)
		require.ErrorContains(t, err, "certificate")
	})
	t.Run("server certificate of another CA is refused", func(t *testing.T) {
		t.Parallel()
		other, err := pki.Ensure(t.TempDir(), pki.Options{})
		require.NoError(t, err)
		client, err := other.NodeClientTLS()
		require.NoError(t, err)
		client.ServerName = "localhost"
		_, err = handshake(t, server, client)
		var unknown x509.UnknownAuthorityError
		require.ErrorAs(t, err, &unknown)
	})
	t.Run("TLS 1.2 is refused", func(t *testing.T) {
		t.Parallel()
		client, err := b.NodeClientTLS()
		require.NoError(t, err)
		client.ServerName = "localhost"
		client.MinVersion = tls.VersionTLS12
		client.MaxVersion = tls.VersionTLS12
		_, err = handshake(t, server, client)
		require.ErrorContains(t, err, "protocol version")
	})
	t.Run("operator files without client CA", func(t *testing.T) {
		t.Parallel()
		cfg, err := pki.ServerTLSFromFiles(b.ServerCertPath, b.ServerKeyPath, "")
		require.NoError(t, err)
		require.Equal(t, tls.NoClientCert, cfg.ClientAuth)
		_, err = pki.ServerTLSFromFiles(b.ServerCertPath, "", "")
		require.Error(t, err)
		_, err = pki.NodeClientTLS(b.ServerKeyPath)
		require.ErrorContains(t, err, "no PEM certificate")
	})
}
