package netnstest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/testdep"
)

// orphan re-registers name to a process that does not exist, as if its test binary crashed.
func orphan(t *testing.T, name string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(RegistryDir, name), []byte("999999999 1\n"), 0o644))
}

func TestSweepRemovesOnlyLeftovers(t *testing.T) {
	t.Parallel()
	testdep.Root(t)
	testdep.Binaries(t, "ip")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	live, err := Create(ctx, "live")
	require.NoError(t, err)
	t.Cleanup(func() { _ = live.Delete(context.Background()) })

	dead, err := Create(ctx, "dead")
	require.NoError(t, err)
	t.Cleanup(func() { _ = dead.Delete(context.Background()) })
	orphan(t, dead.Name())

	// Our pattern but never registered: the owner died between naming and registering.
	unregistered := Prefix + "0badf00dx"
	require.NoError(t, ip(ctx, "netns", "add", unregistered))
	t.Cleanup(func() { _ = ip(context.Background(), "netns", "delete", unregistered) })

	// Not our pattern: somebody else's, whatever its prefix.
	foreign := Prefix + "-keep-" + strconv.Itoa(os.Getpid())
	require.NoError(t, ip(ctx, "netns", "add", foreign))
	t.Cleanup(func() { _ = ip(context.Background(), "netns", "delete", foreign) })

	// A WireGuard socket left by a killed wireguard-go.
	sockName, err := NewName("wg")
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(WireGuardSocketDir, 0o755))
	sock := filepath.Join(WireGuardSocketDir, sockName+".sock")
	require.NoError(t, os.WriteFile(sock, nil, 0o600))
	t.Cleanup(func() { _ = os.Remove(sock) })
	orphan(t, sockName)

	// A veth pair left in this namespace (down, no addresses: it carries nothing).
	linkA, err := NewName("la")
	require.NoError(t, err)
	linkB, err := NewName("lb")
	require.NoError(t, err)
	require.NoError(t, ip(ctx, "link", "add", linkA, "type", "veth", "peer", "name", linkB))
	t.Cleanup(func() { _ = ip(context.Background(), "link", "delete", linkA) })
	orphan(t, linkA)
	orphan(t, linkB)

	require.NoError(t, Sweep(ctx, nil))

	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	require.True(t, exists(live.Path()), "a live process's namespace was swept")
	require.True(t, ownerAlive(live.Name()))
	require.True(t, exists(filepath.Join(NetnsDir, foreign)), "a name of another pattern was swept")
	require.False(t, exists(dead.Path()), "leftover namespace kept")
	require.False(t, exists(filepath.Join(NetnsDir, unregistered)), "unregistered leftover kept")
	require.False(t, exists(sock), "leftover socket kept")
	_, err = net.InterfaceByName(linkA)
	require.Error(t, err, "leftover veth kept")
	for _, n := range []string{dead.Name(), sockName, linkA, linkB} {
		require.False(t, exists(filepath.Join(RegistryDir, n)), "registration of %s kept", n)
	}
}
