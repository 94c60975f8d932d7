package nodeagent

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/node-agent/internal/agent"
)

func TestNodeIDFromCmdline(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, tc := range map[string]struct{ cmdline, want string }{
		"middle":   {"BOOT_IMAGE=/vmlinuz root=live:http://img/squashfs attestboot.node=x1000c0s0b0n0 quiet\n", "x1000c0s0b0n0"},
		"first":    {"attestboot.node=cn001 ro", "cn001"},
		"last":     {"ro console=ttyS0 attestboot.node=cn002\n", "cn002"},
		"absent":   {"ro quiet ds=nocloud\n", ""},
		"similar":  {"attestboot.nodes=a xattestboot.node=b attestboot.node.x=c", ""},
		"first of": {"attestboot.node=a attestboot.node=b", "a"},
		"empty":    {"attestboot.node= quiet", ""},
	} {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(tc.cmdline), 0o644))
		require.Equal(t, tc.want, nodeIDFromCmdline(p), name)
	}
	require.Empty(t, nodeIDFromCmdline(filepath.Join(dir, "missing")), "no /proc/cmdline: no id")
}

func TestMainUsageAndConfigErrors(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	require.Equal(t, agent.ClassConfig.ExitCode(), Main(nil, &stderr))
	require.Contains(t, stderr.String(), "usage: node-agent boot")
	require.Equal(t, agent.ClassConfig.ExitCode(), Main([]string{"serve"}, &stderr))

	stderr.Reset()
	require.Equal(t, agent.ClassConfig.ExitCode(), Main([]string{"boot", "-wireguard", "carrier-pigeon", "-node-id", "n1"}, &stderr))
	require.Contains(t, stderr.String(), "carrier-pigeon")

	stderr.Reset()
	missing := filepath.Join(t.TempDir(), "ca.pem")
	require.Equal(t, agent.ClassConfig.ExitCode(), Main([]string{"boot", "-node-id", "n1", "-ca", missing}, &stderr))
	require.Contains(t, stderr.String(), "ca.pem")

	require.Equal(t, 0, Main([]string{"boot", "-h"}, &stderr))
}
