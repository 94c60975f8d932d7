package proctest

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStartWaitsUntilReadyAndStops(t *testing.T) {
	t.Parallel()
	flag := filepath.Join(t.TempDir(), "ready")
	p := Start(t, exec.Command("sh", "-c", "sleep 0.1; touch "+flag+"; exec sleep 60"), FileExists(flag))
	require.FileExists(t, flag)
	p.Stop()
	require.Equal(t, -1, ExitCode(p.Err()), "ended by SIGTERM, not a normal exit")
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	require.Equal(t, 0, ExitCode(exec.Command("true").Run()))
	require.Equal(t, 3, ExitCode(exec.Command("sh", "-c", "exit 3").Run()))
}

func TestTailKeepsTheEnd(t *testing.T) {
	t.Parallel()
	b := NewTail(5)
	_, _ = b.Write([]byte("abc"))
	_, _ = b.Write([]byte("defg\n"))
	require.Equal(t, "defg", b.String())
}
