package dist_test

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	nodeagent "github.com/attestboot/attestboot/node-agent"
	"github.com/attestboot/attestboot/node-agent/dist"
	"github.com/attestboot/attestboot/node-agent/internal/agent"
	"github.com/attestboot/attestboot/services/testdep"
)

const (
	mainUnit = "attestboot-node-agent.service"
	seedUnit = "attestboot-node-agent-seed.service"
)

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(dist.Files, name)
	require.NoError(t, err)
	return string(b)
}

// directives parses a unit file into "Section.Key" -> values (a key may repeat).
func directives(t *testing.T, name string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(read(t, name)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			require.True(t, ok, "%s: %q", name, line)
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	return out
}

// words splits every value of key into its space-separated items.
func words(d map[string][]string, key string) []string {
	var out []string
	for _, v := range d[key] {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

func TestUnitsOrderingAndSandbox(t *testing.T) {
	t.Parallel()
	for _, name := range []string{mainUnit, seedUnit} {
		d := directives(t, name)
		require.Equal(t, []string{"oneshot"}, d["Service.Type"], name)
		require.Equal(t, []string{"yes"}, d["Service.RemainAfterExit"], name)
		require.Equal(t, []string{"/etc/attestboot/node-agent.env"}, d["Service.EnvironmentFile"], name)
		require.True(t, strings.HasPrefix(d["Service.ExecStart"][0], "/usr/sbin/node-agent boot"), name)
		require.Contains(t, words(d, "Unit.RequiresMountsFor"), "/var/lib/cloud", "%s: the seed's tmpfs", name)
		// The WireGuard end and the TPM survive the sandbox.
		require.Equal(t, []string{"CAP_NET_ADMIN"}, d["Service.CapabilityBoundingSet"], name)
		require.ElementsMatch(t, []string{"/dev/tpmrm0 rw", "/dev/net/tun rw"}, d["Service.DeviceAllow"], name)
		require.Equal(t, []string{"closed"}, d["Service.DevicePolicy"], name)
		require.Contains(t, words(d, "Service.RestrictAddressFamilies"), "AF_NETLINK", name)
		require.Contains(t, words(d, "Service.ReadWritePaths"), "/var/lib/cloud", name)
		require.Contains(t, words(d, "Service.ReadWritePaths"), "/run", "%s: WireGuard's UAPI socket", name)
		require.NotContains(t, d, "Service.ProtectHostname", "%s: the phone-home reports the hostname cloud-init set", name)
		require.NotContains(t, d, "Service.Restart", name)
	}

	a := directives(t, mainUnit)
	require.Contains(t, words(a, "Unit.Wants"), "network-online.target")
	require.Contains(t, words(a, "Unit.After"), "network-online.target")
	require.Contains(t, words(a, "Unit.Before"), "systemd-user-sessions.service", "nobody logs in before the node is itself")
	require.Contains(t, words(a, "Unit.Before"), "sshd.service")
	require.Contains(t, words(a, "Unit.Conflicts"), seedUnit)
	require.Contains(t, words(a, "Service.ReadWritePaths"), "/var/log", "purging cloud-init's logs")

	b := directives(t, seedUnit)
	require.Equal(t, []string{"no"}, b["Unit.DefaultDependencies"], "cloud-init.service is before sysinit.target")
	require.Contains(t, words(b, "Unit.Before"), "cloud-init.service")
	require.NotContains(t, words(b, "Unit.After"), "network-online.target", "network-online.target is after cloud-init.service")
	require.Contains(t, words(b, "Unit.After"), "systemd-networkd-wait-online.service")
	require.Contains(t, words(b, "Unit.Conflicts"), mainUnit)
	require.Contains(t, b["Service.ExecStart"][0], "-cloud-init= ", "cloud-init's units run it, not the agent")
	require.Contains(t, b["Service.ExecStart"][0], "-phone-home=agent")
}

// verify runs systemd-analyze verify on unit files inside a fake root holding this machine's
// system units, with extra drop-ins for the boot transaction the unit is part of, and returns
// its output (empty when all is well: it reports problems as warnings with exit status 0).
func verify(t *testing.T, units map[string]string, dropIns map[string]string, name string) string {
	t.Helper()
	testdep.Binaries(t, "systemd-analyze")
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "lib/systemd"), 0o755))
	out, err := exec.Command("cp", "-a", "/lib/systemd/system", filepath.Join(root, "lib/systemd/")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for path, content := range map[string]string{
		"usr/sbin/node-agent":                  "#!/bin/sh\n",
		"usr/lib/attestboot/cloud-init-stages": read(t, "cloud-init-stages"),
		"etc/attestboot/node-agent.env":        read(t, "node-agent.env"),
	} {
		p := filepath.Join(root, path)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o755))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc/systemd/system"), 0o755))
	for unit, content := range units {
		require.NoError(t, os.WriteFile(filepath.Join(root, "etc/systemd/system", unit), []byte(content), 0o644))
	}
	for unit, content := range dropIns {
		dir := filepath.Join(root, "etc/systemd/system", unit+".d")
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "test.conf"), []byte(content), 0o644))
	}
	cmd := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+root, filepath.Join("etc/systemd/system", name))
	cmd.Dir = root
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return strings.ReplaceAll(string(out), root, "")
}

func shipped(t *testing.T) map[string]string {
	return map[string]string{mainUnit: read(t, mainUnit), seedUnit: read(t, seedUnit)}
}

func TestUnitsVerify(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/lib/systemd/system/cloud-init.service"); err != nil {
		testdep.Missing(t, "cloud-init's systemd units: %v", err)
	}
	// Shape (a) in the boot it is part of: multi-user.target with network-online.target.
	require.Empty(t, verify(t, shipped(t), map[string]string{
		mainUnit: "[Unit]\nWants=multi-user.target sshd.service systemd-user-sessions.service\n",
	}, mainUnit))
	// Shape (b) with cloud-init's whole chain in the transaction: no ordering cycle.
	require.Empty(t, verify(t, shipped(t), map[string]string{
		seedUnit: "[Unit]\nWants=cloud-init-local.service cloud-init.service cloud-config.service cloud-final.service network-online.target sysinit.target\n",
	}, seedUnit))
}

// The check above would see the mistakes this ordering is easy to make: waiting for
// network-online.target, or keeping the default dependencies, both before cloud-init.service.
func TestUnitsVerifyCatchesOrderingCycles(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/lib/systemd/system/cloud-init.service"); err != nil {
		testdep.Missing(t, "cloud-init's systemd units: %v", err)
	}
	want := "[Unit]\nWants=cloud-init-local.service cloud-init.service network-online.target sysinit.target\n"
	for name, broken := range map[string]string{
		"after network-online": strings.Replace(read(t, seedUnit), "Before=cloud-init.service", "After=network-online.target\nBefore=cloud-init.service", 1),
		"default dependencies": strings.Replace(read(t, seedUnit), "DefaultDependencies=no", "DefaultDependencies=yes", 1),
	} {
		units := shipped(t)
		units[seedUnit] = broken
		require.Contains(t, verify(t, units, map[string]string{seedUnit: want}, seedUnit), "ordering cycle", name)
	}
}

// The environment file sets only flags node-agent has, with values it accepts: applied to the
// real command, the only complaint is the CA bundle that is not installed on this machine.
func TestEnvFileMatchesFlags(t *testing.T) {
	var help bytes.Buffer
	require.Equal(t, 0, nodeagent.Main([]string{"boot", "-h"}, &help))
	sc := bufio.NewScanner(strings.NewReader(read(t, "node-agent.env")))
	n := 0
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "#"))
		k, v, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(k, "NODE_AGENT_") || strings.Contains(k, " ") {
			continue
		}
		flagName := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k, "NODE_AGENT_")), "_", "-")
		require.Regexp(t, `(?m)^\s+-`+regexp.QuoteMeta(flagName)+`(\s|$)`, help.String(), "%s names no flag of node-agent boot", k)
		if strings.HasPrefix(strings.TrimSpace(sc.Text()), "#") {
			continue // an example left commented out
		}
		t.Setenv(k, v)
		n++
	}
	require.Greater(t, n, 10)
	if _, err := os.Stat("/etc/attestboot/ca.pem"); err == nil {
		t.Skip("this machine has /etc/attestboot/ca.pem: the agent would really boot")
	}
	var stderr bytes.Buffer
	require.Equal(t, agent.ClassConfig.ExitCode(), nodeagent.Main([]string{"boot"}, &stderr))
	require.Contains(t, stderr.String(), "/etc/attestboot/ca.pem", "every value before the CA was accepted")
	require.NotContains(t, stderr.String(), "NODE_AGENT_", "no variable was refused")
}

func TestCloudInitFiles(t *testing.T) {
	t.Parallel()
	testdep.Binaries(t, "sh", "cloud-init")
	dir := t.TempDir()
	for _, name := range []string{"cloud-init-stages", "90-attestboot.cfg"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(read(t, name)), 0o755))
	}
	out, err := exec.Command("sh", "-n", filepath.Join(dir, "cloud-init-stages")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	stages := read(t, "cloud-init-stages")
	// The four stages, in order.
	last := -1
	for _, stage := range []string{"cloud-init init --local", "cloud-init init\n", "cloud-init modules --mode config", "cloud-init modules --mode final"} {
		i := strings.Index(stages, stage)
		require.Greater(t, i, last, stage)
		last = i
	}
	out, err = exec.Command("cloud-init", "schema", "-c", filepath.Join(dir, "90-attestboot.cfg")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	cfg := read(t, "90-attestboot.cfg")
	require.Contains(t, cfg, "datasource_list: [ NoCloud ]", "a single entry: ds-identify enables cloud-init without a seed at generator time")
}
