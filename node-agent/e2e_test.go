package nodeagent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/attestboot/attestboot/node-agent/internal/agent"
	attestorv1 "github.com/attestboot/attestboot/proto/attestboot/attestor/v1"
	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	metadatav1 "github.com/attestboot/attestboot/proto/attestboot/metadata/v1"
	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/netnstest"
	"github.com/attestboot/attestboot/services/nodeattest"
	"github.com/attestboot/attestboot/services/pki"
	"github.com/attestboot/attestboot/services/proctest"
	"github.com/attestboot/attestboot/services/testdep"
	"github.com/attestboot/attestboot/services/tpmtest"
)

// machine is a node under test: its host, its TPM, and what the inventory knows of it.
type machine struct {
	id, hostname string
	tpm          *tpmtest.TPM
	host         *netnstest.NS
	dir          string // the node's own files (seed, root)
}

func (s *stack) machine(t *testing.T, id, hostname string, tpm *tpmtest.TPM, enroll bool) *machine {
	t.Helper()
	ctx := context.Background()
	_, err := s.inventory.CreateNode(ctx, &inventoryv1.CreateNodeRequest{Node: &inventoryv1.Node{Id: id, Hostname: hostname, Enabled: true}})
	require.NoError(t, err)
	if enroll {
		sum := tpm.EKSHA256()
		_, err = s.inventory.EnrollNode(ctx, &inventoryv1.EnrollNodeRequest{NodeId: id, Ek: &inventoryv1.EnrollNodeRequest_EkSha256{EkSha256: sum[:]}})
		require.NoError(t, err)
	}
	return &machine{id: id, hostname: hostname, tpm: tpm, host: s.host(t), dir: t.TempDir()}
}

// boot runs the real node-agent command on the machine and returns its exit code and output.
func (s *stack) boot(t *testing.T, m *machine, extra ...string) (int, string) {
	t.Helper()
	iface, err := netnstest.NewName("na")
	require.NoError(t, err)
	defer netnstest.Release(iface)
	args := append([]string{"boot",
		"-node-id", m.id, "-tpm", m.tpm.Addr(),
		"-attestor", attestorAt, "-tunnelmgr", tunnelmgrAt, "-ca", filepath.Join(s.state, pki.CACertFile),
		"-wireguard", "tun", "-interface", iface,
		"-seed-dir", filepath.Join(m.dir, "seed"), "-root", filepath.Join(m.dir, "root"),
		"-deadline", "2m", "-log-level", "debug",
	}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := m.host.Command(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	return proctest.ExitCode(err), string(out)
}

func (s *stack) events(t *testing.T, nodeID string) []inventory.Event {
	t.Helper()
	evs, err := s.store.QueryEvents(context.Background(), inventory.EventQuery{NodeID: nodeID})
	require.NoError(t, err)
	return evs
}

func kinds(evs []inventory.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Kind)
	}
	return out
}

// requireInOrder checks that want appears in got in this order (other kinds may sit between).
func requireInOrder(t *testing.T, got, want []string) {
	t.Helper()
	i := 0
	for _, k := range got {
		if i < len(want) && k == want[i] {
			i++
		}
	}
	require.Equal(t, len(want), i, "events %v should contain %v in order", got, want)
}

func TestBootEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startStack(t, stackOpts{})
	tpms := tpmtest.StartN(t, 3)
	nodes := []*machine{
		s.machine(t, "x1000c0s0b0n0", "cn001", tpms[0], true),
		s.machine(t, "x1000c0s0b0n1", "cn002", tpms[1], true),
	}
	stranger := s.machine(t, "x1000c0s0b0n2", "cn003", tpms[2], false)

	secrets := map[string][]byte{}
	for _, n := range nodes {
		secret := make([]byte, 24)
		_, _ = rand.Read(secret)
		secrets[n.id] = secret
		_, err := s.metadata.PutSecret(ctx, &metadatav1.PutSecretRequest{
			Scope: &metadatav1.Scope{Scope: &metadatav1.Scope_NodeId{NodeId: n.id}}, Name: "munge.key", Value: secret})
		require.NoError(t, err)
	}
	_, err := s.metadata.SetCloudInitData(ctx, &metadatav1.SetCloudInitDataRequest{Data: &metadatav1.CloudInitData{
		Scope: &metadatav1.Scope{Scope: &metadatav1.Scope_Defaults{Defaults: true}},
		UserData: "#cloud-config\nwrite_files:\n  - path: /etc/munge/munge.key\n    permissions: '0600'\n    encoding: b64\n" +
			"    content: {{ secret \"munge.key\" | base64 }}\nruncmd:\n  - [touch, /var/lib/attestboot-runcmd]\n",
	}})
	require.NoError(t, err)

	// Each node runs the real cloud-init client on the seed node-agent wrote, in a sandbox
	// (overlay root, own mount and UTS namespaces) inside the node's network namespace, so
	// cloud-init's own phone_home travels through the node's tunnel.
	testdep.Binaries(t, "cloud-init", "unshare", "chroot")
	sandbox, err := filepath.Abs("../scripts/cloud-init-sandbox")
	require.NoError(t, err)
	var wg sync.WaitGroup
	codes := make([]int, len(nodes)+1)
	outs := make([]string, len(nodes)+1)
	for i, m := range append(nodes, stranger) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work := filepath.Join(m.dir, "sandbox")
			codes[i], outs[i] = s.boot(t, m, "-phone-home", "auto",
				"-cloud-init", sandbox+" {seed} "+work, "-root", filepath.Join(work, "upper"))
		}()
	}
	wg.Wait()

	for i, n := range nodes {
		require.Equal(t, 0, codes[i], "node %s:\n%s", n.id, outs[i])
		evs := s.events(t, n.id)
		requireInOrder(t, kinds(evs), []string{"attestation.begun", "attestation.passed", "tunnel.opened", "boot.completed", "tunnel.closed"})
		resp, err := s.tunnels.ListTunnels(ctx, &tunnelmgrv1.ListTunnelsRequest{NodeId: n.id})
		require.NoError(t, err)
		require.Len(t, resp.GetTunnels(), 1)
		tun := resp.GetTunnels()[0]
		require.Equal(t, tunnelmgrv1.TunnelState_TUNNEL_STATE_CLOSED, tun.GetState())
		require.Equal(t, "phone_home", tun.GetCloseReason())
		require.NotNil(t, tun.GetPhoneHomeTime())
		// The secret-bearing seed files are gone; the node keeps no copy.
		require.NoFileExists(t, filepath.Join(n.dir, "seed", "user-data"))
		require.NoFileExists(t, filepath.Join(n.dir, "seed", "vendor-data"))
		node, err := s.inventory.GetNode(ctx, &inventoryv1.GetNodeRequest{Id: n.id})
		require.NoError(t, err)
		require.NotNil(t, node.GetNode().GetLastBootTime(), "boot recorded")

		// What cloud-init did to the node's root.
		root := filepath.Join(n.dir, "sandbox", "upper")
		hostname, err := os.ReadFile(filepath.Join(root, "etc/hostname"))
		require.NoError(t, err)
		require.Equal(t, n.hostname, strings.TrimSpace(string(hostname)), "hostname from the node's data")
		key := filepath.Join(root, "etc/munge/munge.key")
		got, err := os.ReadFile(key)
		require.NoError(t, err)
		require.Equal(t, secrets[n.id], got, "the node's own secret")
		st, err := os.Stat(key)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
		require.FileExists(t, filepath.Join(root, "var/lib/attestboot-runcmd"), "runcmd ran")
		// Phone-home came from cloud-init itself, with the host keys it generated.
		hk, err := s.metadata.ListHostKeys(ctx, &metadatav1.ListHostKeysRequest{NodeId: n.id})
		require.NoError(t, err)
		require.NotEmpty(t, hk.GetHostKeys(), "SSH host keys recorded at phone-home")
		// cloud-init's own copies of the secret-bearing documents and its logs are purged.
		leftovers, _ := filepath.Glob(filepath.Join(root, "var/lib/cloud/instances/*/user-data.txt*"))
		require.Empty(t, leftovers)
		require.NoFileExists(t, filepath.Join(root, "var/log/cloud-init.log"))
		requireNoSecretIn(t, root, secrets[n.id])
	}
	status, err := s.tunnels.GetGatewayStatus(ctx, &tunnelmgrv1.GetGatewayStatusRequest{})
	require.NoError(t, err)
	require.Zero(t, status.GetGateway().GetPeerCount(), "no peer left on the gateway")
	require.Zero(t, status.GetGateway().GetOpenTunnels(), "every address released")

	// The node whose TPM is not enrolled gets no peer and no data, and its refusal is an event.
	require.Equal(t, int(agent.ClassAttestation), codes[2], "%s", outs[2])
	evs := s.events(t, stranger.id)
	last := evs[len(evs)-1]
	require.Equal(t, "attestation.refused", last.Kind, "%v", kinds(evs))
	require.Equal(t, "not_enrolled", last.Reason)
	for _, e := range evs {
		require.NotContains(t, []string{"attestation.passed", "tunnel.opened", "boot.completed"}, e.Kind)
	}
	resp, err := s.tunnels.ListTunnels(ctx, &tunnelmgrv1.ListTunnelsRequest{NodeId: stranger.id})
	require.NoError(t, err)
	require.Empty(t, resp.GetTunnels())
	require.NoDirExists(t, filepath.Join(stranger.dir, "seed"), "no data reached it")
}

// requireNoSecretIn checks no file under root but the one meant to hold it contains the secret
// (in clear or base64, as the documents carried it).
func requireNoSecretIn(t *testing.T, root string, secret []byte) {
	t.Helper()
	b64 := []byte(base64.StdEncoding.EncodeToString(secret))
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || strings.HasSuffix(path, "etc/munge/munge.key") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		require.False(t, bytes.Contains(b, secret) || bytes.Contains(b, b64), "secret left in %s", path)
		return nil
	})
	require.NoError(t, err)
}

// A node that dies after opening its tunnel loses its peer when the tunnel expires.
func TestDeadNodeTunnelExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startStack(t, stackOpts{tunnelTTL: "3s"})
	tpm := tpmtest.Start(t)
	m := s.machine(t, "x1000c0s0b0n9", "cn009", tpm, true)

	// Everything node-agent does up to the tunnel, then nothing: it "dies".
	ch, err := tpm.Open()
	require.NoError(t, err)
	n, err := nodeattest.Open(ch, nodeattest.Config{})
	require.NoError(t, err)
	defer n.Close()
	tlsCfg, err := pki.NodeClientTLS(filepath.Join(s.state, pki.CACertFile))
	require.NoError(t, err)
	dial := func(addr string) *grpc.ClientConn {
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return m.host.Dial(ctx, "tcp", a) }))
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	wgKey := make([]byte, 32)
	_, _ = rand.Read(wgKey)
	res, err := n.Attest(ctx, attestorv1.NewAttestorServiceClient(dial(attestorAt)), m.id, wgKey)
	require.NoError(t, err)
	_, err = tunnelmgrv1.NewTunnelManagerServiceClient(dial(tunnelmgrAt)).OpenTunnel(ctx,
		&tunnelmgrv1.OpenTunnelRequest{AttestationId: res.AttestationID, WireguardPublicKey: wgKey})
	require.NoError(t, err)
	status, err := s.tunnels.GetGatewayStatus(ctx, &tunnelmgrv1.GetGatewayStatusRequest{})
	require.NoError(t, err)
	require.EqualValues(t, 1, status.GetGateway().GetPeerCount())

	require.Eventually(t, func() bool {
		st, err := s.tunnels.GetGatewayStatus(ctx, &tunnelmgrv1.GetGatewayStatusRequest{})
		return err == nil && st.GetGateway().GetPeerCount() == 0 && st.GetGateway().GetOpenTunnels() == 0
	}, 20*time.Second, 250*time.Millisecond, "the expired tunnel's peer is removed")
	requireInOrder(t, kinds(s.events(t, m.id)), []string{"attestation.passed", "tunnel.opened", "tunnel.expired"})
}
