package metadata_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	metadatav1 "github.com/attestboot/attestboot/proto/attestboot/metadata/v1"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/testdep"
)

// sandboxScript is the repository's runner of the real cloud-init client, relative to this
// package; node-agent's end-to-end test runs the same script.
const sandboxScript = "../scripts/cloud-init-sandbox"

// TestRealCloudInit has Debian's cloud-init 22.4 consume what the service serves, inside node
// namespaces whose only way to the service is their tunnel, through scripts/cloud-init-sandbox
// (an overlay of / in a private mount namespace, so this machine is untouched). One node is
// seeded locally with documents fetched over its tunnel (as node-agent does); the other is
// booted with `ds=nocloud-net;s=URL/`, so cloud-init's own HTTP client fetches them. For both,
// user-data sets the hostname, writes a secret to a 0600 file and runs a command; the
// vendor-data the service adds makes cloud-init phone home, which stores the SSH host keys the
// client generated, marks the boot complete and has tunnelmgr close the tunnel.
func TestRealCloudInit(t *testing.T) {
	t.Parallel()
	testdep.Root(t)
	testdep.Binaries(t, "cloud-init", "unshare", "chroot", "mount", "timeout")
	script, err := filepath.Abs(sandboxScript)
	require.NoError(t, err)
	if _, err := os.Stat(script); err != nil {
		testdep.Missing(t, "%s: %v", script, err)
	}

	ctx := context.Background()
	b := newTestbed(t)
	local := b.addNode(t, "x1000c0s0b0n5", true, netip.Addr{})
	fetched := b.addNode(t, "x1000c0s0b0n6", true, netip.Addr{})
	stub, closerFlags := b.startCloseStub(t)
	s := b.startMetadata(t, closerFlags...)

	for _, n := range []*node{local, fetched} {
		_, err := s.admin.PutSecret(ctx, &metadatav1.PutSecretRequest{Scope: nodeScope(n.id), Name: "munge.key",
			Value: []byte(secretValue + "-" + n.id)})
		require.NoError(t, err)
	}
	// One template for every node: the secret each gets is its own.
	_, err = s.admin.SetCloudInitData(ctx, &metadatav1.SetCloudInitDataRequest{Data: &metadatav1.CloudInitData{Scope: defaultsScope,
		UserData: "#cloud-config\nhostname: ci-{{ .Node.ID }}\n" +
			"write_files:\n  - path: /etc/munge/munge.key\n    permissions: \"0600\"\n    content: {{ secret \"munge.key\" | quote }}\n" +
			"runcmd:\n  - [touch, \"/var/lib/attestboot-runcmd-{{ .Node.ID }}\"]\n",
		VendorData:    "#cloud-config\ntimezone: Europe/Zurich\n",
		NetworkConfig: "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n",
	}})
	require.NoError(t, err)

	// The two boots run one after the other: each takes both cores for a few seconds.
	for _, tc := range []struct {
		n        *node
		seedFrom bool
	}{{local, false}, {fetched, true}} {
		n := tc.n
		seed, work := t.TempDir(), t.TempDir()
		if tc.seedFrom {
			// 22.4 reads network-config only from a local seed.
			code, body := n.get(t, "/cloud-init/network-config")
			require.Equal(t, 200, code)
			require.NoError(t, os.WriteFile(filepath.Join(seed, "network-config"), []byte(body), 0o600))
		} else {
			for _, doc := range []string{"meta-data", "user-data", "vendor-data", "network-config"} {
				code, body := n.get(t, "/cloud-init/"+doc)
				require.Equal(t, 200, code, doc)
				require.NoError(t, os.WriteFile(filepath.Join(seed, doc), []byte(body), 0o600))
			}
		}

		cmd := n.ns.Command(ctx, script, seed, work)
		cmd.Env = append(os.Environ(), "CLOUD_INIT_STAGE_TIMEOUT=60")
		if tc.seedFrom {
			cmd.Env = append(cmd.Env, "SEEDFROM_URL=http://"+gatewayAddr+"/cloud-init")
		}
		start := time.Now()
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "cloud-init-sandbox:\n%s", out)
		t.Logf("cloud-init in the sandbox (seedfrom=%v): %v", tc.seedFrom, time.Since(start).Round(time.Millisecond))
		upper := filepath.Join(work, "upper")
		t.Cleanup(func() {
			if t.Failed() {
				log, _ := os.ReadFile(filepath.Join(upper, "var/log/cloud-init.log"))
				t.Logf("cloud-init.log of %s:\n%s", n.id, log)
			}
		})
		read := func(p string) string {
			t.Helper()
			b, err := os.ReadFile(filepath.Join(upper, p))
			require.NoError(t, err)
			return string(b)
		}

		// Every stage found the datasource the way it was meant to.
		require.Equal(t, n.tun.ID, strings.TrimSpace(read("var/lib/cloud/data/instance-id")), "instance-id from meta-data")
		if tc.seedFrom {
			require.Contains(t, string(out), "http://"+gatewayAddr+"/cloud-init/", "cloud-init fetched over the tunnel")
		}
		// user-data: hostname, the secret in a 0600 file, runcmd.
		require.Equal(t, "ci-"+n.id, strings.TrimSpace(read("etc/hostname")))
		require.Equal(t, secretValue+"-"+n.id, read("etc/munge/munge.key"))
		fi, err := os.Stat(filepath.Join(upper, "etc/munge/munge.key"))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		_, err = os.Stat(filepath.Join(upper, "var/lib/attestboot-runcmd-"+n.id))
		require.NoError(t, err, "runcmd marker")
		// vendor-data and network-config.
		require.Equal(t, "Europe/Zurich", strings.TrimSpace(read("etc/timezone")))
		require.Contains(t, read("etc/systemd/network/10-cloud-init-eth0.network"), "DHCP=ipv4")

		// phone_home reached the service through the tunnel: the host keys cloud-init made are in
		// the inventory, the boot is complete, and tunnelmgr was asked to close the tunnel.
		select {
		case id := <-stub.called:
			require.Equal(t, n.tun.ID, id)
		case <-time.After(15 * time.Second):
			t.Fatalf("tunnelmgr was not asked to close the tunnel of %s", n.id)
		}
		tun, err := b.store.GetTunnel(ctx, n.tun.ID)
		require.NoError(t, err)
		require.Equal(t, inventory.TunnelClosed, tun.State)
		require.False(t, tun.PhonedHomeAt.IsZero())
		keys, err := s.admin.ListHostKeys(ctx, &metadatav1.ListHostKeysRequest{NodeId: n.id})
		require.NoError(t, err)
		var got []string
		for _, k := range keys.GetHostKeys() {
			got = append(got, k.GetPublicKey())
		}
		var want []string
		for _, typ := range []string{"rsa", "ecdsa", "ed25519"} {
			f := strings.Fields(read("etc/ssh/ssh_host_" + typ + "_key.pub"))
			want = append(want, f[0]+" "+f[1])
		}
		slices.Sort(got)
		slices.Sort(want)
		require.Equal(t, want, got, "host keys stored are those cloud-init generated")
		evs, err := b.store.QueryEvents(ctx, inventory.EventQuery{NodeID: n.id, Kinds: []string{"boot.completed"}})
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.Equal(t, true, evs[0].Detail["instance_id_matches"])
		// phone_home reports the datasource's hostname (meta-data local-hostname), not the one
		// user-data set.
		require.Equal(t, "host-"+n.id, evs[0].Detail["reported_hostname"])
		evs, err = b.store.QueryEvents(ctx, inventory.EventQuery{NodeID: n.id, Kinds: []string{"metadata.secrets_delivered"}})
		require.NoError(t, err)
		require.NotEmpty(t, evs)
		require.Equal(t, []any{"munge.key"}, evs[0].Detail["secrets"])
	}

	s.proc.Stop()
	require.NotContains(t, s.out.String(), secretValue, "no secret value in the service's log")
}
