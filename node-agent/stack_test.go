package nodeagent_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	nodeagent "github.com/attestboot/attestboot/node-agent"
	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	metadatav1 "github.com/attestboot/attestboot/proto/attestboot/metadata/v1"
	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/netnstest"
	"github.com/attestboot/attestboot/services/pgtest"
	"github.com/attestboot/attestboot/services/pki"
	"github.com/attestboot/attestboot/services/proctest"
	"github.com/attestboot/attestboot/services/testdep"
)

// childEnv makes this test binary run as node-agent, so the end-to-end test runs the real
// command without a separate build.
const childEnv = "ATTESTBOOT_TEST_RUN_NODE_AGENT"

func TestMain(m *testing.M) {
	proctest.RunIfChild(childEnv, func() int { return nodeagent.Main(os.Args[1:], os.Stderr) })
	os.Exit(pgtest.Main(m))
}

// The services' binaries, built once per test binary.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func serviceBinaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "attestboot-e2e-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir,
			"github.com/attestboot/attestboot/attestor/cmd/attestor",
			"github.com/attestboot/attestboot/tunnelmgr/cmd/tunnelmgr",
			"github.com/attestboot/attestboot/metadata/cmd/metadata")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	t.Cleanup(func() {}) // the directory is removed by the OS's temp cleaning; binaries are reused across tests
	return binDir
}

// The gateway host's service address (on its loopback) and the pools, inside namespaces the
// test made.
const (
	serviceIP   = "10.99.0.1"
	attestorAt  = serviceIP + ":7443"
	tunnelmgrAt = serviceIP + ":7444"
)

// stack is Postgres and the three services, on a gateway host.
type stack struct {
	dbURL   string
	store   *inventory.Store
	gw      *netnstest.NS
	state   string
	tmIface string
	procs   map[string]*proctest.Process

	inventory inventoryv1.InventoryServiceClient
	metadata  metadatav1.MetadataServiceClient
	tunnels   tunnelmgrv1.TunnelAdminServiceClient
	links     int
}

type stackOpts struct {
	tunnelTTL string
}

func startStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	testdep.Root(t)
	testdep.Binaries(t, "ip", "go")
	bin := serviceBinaries(t)
	ctx := context.Background()
	url := pgtest.NewDB(t)
	s := &stack{dbURL: url, store: inventory.New(pgtest.Pool(t, url), inventory.Options{}),
		gw: netnstest.New(t, "gw"), state: t.TempDir(), procs: map[string]*proctest.Process{}}
	require.NoError(t, s.gw.IP(ctx, "addr", "add", serviceIP+"/32", "dev", "lo"))
	iface, err := netnstest.NewName("tm")
	require.NoError(t, err)
	t.Cleanup(func() { netnstest.Release(iface) })
	s.tmIface = iface

	kek := filepath.Join(s.state, "kek")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	require.NoError(t, os.WriteFile(kek, key, 0o600))
	if o.tunnelTTL == "" {
		o.tunnelTTL = "2m"
	}
	common := []string{"-state-dir", s.state, "-tls-hosts", serviceIP, "-metrics-listen", ""}
	admin := []string{"-tunnelmgr-ca", filepath.Join(s.state, pki.CACertFile),
		"-tunnelmgr-cert", filepath.Join(s.state, pki.AdminCertFile), "-tunnelmgr-key", filepath.Join(s.state, pki.AdminKeyFile)}
	s.run(t, bin, "attestor", attestorAt, append([]string{"-listen", attestorAt}, common...)...)
	s.run(t, bin, "tunnelmgr", tunnelmgrAt, append([]string{"-listen", tunnelmgrAt, "-gateway", "gw1",
		"-wg-interface", iface, "-wg-port", "51820", "-endpoint", serviceIP + ":51820",
		"-pool-v4", "100.64.0.0/16", "-tunnel-ttl", o.tunnelTTL, "-reconcile-interval", "1s"}, common...)...)
	s.run(t, bin, "metadata", "127.0.0.1:7445", append(append([]string{"-listen", "127.0.0.1:7445", "-gateway", "gw1",
		"-wg-interface", iface, "-http-listen", "100.64.0.1:80", "-kek-file", kek,
		"-tunnelmgr-addr", tunnelmgrAt}, admin...), common...)...)

	tlsCfg, err := pki.AdminClientTLS(filepath.Join(s.state, pki.CACertFile), filepath.Join(s.state, pki.AdminCertFile), filepath.Join(s.state, pki.AdminKeyFile))
	require.NoError(t, err)
	dial := func(addr string) *grpc.ClientConn {
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return s.gw.Dial(ctx, "tcp", a) }))
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	s.inventory = inventoryv1.NewInventoryServiceClient(dial(attestorAt))
	s.tunnels = tunnelmgrv1.NewTunnelAdminServiceClient(dial(tunnelmgrAt))
	s.metadata = metadatav1.NewMetadataServiceClient(dial("127.0.0.1:7445"))
	return s
}

// run starts a service in the gateway namespace and waits until it accepts connections.
func (s *stack) run(t *testing.T, bin, name, addr string, args ...string) {
	t.Helper()
	cmd := s.gw.Command(context.Background(), filepath.Join(bin, name), append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), toUpper(name)+"_DATABASE_URL="+s.dbURL)
	ready := func() error {
		c, err := s.gw.Dial(context.Background(), "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	s.procs[name] = proctest.Start(t, cmd, ready)
}

func toUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// host is a node machine: its own namespace linked to the gateway host.
func (s *stack) host(t *testing.T) *netnstest.NS {
	t.Helper()
	s.links++
	ns := netnstest.New(t, "node")
	gwIP, nodeIP := fmt.Sprintf("10.99.%d.1", s.links), fmt.Sprintf("10.99.%d.2", s.links)
	netnstest.Link(t, s.gw, ns, gwIP+"/24", nodeIP+"/24")
	require.NoError(t, ns.IP(context.Background(), "route", "add", "default", "via", gwIP))
	return ns
}
