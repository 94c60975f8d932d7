package attestctl_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/attestctl"
	"github.com/attestboot/attestboot/services/netnstest"
	"github.com/attestboot/attestboot/services/proctest"
	"github.com/attestboot/attestboot/services/testdep"
	"github.com/attestboot/attestboot/services/tunneltest"
)

var (
	tmBuildOnce sync.Once
	tmBinDir    string
	tmBuildErr  error
)

func tunnelmgrBinary(t *testing.T) string {
	t.Helper()
	tmBuildOnce.Do(func() {
		tmBinDir, tmBuildErr = os.MkdirTemp("", "attestctl-test-tm-")
		if tmBuildErr == nil {
			out, err := exec.Command("go", "build", "-o", tmBinDir, "github.com/attestboot/attestboot/tunnelmgr/cmd/tunnelmgr").CombinedOutput()
			if err != nil {
				tmBuildErr = &buildError{err: err, out: out}
			}
		}
	})
	require.NoError(t, tmBuildErr)
	return filepath.Join(tmBinDir, "tunnelmgr")
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + string(e.out) }

// TestTunnels runs tunnelmgr with its embedded WireGuard device in a gateway namespace and
// reaches it through Env.Dial.
func TestTunnels(t *testing.T) {
	t.Parallel()
	testdep.Root(t)
	testdep.Binaries(t, "ip")
	s := startStack(t)
	tm := tunnelmgrBinary(t)
	gw := netnstest.New(t, "actlgw")
	const at = "10.99.0.1:7444"
	require.NoError(t, gw.IP(t.Context(), "addr", "add", "10.99.0.1/32", "dev", "lo"))
	iface, err := netnstest.NewName("actl")
	require.NoError(t, err)
	t.Cleanup(func() { netnstest.Release(iface) })
	cmd := gw.Command(context.Background(), tm, "serve", "-listen", at, "-state-dir", s.state, "-tls-hosts", "10.99.0.1",
		"-metrics-listen", "", "-migrate=false", "-gateway", "gw1", "-wg-interface", iface, "-wg-port", "51820",
		"-endpoint", "10.99.0.1:51820", "-pool-v4", "100.64.0.0/16", "-reconcile-interval", "1s")
	cmd.Env = append(os.Environ(), "TUNNELMGR_DATABASE_URL="+s.dbURL, "TUNNELMGR_LOG_LEVEL=warn")
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		if addr == at {
			return gw.Dial(ctx, "tcp", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	proctest.Start(t, cmd, func() error {
		c, err := gw.Dial(context.Background(), "tcp", at)
		if err != nil {
			return err
		}
		return c.Close()
	})
	run := func(args ...string) result {
		var out, errb bytes.Buffer
		code := attestctl.Run(t.Context(), append(append(s.globals(), "-tunnelmgr", at), args...),
			attestctl.Env{Stdout: &out, Stderr: &errb, Dial: dial})
		return result{code: code, stdout: out.String(), stderr: errb.String()}
	}

	require.Equal(t, 0, s.run(t, "nodes", "create", "tn1").code)
	tun := tunneltest.Open(t, s.store, "tn1", "gw1", nil)

	r := run("tunnels", "list", "--state", "open")
	require.Equal(t, 0, r.code, r)
	require.Regexp(t, tun.ID+`\s+tn1\s+gw1\s+100\.64\.\S+\s+open`, r.stdout)

	// The reconciler puts the tunnel's peer on the device.
	waitFor(t, "the peer on the device", func() bool {
		r = run("gateway", "status")
		return r.code == 0 && strings.Contains(r.stdout, "tn1")
	})
	require.Regexp(t, `gateway:\s+gw1`, r.stdout)
	require.Regexp(t, `endpoint:\s+10\.99\.0\.1:51820`, r.stdout)
	require.Regexp(t, `open tunnels:\s+1`, r.stdout)

	r = run("tunnels", "close", "--node", "tn1", "--reason", "admin")
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, "closed (admin)")
	r = run("-json", "tunnels", "list", "--node", "tn1")
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, `"state": "TUNNEL_STATE_CLOSED"`)
	r = run("tunnels", "close", "--id", "00000000-0000-0000-0000-000000000000", "--reason", "admin")
	require.Equal(t, attestctl.ExitNotFound, r.code, r)
}
