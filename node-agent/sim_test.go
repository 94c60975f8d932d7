package nodeagent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/node-agent/internal/sim"
	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/netnstest"
	"github.com/attestboot/attestboot/services/pki"
	"github.com/attestboot/attestboot/services/testdep"
)

// simEnv makes this test binary run as nodesim. The whole simulator must live in a node host's
// namespace (its netstack WireGuard ends open their UDP sockets from wireguard-go goroutines),
// so it runs as a child process under `ip netns exec`, the shape it has in real use.
const simEnv = "ATTESTBOOT_TEST_RUN_NODESIM"

func init() {
	if os.Getenv(simEnv) == "1" {
		os.Exit(sim.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
}

// runNodesim runs nodesim with args on host and returns its JSON report.
func (s *stack) runNodesim(t *testing.T, host *netnstest.NS, args ...string) sim.Report {
	t.Helper()
	report := filepath.Join(t.TempDir(), "report.json")
	args = append([]string{
		"-attestor", attestorAt, "-tunnelmgr", tunnelmgrAt, "-ca", filepath.Join(s.state, pki.CACertFile),
		"-deadline", "90s", "-work-dir", t.TempDir(), "-json", report, "-node-log-level", "warn",
	}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := host.Command(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), simEnv+"=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "nodesim:\n%s", out)
	t.Logf("nodesim:\n%s", out)
	b, err := os.ReadFile(report)
	require.NoError(t, err)
	var rep sim.Report
	require.NoError(t, json.Unmarshal(b, &rep))
	return rep
}

// TestNodesimBootStorm boots five simulated nodes, enrolled by nodesim itself, through the real
// services, twice: the second run finds its TPMs cached and its nodes enrolled already.
func TestNodesimBootStorm(t *testing.T) {
	t.Parallel()
	testdep.Binaries(t, "swtpm", "swtpm_setup", "swtpm_localca")
	ctx := context.Background()
	s := startStack(t, stackOpts{})
	host := s.host(t)
	const n = 5
	args := []string{"-nodes", "5", "-prefix", "simt", "-enroll", "-group", "storm",
		"-admin-cert", filepath.Join(s.state, pki.AdminCertFile), "-admin-key", filepath.Join(s.state, pki.AdminKeyFile),
		// A cache of the tests' own: a nodesim or make bench running on this machine holds
		// leases on the default one's TPMs.
		"-tpm", "swtpm", "-tpm-cache", filepath.Join(os.TempDir(), "attestboot-nodesim-swtpm-test")}

	for run := 1; run <= 2; run++ {
		rep := s.runNodesim(t, host, args...)
		require.Equal(t, n, rep.Nodes, "run %d", run)
		require.Equal(t, n, rep.Succeeded, "run %d: failures %+v", run, rep.Failures)
		require.Zero(t, rep.Failed)
		require.Empty(t, rep.Failures)
		require.Equal(t, "swtpm", rep.TPMKind)
		require.Positive(t, rep.Throughput)

		phases := map[string]sim.PhaseStats{}
		for _, p := range rep.Phases {
			phases[p.Name] = p
		}
		for _, name := range []string{"tpm", "attest", "tunnel", "wireguard", "fetch", "seed", "phone-home", "total"} {
			p, ok := phases[name]
			require.True(t, ok, "run %d: phase %s reported", run, name)
			require.Equal(t, n, p.Count, "run %d: phase %s", run, name)
			require.LessOrEqual(t, p.P50, p.P99)
			require.LessOrEqual(t, p.P99, p.Max)
		}
		require.Greater(t, phases["total"].Max, phases["attest"].Max)

		var tunnels []string
		for i, r := range rep.Results {
			require.Equal(t, "simt"+[]string{"00001", "00002", "00003", "00004", "00005"}[i], r.ID)
			require.True(t, r.OK, "%+v", r)
			require.Equal(t, i, r.TPMIndex, "node i always runs TPM i, so its EK and enrollment stay")
			tunnels = append(tunnels, r.TunnelID)

			// The node is done when its phone-home is answered; the service closes the tunnel
			// right after (-close-delay).
			var resp *tunnelmgrv1.ListTunnelsResponse
			require.Eventually(t, func() bool {
				var err error
				resp, err = s.tunnels.ListTunnels(ctx, &tunnelmgrv1.ListTunnelsRequest{NodeId: r.ID})
				if err != nil || len(resp.GetTunnels()) != run {
					return false
				}
				for _, tun := range resp.GetTunnels() {
					if tun.GetState() != tunnelmgrv1.TunnelState_TUNNEL_STATE_CLOSED {
						return false
					}
				}
				return true
			}, 10*time.Second, 50*time.Millisecond, "node %s: one closed tunnel per boot", r.ID)
			for _, tun := range resp.GetTunnels() {
				require.Equal(t, "phone_home", tun.GetCloseReason())
			}
			requireInOrder(t, kinds(s.events(t, r.ID)), []string{"enrollment.created", "attestation.passed", "tunnel.opened", "boot.completed", "tunnel.closed"})
		}
		slices.Sort(tunnels)
		require.Len(t, slices.Compact(tunnels), n, "every node its own tunnel")

		var status *tunnelmgrv1.GetGatewayStatusResponse
		require.Eventually(t, func() bool {
			var err error
			status, err = s.tunnels.GetGatewayStatus(ctx, &tunnelmgrv1.GetGatewayStatusRequest{})
			return err == nil && status.GetGateway().GetPeerCount() == 0
		}, 10*time.Second, 50*time.Millisecond, "run %d: no peer left on the gateway", run)
		require.Zero(t, status.GetGateway().GetOpenTunnels(), "run %d: every address released", run)
	}

	members, err := s.inventory.ListGroupMembers(ctx, &inventoryv1.ListGroupMembersRequest{Group: "storm"})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"simt00001", "simt00002", "simt00003", "simt00004", "simt00005"}, members.GetNodeIds())
	enrolled := 0
	for _, e := range s.events(t, "simt00001") {
		if e.Kind == "enrollment.created" {
			enrolled++
		}
	}
	require.Equal(t, 1, enrolled, "enrolling again with the same EK changes nothing")
}

// TestNodesimSoftTPMs boots nodes whose TPMs are the simulator's in-process software TPMs
// (services/softtpm) through the real, unchanged services: the attestor verifies their EKs,
// credentials and quotes like any TPM's, and every node goes the whole way.
func TestNodesimSoftTPMs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startStack(t, stackOpts{})
	host := s.host(t)
	const n = 20
	rep := s.runNodesim(t, host, "-nodes", fmt.Sprint(n), "-prefix", "soft", "-enroll",
		"-admin-cert", filepath.Join(s.state, pki.AdminCertFile), "-admin-key", filepath.Join(s.state, pki.AdminKeyFile),
		"-tpm", "soft", "-tpm-cache", filepath.Join(os.TempDir(), "attestboot-nodesim-softtpm-test"))
	require.Equal(t, "soft", rep.TPMKind)
	require.Equal(t, n, rep.Succeeded, "failures %+v", rep.Failures)
	require.Zero(t, rep.Failed)
	eks := map[string]bool{}
	for _, r := range rep.Results {
		require.True(t, r.OK, "%+v", r)
		// The service closes the tunnel right after the phone-home's answer (-close-delay).
		require.Eventually(t, func() bool {
			return slices.Contains(kinds(s.events(t, r.ID)), "tunnel.closed")
		}, 10*time.Second, 50*time.Millisecond, "node %s: tunnel closed", r.ID)
		requireInOrder(t, kinds(s.events(t, r.ID)), []string{"enrollment.created", "attestation.passed", "tunnel.opened", "boot.completed", "tunnel.closed"})
		e, err := s.inventory.GetEnrollment(ctx, &inventoryv1.GetEnrollmentRequest{NodeId: r.ID})
		require.NoError(t, err)
		eks[string(e.GetEnrollment().GetEkSha256())] = true
	}
	require.Len(t, eks, n, "every software TPM its own EK")
}
