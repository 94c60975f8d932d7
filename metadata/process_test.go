package metadata_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/attestboot/attestboot/metadata"
	metadatav1 "github.com/attestboot/attestboot/proto/attestboot/metadata/v1"
	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/cli"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/netnstest"
	"github.com/attestboot/attestboot/services/pgtest"
	"github.com/attestboot/attestboot/services/pki"
	"github.com/attestboot/attestboot/services/proctest"
	"github.com/attestboot/attestboot/services/testdep"
	"github.com/attestboot/attestboot/services/tunneltest"
)

// childEnv makes this test binary run as the metadata binary.
const childEnv = "ATTESTBOOT_TEST_RUN_METADATA"

func TestMain(m *testing.M) {
	proctest.RunIfChild(childEnv, func() int { return cli.Main(metadata.Command(), os.Args[1:], os.Stderr) })
	os.Exit(pgtest.Main(m))
}

func metadataCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	return cmd
}

// secretValue must never appear in the service's output.
const secretValue = "munge-secret-9c2d41e7a0"

const (
	gatewayName = "gw1"
	gatewayAddr = "100.64.0.1"
)

// lockedBuffer collects a child's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testbed is a gateway namespace with a wireguard-go device and node namespaces, each with its
// own device, veth link to the gateway and peer on the gateway's device.
type testbed struct {
	store  *inventory.Store
	dbURL  string
	gw     *netnstest.NS
	gwWG   string
	gwKey  wgtypes.Key
	wg     *wgctrl.Client
	nLinks int
}

type node struct {
	id   string
	ns   *netnstest.NS
	addr netip.Addr
	key  wgtypes.Key
	tun  inventory.Tunnel // zero for a peer without an open tunnel
	http *http.Client
}

const wgPort = 51820

func ipnet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func newTestbed(t *testing.T) *testbed { return newTestbedTB(t) }

func newTestbedTB(t testing.TB) *testbed {
	t.Helper()
	testdep.Binaries(t, "wireguard-go")
	gw := netnstest.New(t, "mdgw")
	wgName := gw.StartWireGuardGo(t, "mdwg")
	client, err := wgctrl.New()
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	key, err := wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	port := wgPort
	require.NoError(t, client.ConfigureDevice(wgName, wgtypes.Config{PrivateKey: &key, ListenPort: &port, ReplacePeers: true}))
	ctx := t.Context()
	require.NoError(t, gw.IP(ctx, "addr", "add", gatewayAddr+"/24", "dev", wgName))
	require.NoError(t, gw.IP(ctx, "link", "set", wgName, "up"))

	dbURL := pgtest.NewDB(t)
	pool, err := inventory.Open(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store := inventory.New(pool, inventory.Options{})
	pub := key.PublicKey()
	_, err = store.UpsertGateway(ctx, inventory.Gateway{Name: gatewayName, PublicKey: pub[:], Endpoint: "10.98.1.1:51820",
		IPv4Pool: netip.MustParsePrefix("100.64.0.0/24"), AddressV4: netip.MustParseAddr(gatewayAddr)})
	require.NoError(t, err)
	return &testbed{store: store, dbURL: dbURL, gw: gw, gwWG: wgName, gwKey: key, wg: client}
}

// addNode makes a node host. With open, the inventory gets the node and an open tunnel, whose
// address the host uses; without, the host is a WireGuard peer at addr that no open tunnel owns.
func (b *testbed) addNode(t *testing.T, id string, open bool, addr netip.Addr) *node {
	return b.addNodeTB(t, id, open, addr)
}

func (b *testbed) addNodeTB(t testing.TB, id string, open bool, addr netip.Addr) *node {
	t.Helper()
	ctx := t.Context()
	b.nLinks++
	ns := netnstest.New(t, "mdn")
	gwSide := fmt.Sprintf("10.98.%d.1", b.nLinks)
	netnstest.Link(t, b.gw, ns, gwSide+"/24", fmt.Sprintf("10.98.%d.2/24", b.nLinks))
	wgName := ns.StartWireGuardGo(t, "mdwg")
	key, err := wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	n := &node{id: id, ns: ns, key: key, addr: addr}
	if open {
		_, err := b.store.CreateNode(ctx, inventory.Node{ID: id, Hostname: "host-" + id, Enabled: true})
		require.NoError(t, err)
		pub := key.PublicKey()
		n.tun = tunneltest.Open(t, b.store, id, gatewayName, pub[:])
		n.addr = n.tun.AddressV4
	}
	port := wgPort
	keepalive := 0 * time.Second
	require.NoError(t, b.wg.ConfigureDevice(wgName, wgtypes.Config{PrivateKey: &key, ListenPort: &port, ReplacePeers: true,
		Peers: []wgtypes.PeerConfig{{PublicKey: b.gwKey.PublicKey(), Endpoint: &net.UDPAddr{IP: net.ParseIP(gwSide), Port: wgPort},
			AllowedIPs: []net.IPNet{ipnet(netip.MustParsePrefix(gatewayAddr + "/32"))}, PersistentKeepaliveInterval: &keepalive}}}))
	require.NoError(t, ns.IP(ctx, "addr", "add", n.addr.String()+"/24", "dev", wgName))
	require.NoError(t, ns.IP(ctx, "link", "set", wgName, "up"))
	// The gateway's side, which tunnelmgr does in the real flow.
	require.NoError(t, b.wg.ConfigureDevice(b.gwWG, wgtypes.Config{Peers: []wgtypes.PeerConfig{{
		PublicKey: key.PublicKey(), AllowedIPs: []net.IPNet{ipnet(netip.PrefixFrom(n.addr, 32))}, ReplaceAllowedIPs: true}}}))
	n.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:         func(ctx context.Context, network, a string) (net.Conn, error) { return ns.Dial(ctx, network, a) },
		MaxIdleConnsPerHost: 1000,
	}}
	return n
}

func (n *node) get(t testing.TB, path string) (int, string) {
	t.Helper()
	res, err := n.http.Get("http://" + gatewayAddr + path)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(body)
}

// closeStub is tunnelmgr's TunnelAdminService as the metadata service meets it: admin-only,
// over TLS. It closes the tunnel in the inventory and removes the peer, as tunnelmgr does.
type closeStub struct {
	tunnelmgrv1.UnimplementedTunnelAdminServiceServer
	b      *testbed
	called chan string
}

func (s *closeStub) CloseTunnel(ctx context.Context, req *tunnelmgrv1.CloseTunnelRequest) (*tunnelmgrv1.CloseTunnelResponse, error) {
	if req.GetReason() != "phone_home" {
		return nil, status.Error(codes.InvalidArgument, "unexpected reason "+req.GetReason())
	}
	tun, _, err := s.b.store.CloseTunnel(ctx, req.GetTunnelId(), inventory.TunnelClosed, req.GetReason())
	if err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	key, err := wgtypes.NewKey(tun.WireGuardPublicKey)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := s.b.wg.ConfigureDevice(s.b.gwWG, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: key, Remove: true}}}); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	s.called <- tun.ID
	return &tunnelmgrv1.CloseTunnelResponse{Tunnel: &tunnelmgrv1.Tunnel{Id: tun.ID, NodeId: tun.NodeID}}, nil
}

// startCloseStub serves the stub inside the gateway namespace and returns the metadata flags
// that reach it.
func (b *testbed) startCloseStub(t *testing.T) (*closeStub, []string) {
	t.Helper()
	dir := t.TempDir()
	srv, err := grpcserver.New(grpcserver.Config{StateDir: dir}, slog.New(slog.NewTextHandler(t.Output(), nil)), prometheus.NewRegistry())
	require.NoError(t, err)
	stub := &closeStub{b: b, called: make(chan string, 10)}
	tunnelmgrv1.RegisterTunnelAdminServiceServer(srv, stub)
	lis, err := b.gw.Listen("tcp", "127.0.0.1:7446")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	bundle := srv.PKI()
	return stub, []string{"-tunnelmgr-addr", "127.0.0.1:7446", "-tunnelmgr-ca", bundle.CACertPath,
		"-tunnelmgr-cert", bundle.AdminCertPath, "-tunnelmgr-key", bundle.AdminKeyPath}
}

// service is the metadata process in the gateway namespace with admin clients.
type service struct {
	proc  *proctest.Process
	out   *lockedBuffer
	admin metadatav1.MetadataServiceClient
	anon  metadatav1.MetadataServiceClient
}

func (b *testbed) startMetadata(t testing.TB, extra ...string) *service {
	t.Helper()
	state := t.TempDir()
	kek := filepath.Join(state, "kek")
	k := make([]byte, 32)
	_, err := rand.Read(k)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(kek, k, 0o600))
	args := append([]string{metadataCmd().Path, "serve", "-listen", "127.0.0.1:7445", "-state-dir", state, "-metrics-listen", "",
		"-gateway", gatewayName, "-http-listen", gatewayAddr + ":80", "-wg-interface", b.gwWG, "-prefix", "/cloud-init",
		"-kek-file", kek, "-kek-id", "test1", "-close-delay", "50ms"}, extra...)
	cmd := b.gw.Command(context.Background(), "env", append([]string{childEnv + "=1", "METADATA_DATABASE_URL=" + b.dbURL}, args...)...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if _, ok := t.(*testing.B); ok {
		cmd.Args = append(cmd.Args, "-log-level", "warn")
	}
	proc := proctest.Start(t, cmd, func() error {
		if _, err := os.Stat(filepath.Join(state, pki.AdminKeyFile)); err != nil {
			return err
		}
		c, err := b.gw.Dial(context.Background(), "tcp", "127.0.0.1:7445")
		if err != nil {
			return err
		}
		c.Close()
		// A local connection counts as arriving on the interface that owns the address, so
		// this tells that the datasource listens (its answer to such a source would be 403).
		c, err = b.gw.Dial(context.Background(), "tcp", gatewayAddr+":80")
		if err != nil {
			return err
		}
		return c.Close()
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("metadata output:\n%s", out.String())
		}
	})
	dial := func(cfg func() (*tls.Config, error)) *grpc.ClientConn {
		tc, err := cfg()
		require.NoError(t, err)
		conn, err := grpc.NewClient("passthrough:///127.0.0.1:7445", grpc.WithTransportCredentials(credentials.NewTLS(tc)),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return b.gw.Dial(ctx, "tcp", a) }))
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ca := filepath.Join(state, pki.CACertFile)
	return &service{
		proc: proc, out: out,
		admin: metadatav1.NewMetadataServiceClient(dial(func() (*tls.Config, error) {
			return pki.AdminClientTLS(ca, filepath.Join(state, pki.AdminCertFile), filepath.Join(state, pki.AdminKeyFile))
		})),
		anon: metadatav1.NewMetadataServiceClient(dial(func() (*tls.Config, error) { return pki.NodeClientTLS(ca) })),
	}
}

func nodeScope(id string) *metadatav1.Scope {
	return &metadatav1.Scope{Scope: &metadatav1.Scope_NodeId{NodeId: id}}
}

var defaultsScope = &metadatav1.Scope{Scope: &metadatav1.Scope_Defaults{Defaults: true}}

func sshKey(t testing.TB) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	var blob []byte
	for _, part := range [][]byte{[]byte("ssh-ed25519"), pub} {
		blob = binary.BigEndian.AppendUint32(blob, uint32(len(part)))
		blob = append(blob, part...)
	}
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob)
}

// TestOverTunnels runs the metadata process in a gateway namespace and nodes in their own
// namespaces, each reaching it only through its WireGuard tunnel.
func TestOverTunnels(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newTestbed(t)
	n1 := b.addNode(t, "x1000c0s0b0n1", true, netip.Addr{})
	n2 := b.addNode(t, "x1000c0s0b0n2", true, netip.Addr{})
	stray := b.addNode(t, "stray", false, netip.MustParseAddr("100.64.0.99"))
	stub, closerFlags := b.startCloseStub(t)
	s := b.startMetadata(t, closerFlags...)

	// The admin API needs the admin credential.
	_, err := s.anon.ListSecrets(ctx, &metadatav1.ListSecretsRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))

	// Validation on write.
	ud := "#cloud-config\nwrite_files:\n  - path: /etc/munge/munge.key\n    permissions: \"0600\"\n    content: {{ secret \"munge.key\" | quote }}\nruncmd: [\"echo {{ .Node.ID }} {{ .Tunnel.Address }}\"]\n"
	_, err = s.admin.SetCloudInitData(ctx, &metadatav1.SetCloudInitDataRequest{Data: &metadatav1.CloudInitData{Scope: nodeScope(n1.id), UserData: ud}})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "a secret that does not exist")
	require.ErrorContains(t, err, "munge.key")
	for _, bad := range []*metadatav1.CloudInitData{
		{Scope: defaultsScope, UserData: "#cloud-config\na: [\n"},
		{Scope: defaultsScope, UserData: "hostname: x\n"},
		{Scope: defaultsScope, VendorData: "#cloud-config\n{{ .Nope }}\n"},
		{Scope: &metadatav1.Scope{}, UserData: "#cloud-config\n"},
	} {
		_, err = s.admin.SetCloudInitData(ctx, &metadatav1.SetCloudInitDataRequest{Data: bad})
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", bad)
	}
	_, err = s.admin.PutSecret(ctx, &metadatav1.PutSecretRequest{Scope: nodeScope(n1.id), Name: "../x", Value: []byte("v")})
	require.Equal(t, codes.InvalidArgument, status.Code(err))

	put, err := s.admin.PutSecret(ctx, &metadatav1.PutSecretRequest{Scope: nodeScope(n1.id), Name: "munge.key", Value: []byte(secretValue)})
	require.NoError(t, err)
	require.Equal(t, "test1", put.GetSecret().GetKeyId())
	require.NotContains(t, prototext.Format(put), secretValue)
	_, err = s.admin.SetCloudInitData(ctx, &metadatav1.SetCloudInitDataRequest{Data: &metadatav1.CloudInitData{Scope: nodeScope(n1.id), UserData: ud}})
	require.NoError(t, err)
	_, err = s.admin.SetCloudInitData(ctx, &metadatav1.SetCloudInitDataRequest{Data: &metadatav1.CloudInitData{Scope: defaultsScope,
		UserData: "#cloud-config\nruncmd: [\"echo defaults\"]\n", NetworkConfig: "version: 2\nethernets: {eth0: {dhcp4: true}}\n"}})
	require.NoError(t, err)

	// At rest the value is ciphertext.
	var ct []byte
	require.NoError(t, b.store.Pool().QueryRow(ctx, `SELECT ciphertext FROM secrets WHERE name = 'munge.key'`).Scan(&ct))
	require.NotContains(t, string(ct), secretValue)

	list, err := s.admin.ListSecrets(ctx, &metadatav1.ListSecretsRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetSecrets(), 1)
	require.NotContains(t, prototext.Format(list), secretValue)
	prev, err := s.admin.RenderPreview(ctx, &metadatav1.RenderPreviewRequest{NodeId: n1.id})
	require.NoError(t, err)
	require.Contains(t, prev.GetUserData(), "content: '[REDACTED:munge.key]'")
	require.NotContains(t, prototext.Format(prev), secretValue)
	require.Equal(t, []string{"munge.key"}, prev.GetSecrets())
	require.Contains(t, prev.GetVendorData(), "url: http://100.64.0.1:80/cloud-init/phone-home")

	// n1 reads its four documents through its tunnel.
	code, md := n1.get(t, "/meta-data")
	require.Equal(t, 200, code)
	require.Contains(t, md, "instance-id: "+n1.tun.ID)
	require.Contains(t, md, "local-hostname: host-"+n1.id)
	code, body := n1.get(t, "/cloud-init/user-data/")
	require.Equal(t, 200, code)
	require.Contains(t, body, secretValue)
	require.Contains(t, body, "echo "+n1.id+" "+n1.addr.String())
	require.Contains(t, body, "echo defaults")
	code, body = n1.get(t, "/vendor-data")
	require.Equal(t, 200, code)
	require.Contains(t, body, "phone_home:")
	code, body = n1.get(t, "/network-config")
	require.Equal(t, 200, code)
	require.Contains(t, body, "dhcp4: true")
	code, _ = n1.get(t, "/latest/meta-data")
	require.Equal(t, 404, code)

	// n2 gets its own and never n1's.
	code, md = n2.get(t, "/meta-data")
	require.Equal(t, 200, code)
	require.Contains(t, md, "instance-id: "+n2.tun.ID)
	code, body = n2.get(t, "/user-data")
	require.Equal(t, 200, code)
	require.NotContains(t, body, secretValue)
	require.Contains(t, body, "echo defaults")

	// A WireGuard peer without an open tunnel is refused, with an event.
	code, _ = stray.get(t, "/user-data")
	require.Equal(t, 403, code)
	evs, err := b.store.QueryEvents(ctx, inventory.EventQuery{Kinds: []string{"metadata.refused"}})
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, "100.64.0.99", evs[0].Detail["source"])

	// Traffic that does not come through the WireGuard interface finds no socket: the veth side
	// of a node host, routed to the tunnel address, is refused at connect.
	require.NoError(t, n2.ns.IP(ctx, "route", "add", "100.64.0.1/32", "via", "10.98.2.1"))
	_, err = n2.ns.Dial(ctx, "tcp", gatewayAddr+":80")
	require.Error(t, err)
	require.Contains(t, err.Error(), "refused")

	// Phone-home: 200, host keys stored, boot marked, then the tunnel closed through tunnelmgr.
	key := sshKey(t)
	res, err := n1.http.PostForm("http://"+gatewayAddr+"/phone-home/"+n1.tun.ID, url.Values{
		"pub_key_rsa": {"N/A"}, "pub_key_ecdsa": {"N/A"}, "pub_key_ed25519": {key + " root@host"},
		"instance_id": {n1.tun.ID}, "hostname": {"host-" + n1.id}, "fqdn": {"N/A"}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
	select {
	case id := <-stub.called:
		require.Equal(t, n1.tun.ID, id)
	case <-time.After(10 * time.Second):
		t.Fatal("tunnelmgr was not asked to close the tunnel")
	}
	keys, err := s.admin.ListHostKeys(ctx, &metadatav1.ListHostKeysRequest{NodeId: n1.id})
	require.NoError(t, err)
	require.Len(t, keys.GetHostKeys(), 1)
	require.Equal(t, key, keys.GetHostKeys()[0].GetPublicKey())
	node, err := b.store.GetNode(ctx, n1.id)
	require.NoError(t, err)
	require.False(t, node.LastBootAt.IsZero())
	tun, err := b.store.GetTunnel(ctx, n1.tun.ID)
	require.NoError(t, err)
	require.Equal(t, inventory.TunnelClosed, tun.State)

	// With the tunnel gone the node reaches nothing.
	n1.http.CloseIdleConnections()
	n1.http.Timeout = time.Second
	_, err = n1.http.Get("http://" + gatewayAddr + "/meta-data")
	require.Error(t, err)

	s.proc.Stop()
	require.NotContains(t, s.out.String(), secretValue, "no secret value in the service's log")
	require.Contains(t, s.out.String(), "secrets delivered")
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	out, err := metadataCmd("serve", "-no-such-flag").CombinedOutput()
	require.Equal(t, cli.ExitUsage, proctest.ExitCode(err), "%s", out)
	out, err = metadataCmd("serve", "-database-url", "postgres://x/y", "-gateway", "gw").CombinedOutput()
	require.Equal(t, cli.ExitError, proctest.ExitCode(err), "%s", out)
	require.Contains(t, string(out), "-wg-interface")
	out, err = metadataCmd("-h").CombinedOutput()
	require.Equal(t, cli.ExitOK, proctest.ExitCode(err))
	require.Contains(t, string(out), "METADATA_<FLAG>")
}
