package tunnelmgr_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/cli"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/netnstest"
	"github.com/attestboot/attestboot/services/pgtest"
	"github.com/attestboot/attestboot/services/pki"
	"github.com/attestboot/attestboot/services/proctest"
	"github.com/attestboot/attestboot/services/testdep"
	"github.com/attestboot/attestboot/tunnelmgr"
)

// childEnv makes this test binary run as the tunnelmgr binary (inside a namespace, through
// `ip netns exec`), so tests exercise the real process without a separate build.
const childEnv = "ATTESTBOOT_TEST_RUN_TUNNELMGR"

func TestMain(m *testing.M) {
	proctest.RunIfChild(childEnv, func() int { return cli.Main(tunnelmgr.Command(), os.Args[1:], os.Stderr) })
	os.Exit(pgtest.Main(m))
}

// Addresses of the test hosts, inside namespaces the test made (never the host's network).
const (
	gwVeth   = "10.99.0.1"
	nodeVeth = "10.99.0.2"
)

// env is a gateway host and the inventory.
type env struct {
	dbURL string
	store *inventory.Store
	gw    *netnstest.NS
	state string // shared PKI and gateway key directory
}

func newEnv(t testing.TB) *env {
	t.Helper()
	testdep.Root(t)
	testdep.Binaries(t, "ip", "wireguard-go")
	url := pgtest.NewDB(t)
	return &env{dbURL: url, store: inventory.New(pgtest.Pool(t, url), inventory.Options{}), gw: netnstest.New(t, "gw"), state: t.TempDir()}
}

// instance is a running tunnelmgr process.
type instance struct {
	proc  *proctest.Process
	iface string
	node  tunnelmgrv1.TunnelManagerServiceClient
	admin tunnelmgrv1.TunnelAdminServiceClient
	anon  tunnelmgrv1.TunnelAdminServiceClient // the admin API without credentials
}

type instanceOpts struct {
	gateway  string
	port     int // gRPC port inside the gateway namespace; WireGuard uses port+44376 (51820 for 7444)
	external string
	extra    []string
}

func (e *env) start(t testing.TB, o instanceOpts) *instance {
	t.Helper()
	if o.gateway == "" {
		o.gateway = "gw1"
	}
	if o.port == 0 {
		o.port = 7444
	}
	iface := o.external
	embedded := iface == ""
	if embedded {
		name, err := netnstest.NewName("tm")
		require.NoError(t, err)
		t.Cleanup(func() { netnstest.Release(name) })
		iface = name
	}
	wgPort := o.port + 44376
	listen := "127.0.0.1:" + strconv.Itoa(o.port)
	args := append([]string{"serve",
		"-listen", listen, "-state-dir", e.state, "-metrics-listen", "",
		"-gateway", o.gateway, "-wg-interface", iface, "-wg-embedded=" + strconv.FormatBool(embedded),
		"-wg-port", strconv.Itoa(wgPort), "-endpoint", gwVeth + ":" + strconv.Itoa(wgPort),
		"-pool-v4", "100.64.0.0/16", "-reconcile-interval", "500ms",
	}, o.extra...)
	cmd := e.gw.Command(context.Background(), os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1", "TUNNELMGR_DATABASE_URL="+e.dbURL)
	if _, ok := t.(*testing.B); ok {
		cmd.Env = append(cmd.Env, "TUNNELMGR_LOG_LEVEL=warn")
	}
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return e.gw.Dial(ctx, "tcp", addr) }
	ready := func() error {
		c, err := dial(context.Background(), listen)
		if err != nil {
			return err
		}
		return c.Close()
	}
	proc := proctest.Start(t, cmd, proctest.All(proctest.FileExists(filepath.Join(e.state, pki.AdminKeyFile)), ready))
	tlsCfg, err := pki.AdminClientTLS(filepath.Join(e.state, pki.CACertFile), filepath.Join(e.state, pki.AdminCertFile), filepath.Join(e.state, pki.AdminKeyFile))
	require.NoError(t, err)
	conn, err := grpc.NewClient("passthrough:///"+listen, grpc.WithContextDialer(dial), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	nodeTLS, err := pki.NodeClientTLS(filepath.Join(e.state, pki.CACertFile))
	require.NoError(t, err)
	anon, err := grpc.NewClient("passthrough:///"+listen, grpc.WithContextDialer(dial), grpc.WithTransportCredentials(credentials.NewTLS(nodeTLS)))
	require.NoError(t, err)
	t.Cleanup(func() { anon.Close() })
	return &instance{proc: proc, iface: iface,
		node: tunnelmgrv1.NewTunnelManagerServiceClient(conn), admin: tunnelmgrv1.NewTunnelAdminServiceClient(conn),
		anon: tunnelmgrv1.NewTunnelAdminServiceClient(anon)}
}

// attestation records a passed attestation for nodeID and a fresh WireGuard key, as the
// attestor would (the attestor's own tests prove how it gets there).
func (e *env) attestation(t testing.TB, nodeID string) (id string, key wgtypes.Key) {
	t.Helper()
	return e.attestationFor(t, nodeID, time.Minute)
}

// attestationFor is attestation with a lifetime of ttl.
func (e *env) attestationFor(t testing.TB, nodeID string, ttl time.Duration) (id string, key wgtypes.Key) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.store.GetNode(ctx, nodeID); err != nil {
		_, err := e.store.CreateNode(ctx, inventory.Node{ID: nodeID, Enabled: true})
		require.NoError(t, err)
	}
	key, err := wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	pub := key.PublicKey()
	ek := make([]byte, 32)
	_, _ = rand.Read(ek)
	one := bytes.Repeat([]byte{1}, 32)
	sess, err := e.store.CreateSession(ctx, inventory.Session{NodeID: nodeID, EKSHA256: ek, AKPublic: one, AKSHA256: one,
		WireGuardPublicKey: pub[:], Nonce: one, SecretSHA256: one}, time.Minute)
	require.NoError(t, err)
	a, err := e.store.CreateAttestation(ctx, inventory.Attestation{SessionID: sess.ID, NodeID: nodeID, EKSHA256: ek,
		AKSHA256: one, WireGuardPublicKey: pub[:]}, ttl)
	require.NoError(t, err)
	return a.ID, key
}

// peers reads a device's peers by public key.
func peers(t testing.TB, iface string) map[wgtypes.Key][]string {
	t.Helper()
	c, err := wgctrl.New()
	require.NoError(t, err)
	defer c.Close()
	d, err := c.Device(iface)
	require.NoError(t, err)
	out := map[wgtypes.Key][]string{}
	for _, p := range d.Peers {
		out[p.PublicKey] = nil
		for _, n := range p.AllowedIPs {
			out[p.PublicKey] = append(out[p.PublicKey], n.String())
		}
	}
	return out
}

// node is a host with its own WireGuard device, brought up from an OpenTunnel answer exactly
// as node-agent does.
type node struct {
	ns    *netnstest.NS
	iface string
}

func (e *env) newNode(t testing.TB) *node {
	t.Helper()
	ns := netnstest.New(t, "node")
	netnstest.Link(t, e.gw, ns, gwVeth+"/24", nodeVeth+"/24")
	return &node{ns: ns, iface: ns.StartWireGuardGo(t, "nd")}
}

func (n *node) up(t testing.TB, key wgtypes.Key, resp *tunnelmgrv1.OpenTunnelResponse) {
	t.Helper()
	gwKey, err := wgtypes.NewKey(resp.GetGatewayPublicKey())
	require.NoError(t, err)
	endpoint, err := net.ResolveUDPAddr("udp", resp.GetEndpoint())
	require.NoError(t, err)
	var allowed []net.IPNet
	for _, a := range resp.GetAllowedIps() {
		_, n, err := net.ParseCIDR(a)
		require.NoError(t, err)
		allowed = append(allowed, *n)
	}
	keepalive := time.Duration(resp.GetPersistentKeepaliveSeconds()) * time.Second
	c, err := wgctrl.New()
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.ConfigureDevice(n.iface, wgtypes.Config{PrivateKey: &key, ReplacePeers: true, Peers: []wgtypes.PeerConfig{{
		PublicKey: gwKey, Endpoint: endpoint, AllowedIPs: allowed, PersistentKeepaliveInterval: &keepalive,
	}}}))
	ctx := context.Background()
	for _, a := range resp.GetNodeAddresses() {
		require.NoError(t, n.ns.IP(ctx, "addr", "add", a, "dev", n.iface))
	}
	require.NoError(t, n.ns.IP(ctx, "link", "set", n.iface, "up"))
	for _, a := range resp.GetAllowedIps() {
		require.NoError(t, n.ns.IP(ctx, "route", "replace", a, "dev", n.iface))
	}
}

// echo serves on addr in the gateway namespace and answers every line with itself.
func (e *env) echo(t testing.TB, addr string) {
	t.Helper()
	l, err := e.gw.Listen("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

// exchange sends a message from the node to addr and reads it back within timeout.
func (n *node) exchange(addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := n.ns.Dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	msg := []byte("attestboot\n")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo returned %q", got)
	}
	return nil
}
