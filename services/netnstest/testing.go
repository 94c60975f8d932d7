package netnstest

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/attestboot/attestboot/services/testdep"
)

// cleanupTimeout bounds each cleanup step: t.Context() is already cancelled when cleanups run.
const cleanupTimeout = 10 * time.Second

// New creates a test host: a namespace with its loopback up, deleted at cleanup. It first
// sweeps what crashed runs left behind. Without root or ip(8) the test fails under CI=true
// and is skipped elsewhere.
func New(t testing.TB, label string) *NS {
	t.Helper()
	testdep.Root(t)
	testdep.Binaries(t, "ip")
	ctx := t.Context()
	if err := Sweep(ctx, slog.New(slog.NewTextHandler(t.Output(), nil))); err != nil {
		t.Logf("netnstest: sweep: %v", err)
	}
	n, err := Create(ctx, label)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := n.Delete(ctx); err != nil {
			t.Errorf("delete namespace: %v", err)
		}
	})
	return n
}

// Link joins a and b with a veth pair addressed cidrA and cidrB (see Connect), removed at
// cleanup. It returns the interface names in a and in b.
func Link(t testing.TB, a, b *NS, cidrA, cidrB string) (ifA, ifB string) {
	t.Helper()
	ifA, ifB, err := Connect(t.Context(), a, b, cidrA, cidrB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := Disconnect(ctx, a, ifA, ifB); err != nil {
			t.Errorf("delete veth: %v", err)
		}
	})
	return ifA, ifB
}

// StartProcess runs a program inside the namespace and stops it at cleanup. Its output is
// logged if the test fails.
func (n *NS) StartProcess(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	p, err := n.Start(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("output of %s in %s:\n%s", name, n, p.Output())
		}
	})
	return p
}

// StartWireGuardGo runs the wireguard-go program in the foreground inside the namespace,
// creating a TUN interface named NewName(label) there, and waits for its UAPI socket in
// WireGuardSocketDir, through which wgctrl.New() configures it from any namespace. At cleanup
// the program is stopped and its socket removed. It returns the interface name.
func (n *NS) StartWireGuardGo(t testing.TB, label string) string {
	t.Helper()
	testdep.Binaries(t, "wireguard-go")
	name, err := NewName(label)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(WireGuardSocketDir, name+".sock")
	// Registered before the process, so it runs after the process is stopped: a killed
	// wireguard-go leaves its socket behind, where wgctrl would still find it.
	t.Cleanup(func() {
		if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("remove %s: %v", sock, err)
		}
		Release(name)
	})
	p := n.StartProcess(t, "wireguard-go", "-f", name)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return name
		}
		select {
		case <-p.Done():
			t.Fatalf("wireguard-go %s exited: %v\n%s", name, p.Err(), p.Output())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("wireguard-go %s: no UAPI socket at %s after 10s\n%s", name, sock, p.Output())
		}
	}
}
