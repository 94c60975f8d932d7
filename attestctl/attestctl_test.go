package attestctl_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/attestctl"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/pki"
	"github.com/attestboot/attestboot/services/proctest"
)

func fakeEK(label string) string {
	sum := sha256.Sum256([]byte(label))
	return hex.EncodeToString(sum[:])
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// TestCLI drives the command line against a real attestor and metadata service.
func TestCLI(t *testing.T) {
	t.Parallel()
	s := startStack(t)

	t.Run("nodes and enrollment", func(t *testing.T) {
		r := s.run(t, "nodes", "create", "n1", "--hostname", "n1.cluster", "--mac", "aa:bb:cc:dd:ee:01")
		require.Equal(t, 0, r.code, r)
		r = s.run(t, "enroll", "n1", "--ek-sha256", fakeEK("n1"))
		require.Equal(t, 0, r.code, r)
		require.Contains(t, r.stdout, fakeEK("n1"))

		r = s.run(t, "enrollment", "get", "n1")
		require.Equal(t, 0, r.code, r)
		require.Contains(t, r.stdout, "source:")
		require.Contains(t, r.stdout, "admin")

		// A different EK for an enrolled node is a conflict until the old one is deleted.
		r = s.run(t, "enroll", "n1", "--ek-sha256", fakeEK("other"))
		require.Equal(t, attestctl.ExitConflict, r.code, r)
		require.Contains(t, r.stderr, "enrollment delete")
		r = s.run(t, "enrollment", "delete", "n1")
		require.Equal(t, attestctl.ExitUsage, r.code, "a reason is required: %s", r)
		r = s.run(t, "enrollment", "delete", "n1", "--reason", "motherboard replaced")
		require.Equal(t, 0, r.code, r)
		r = s.run(t, "enroll", "--ek-sha256", fakeEK("other"), "n1") // flags before the node work too
		require.Equal(t, 0, r.code, r)

		r = s.run(t, "nodes", "disable", "n1")
		require.Equal(t, 0, r.code, r)
		require.Regexp(t, `enabled:\s+no`, r.stdout)
		r = s.run(t, "nodes", "enable", "n1")
		require.Equal(t, 0, r.code, r)
		require.Regexp(t, `enabled:\s+yes`, r.stdout)
		r = s.run(t, "nodes", "update", "n1", "--description", "rack 3")
		require.Equal(t, 0, r.code, r)
		require.Regexp(t, `description:\s+rack 3`, r.stdout)
	})

	t.Run("nodes list table and json", func(t *testing.T) {
		for _, id := range []string{"list-a", "list-b"} {
			require.Equal(t, 0, s.run(t, "nodes", "create", id, "--hostname", id+".cluster").code)
		}
		r := s.run(t, "nodes", "list", "--prefix", "list-")
		require.Equal(t, 0, r.code, r)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		require.Len(t, lines, 3, r.stdout)
		require.Regexp(t, `^ID\s+HOSTNAME\s+MAC\s+ENABLED\s+ENROLLED\s+GROUPS\s+LAST BOOT$`, lines[0])
		require.Regexp(t, `^list-a\s+list-a\.cluster\s+-\s+yes\s+no\s+-\s+-$`, lines[1])
		// Columns are aligned: the hostname starts at the same offset on every line.
		require.Equal(t, strings.Index(lines[0], "HOSTNAME"), strings.Index(lines[1], "list-a.cluster"))

		r = s.run(t, "-json", "nodes", "list", "--prefix", "list-")
		require.Equal(t, 0, r.code, r)
		var doc struct {
			Nodes []struct {
				ID       string `json:"id"`
				Hostname string `json:"hostname"`
				Enabled  bool   `json:"enabled"`
			} `json:"nodes"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc), r.stdout)
		require.Len(t, doc.Nodes, 2)
		require.Equal(t, "list-b", doc.Nodes[1].ID)
		require.True(t, doc.Nodes[1].Enabled)
		// -json also works after the command.
		r2 := s.run(t, "nodes", "list", "--prefix", "list-", "--json")
		require.JSONEq(t, r.stdout, r2.stdout)
	})

	t.Run("enroll csv with a bad row", func(t *testing.T) {
		require.Equal(t, 0, s.run(t, "nodes", "create", "csv-existing").code)
		dir := t.TempDir()
		csv := writeFile(t, dir, "rack.csv", "node_id,hostname,mac,ek_sha256\n"+
			"csv-new,csv-new.cluster,aa:bb:cc:00:00:01,"+fakeEK("csv-new")+"\n"+
			"csv-bad,,,not-a-hash\n"+
			"csv-existing,,,"+fakeEK("csv-existing")+"\n")
		r := s.run(t, "enroll", "--csv", csv)
		require.Equal(t, attestctl.ExitError, r.code, r)
		require.Contains(t, r.stdout, "3 rows: 2 enrolled (1 nodes created), 1 failed")
		require.Contains(t, r.stderr, "line 3: csv-bad: FAILED")
		require.Contains(t, r.stderr, "line 2: csv-new: enrolled (node created)")
		require.NotContains(t, r.stderr, "\r", "no progress bar without a terminal")

		r = s.run(t, "nodes", "get", "csv-new", "-json")
		require.Equal(t, 0, r.code, r)
		require.Contains(t, r.stdout, `"hostname": "csv-new.cluster"`)
		require.Contains(t, r.stdout, `"enrolled": true`)

		// The same file again: enrolled rows succeed again (same EK), the bad row still fails.
		r = s.run(t, "-json", "enroll", "--csv", csv)
		require.Equal(t, attestctl.ExitError, r.code, r)
		var sum struct {
			Enrolled, Created, Failed int
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &sum), r.stdout)
		require.Equal(t, 2, sum.Enrolled)
		require.Equal(t, 0, sum.Created)
		require.Equal(t, 1, sum.Failed)
	})

	t.Run("groups", func(t *testing.T) {
		require.Equal(t, 0, s.run(t, "nodes", "create", "g-node").code)
		r := s.run(t, "groups", "create", "compute", "--priority", "10", "--description", "compute nodes")
		require.Equal(t, 0, r.code, r)
		r = s.run(t, "groups", "add", "compute", "g-node")
		require.Equal(t, 0, r.code, r)
		pcr0, pcr7 := fakeEK("pcr0"), fakeEK("pcr7")
		r = s.run(t, "groups", "pcr-policy", "set", "compute", "7="+pcr7+",0="+pcr0)
		require.Equal(t, 0, r.code, r)
		r = s.run(t, "groups", "get", "compute")
		require.Equal(t, 0, r.code, r)
		require.Regexp(t, `pcr 0:\s+`+pcr0, r.stdout)
		require.Regexp(t, `pcr 7:\s+`+pcr7, r.stdout)
		require.Regexp(t, `members:\s+1 g-node`, r.stdout)
		r = s.run(t, "groups", "list")
		require.Equal(t, 0, r.code, r)
		require.Regexp(t, `compute\s+10\s+no\s+0,7\s+compute nodes`, r.stdout)
		r = s.run(t, "groups", "pcr-policy", "set", "compute", "24="+pcr0)
		require.Equal(t, attestctl.ExitUsage, r.code, r)
	})

	t.Run("cloud-init from YAML files, secrets and render", func(t *testing.T) {
		const secret = "munge-key-value-5d1f0b9e"
		require.Equal(t, 0, s.run(t, "nodes", "create", "ci1", "--hostname", "ci1.cluster").code)

		// A secret value given as an argument is refused, and not repeated in the error.
		r := s.run(t, "secrets", "put", "defaults", "munge.key", secret)
		require.Equal(t, attestctl.ExitUsage, r.code, r)
		require.NotContains(t, r.stdout+r.stderr, secret)
		require.Contains(t, r.stderr, "never taken from the command line")

		r = s.runWith(t, secret, nil, "secrets", "put", "defaults", "munge.key")
		require.Equal(t, 0, r.code, r)
		require.NotContains(t, r.stdout+r.stderr, secret, "the value is never echoed")
		require.Contains(t, r.stdout, "stored secret munge.key of defaults")
		r = s.run(t, "secrets", "list")
		require.Equal(t, 0, r.code, r)
		require.Regexp(t, `defaults\s+munge\.key\s+kek1`, r.stdout)
		require.NotContains(t, r.stdout, secret)

		dir := t.TempDir()
		user := writeFile(t, dir, "user.yaml", "#cloud-config\nwrite_files:\n  - path: /etc/munge/munge.key\n    content: '{{ secret \"munge.key\" }}'\n")
		network := writeFile(t, dir, "network.yaml", "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n")
		meta := writeFile(t, dir, "meta.yaml", "rack: r3\nslots: [1, 2]\n")
		r = s.run(t, "cloud-init", "set", "defaults", "--user-data", user, "--network-config", network, "--meta-data", meta)
		require.Equal(t, 0, r.code, r)
		r = s.run(t, "cloud-init", "get", "defaults")
		require.Equal(t, 0, r.code, r)
		require.Contains(t, r.stdout, "rack: r3")
		require.Contains(t, r.stdout, "dhcp4: true")

		// Setting one document keeps the others.
		vendor := writeFile(t, dir, "vendor.yaml", "#cloud-config\nruncmd:\n  - [echo, vendor]\n")
		r = s.run(t, "cloud-init", "set", "defaults", "--vendor-data", vendor)
		require.Equal(t, 0, r.code, r)
		r = s.run(t, "-json", "cloud-init", "get", "defaults")
		require.Equal(t, 0, r.code, r)
		require.Contains(t, r.stdout, "munge.key")
		require.Contains(t, r.stdout, "echo")

		r = s.run(t, "render", "ci1")
		require.Equal(t, 0, r.code, r)
		require.Contains(t, r.stdout, "[REDACTED:munge.key]")
		require.NotContains(t, r.stdout, secret)
		require.Contains(t, r.stdout, "r3", "meta-data from YAML is rendered")
		require.Contains(t, r.stdout, "# secrets used: munge.key")

		// Secrets from a file; delete.
		f := writeFile(t, dir, "token", "slurm-token\n")
		r = s.run(t, "secrets", "put", "node:ci1", "slurm.token", "--from-file", f)
		require.Equal(t, 0, r.code, r)
		require.NotContains(t, r.stdout, "slurm-token")
		r = s.run(t, "secrets", "delete", "node:ci1", "slurm.token")
		require.Equal(t, 0, r.code, r)
		r = s.run(t, "secrets", "delete", "node:ci1", "slurm.token")
		require.Equal(t, attestctl.ExitNotFound, r.code, r)

		r = s.run(t, "cloud-init", "get", "sideways")
		require.Equal(t, attestctl.ExitUsage, r.code, r)
	})

	t.Run("known-hosts", func(t *testing.T) {
		require.Equal(t, 0, s.run(t, "nodes", "create", "kh1", "--hostname", "kh1.cluster").code)
		require.Equal(t, 0, s.run(t, "nodes", "create", "kh2").code)
		ctx := t.Context()
		require.NoError(t, s.store.InTx(ctx, func(q *inventory.Queries) error {
			if err := q.ReplaceHostKeys(ctx, "kh1", []inventory.HostKey{
				{Type: "ssh-ed25519", PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKh1 root@kh1"},
				{Type: "ecdsa-sha2-nistp256", PublicKey: "ecdsa-sha2-nistp256 AAAAE2VjZHNhKh1"},
			}); err != nil {
				return err
			}
			return q.ReplaceHostKeys(ctx, "kh2", []inventory.HostKey{{Type: "ssh-ed25519", PublicKey: "ssh-ed25519 AAAAKh2"}})
		}))
		r := s.run(t, "known-hosts")
		require.Equal(t, 0, r.code, r)
		require.Contains(t, r.stdout, "kh1.cluster,kh1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKh1\n", "the comment is dropped")
		require.Contains(t, r.stdout, "kh1.cluster,kh1 ecdsa-sha2-nistp256 AAAAE2VjZHNhKh1\n")
		require.Contains(t, r.stdout, "kh2 ssh-ed25519 AAAAKh2\n", "the node id is the host without a hostname")
		r = s.run(t, "known-hosts", "--node", "kh2")
		require.Equal(t, "kh2 ssh-ed25519 AAAAKh2\n", r.stdout)
	})

	t.Run("events and follow", func(t *testing.T) {
		require.Equal(t, 0, s.run(t, "nodes", "create", "ev1").code)
		r := s.run(t, "events", "--node", "ev1")
		require.Equal(t, 0, r.code, r)
		require.Regexp(t, `ev1\s+node\.created\s+attestor`, r.stdout)

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var out, errb syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- attestctl.Run(ctx, append(s.globals(), "events", "--follow", "--node", "ev1", "--kind", "node."),
				attestctl.Env{Stdout: &out, Stderr: &errb})
		}()
		waitFor(t, "the existing event", func() bool { return strings.Contains(out.String(), "node.created") })
		require.Equal(t, 0, s.run(t, "nodes", "update", "ev1", "--hostname", "ev1.cluster").code)
		waitFor(t, "the new event", func() bool { return strings.Contains(out.String(), "node.updated") })
		cancel()
		require.Equal(t, 0, <-done, "Ctrl-C ends --follow cleanly: %s", errb.String())
	})

	t.Run("watch once", func(t *testing.T) {
		ctx := t.Context()
		for _, id := range []string{"w1", "w2", "w3"} {
			require.Equal(t, 0, s.run(t, "nodes", "create", id).code)
		}
		for _, e := range []inventory.Event{
			{NodeID: "w1", Kind: "attestation.begun", Service: "attestor"},
			{NodeID: "w1", Kind: "attestation.passed", Service: "attestor"},
			{NodeID: "w1", Kind: "tunnel.opened", Service: "tunnelmgr"},
			{NodeID: "w1", Kind: "boot.completed", Service: "metadata"},
			{NodeID: "w1", Kind: "metadata.secrets_delivered", Service: "metadata"}, // late audit
			{NodeID: "w2", Kind: "attestation.refused", Service: "attestor", Reason: "ek_mismatch"},
		} {
			_, err := s.store.AppendEvent(ctx, e)
			require.NoError(t, err)
		}
		r := s.run(t, "-json", "watch", "--once", "--node-prefix", "w")
		require.Equal(t, 0, r.code, r)
		var snap struct {
			Nodes  int            `json:"nodes"`
			States map[string]int `json:"states"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &snap), r.stdout)
		require.Equal(t, 3, snap.Nodes)
		require.Equal(t, map[string]int{"waiting": 1, "attesting": 0, "attested": 0, "tunnel": 0, "fetched": 0, "booted": 1, "refused": 1}, snap.States)
		r = s.run(t, "watch", "--once", "--node-prefix", "w")
		require.Contains(t, r.stdout, "nodes=3 waiting=1")
		require.Contains(t, r.stdout, "booted=1")

		// Live: a new boot event moves the counts on the next refresh.
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var out, errb syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- attestctl.Run(wctx, append(s.globals(), "watch", "--interval", "100ms", "--node-prefix", "w"),
				attestctl.Env{Stdout: &out, Stderr: &errb})
		}()
		waitFor(t, "a first refresh", func() bool { return strings.Contains(out.String(), "booted=1") })
		_, err := s.store.AppendEvent(ctx, inventory.Event{NodeID: "w3", Kind: "boot.completed", Service: "metadata"})
		require.NoError(t, err)
		waitFor(t, "w3 booted", func() bool {
			return strings.Contains(out.String(), "waiting=0") && strings.Contains(out.String(), "booted=2(+")
		})
		cancel()
		require.Equal(t, 0, <-done, errb.String())
	})

	t.Run("exit codes", func(t *testing.T) {
		r := s.run(t, "nodes", "get", "no-such-node")
		require.Equal(t, attestctl.ExitNotFound, r.code, r)
		require.Contains(t, r.stderr, "hint: ")

		require.Equal(t, 0, s.run(t, "nodes", "create", "dup").code)
		r = s.run(t, "nodes", "create", "dup")
		require.Equal(t, attestctl.ExitConflict, r.code, r)

		// Only the CA: no admin credential at all.
		noCred := t.TempDir()
		ca, err := os.ReadFile(filepath.Join(s.state, pki.CACertFile))
		require.NoError(t, err)
		writeFile(t, noCred, pki.CACertFile, string(ca))
		r = runCLI(t.Context(), "", nil, "-attestor", s.attestor, "-state-dir", noCred, "nodes", "list")
		require.Equal(t, attestctl.ExitRefused, r.code, r)
		require.Contains(t, r.stderr, "no admin credential: pass -cert/-key")

		// The token alone is enough; a wrong one is refused.
		r = runCLI(t.Context(), "", map[string]string{"ATTESTCTL_TOKEN": s.token}, "-attestor", s.attestor, "-state-dir", noCred, "nodes", "get", "dup")
		require.Equal(t, 0, r.code, r)
		r = runCLI(t.Context(), "", map[string]string{"ATTESTCTL_TOKEN": "wrong-token-0123456789"}, "-attestor", s.attestor, "-state-dir", noCred, "nodes", "get", "dup")
		require.Equal(t, attestctl.ExitRefused, r.code, r)
		require.NotContains(t, r.stderr, "wrong-token")

		// Environment overrides, and an address nobody listens on.
		r = runCLI(t.Context(), "", map[string]string{"ATTESTCTL_ATTESTOR": proctest.FreeAddr(t), "ATTESTCTL_STATE_DIR": s.state, "ATTESTCTL_TIMEOUT": "2s"}, "nodes", "list")
		require.Equal(t, attestctl.ExitUnavailable, r.code, r)
		require.Contains(t, r.stderr, "is it running?")

		for _, args := range [][]string{{"nodes"}, {"nodes", "frob"}, {"frob"}, {"nodes", "get"}, {"-token", "x", "nodes", "list"},
			{"enroll", "n1"}, {"enroll", "n1", "--ek-sha256", "abc"}, {"tunnels", "close", "--reason", "x"}} {
			r = s.run(t, args...)
			require.Equal(t, attestctl.ExitUsage, r.code, "%v: %s", args, r)
		}
		// Help is an answer, not a failure: a command's flags, a group's subcommands.
		r = s.run(t, "nodes", "list", "-h")
		require.Equal(t, 0, r.code, r)
		require.Contains(t, r.stderr, "usage: attestctl nodes list")
		require.NotContains(t, r.stderr, "attestctl: ", "no error printed")
		for _, h := range []string{"-h", "--help", "help"} {
			r = s.run(t, "nodes", h)
			require.Equal(t, 0, r.code, r)
			require.Contains(t, r.stdout, "nodes list|get|create")
			require.NotContains(t, r.stdout, "\n  tunnels ", "only the group asked about")
		}
		r = s.run(t, "help")
		require.Equal(t, 0, r.code)
		for code := range 7 {
			require.Contains(t, r.stdout, fmt.Sprintf("\n  %d  ", code), "help documents exit code %d", code)
		}
	})
}

// TestBinary runs the real process: exit status, streams and the environment.
func TestBinary(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	cmd := exec.Command(os.Args[0], "-json", "nodes", "create", "bin1")
	cmd.Env = append(os.Environ(), childEnv+"=1", "ATTESTCTL_ATTESTOR="+s.attestor, "ATTESTCTL_STATE_DIR="+s.state)
	out, err := cmd.Output()
	require.NoError(t, err)
	require.Contains(t, string(out), `"id": "bin1"`)

	cmd = exec.Command(os.Args[0], "secrets", "put", "defaults", "bin.secret")
	cmd.Env = append(os.Environ(), childEnv+"=1", "ATTESTCTL_METADATA="+s.metadata, "ATTESTCTL_STATE_DIR="+s.state)
	cmd.Stdin = strings.NewReader("binary-secret-value")
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NotContains(t, string(out), "binary-secret-value")

	cmd = exec.Command(os.Args[0], "nodes", "get", "nope")
	cmd.Env = append(os.Environ(), childEnv+"=1", "ATTESTCTL_ATTESTOR="+s.attestor, "ATTESTCTL_STATE_DIR="+s.state)
	out, err = cmd.CombinedOutput()
	require.Equal(t, attestctl.ExitNotFound, proctest.ExitCode(err), "%s", out)
}
