package netnstest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	unregistered, err := NewName("unreg")
	require.NoError(t, err)
	Release(unregistered)
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

	var swept strings.Builder
	require.NoError(t, Sweep(ctx, slog.New(slog.NewTextHandler(&swept, nil))))

	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	if !exists(live.Path()) {
		// Seen once in CI (1 in a few hundred runs on a fresh machine), not understood yet:
		// say everything that could tell why.
		t.Fatalf("a live process's namespace was swept: %s\nthis sweep:\n%s", state(live.Name()), swept.String())
	}
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

// state describes the namespaces and registrations there are, for a failure message.
func state(name string) string {
	var b strings.Builder
	_, err := os.Stat(filepath.Join(NetnsDir, name))
	fmt.Fprintf(&b, "stat %s: %v; owner alive: %v; pid %d", name, err, ownerAlive(name), os.Getpid())
	for _, dir := range []string{NetnsDir, RegistryDir} {
		entries, err := os.ReadDir(dir)
		fmt.Fprintf(&b, "\n%s (%v):", dir, err)
		for _, e := range entries {
			reg, _ := os.ReadFile(filepath.Join(RegistryDir, e.Name()))
			fmt.Fprintf(&b, " %s[%s]", e.Name(), strings.TrimSpace(string(reg)))
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, NetnsDir) {
			fmt.Fprintf(&b, "\nmount: %s", l)
		}
	}
	return b.String()
}
