package netnstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// NetnsDir is where `ip netns` keeps named network namespaces.
const NetnsDir = "/run/netns"

// NS is a named network namespace: a test host.
type NS struct {
	name string
}

// Create makes a namespace named NewName(label) with its loopback up. Delete it when done.
func Create(ctx context.Context, label string) (*NS, error) {
	name, err := NewName(label)
	if err != nil {
		return nil, err
	}
	if err := ip(ctx, "netns", "add", name); err != nil {
		Release(name)
		return nil, err
	}
	n := &NS{name: name}
	if err := n.IP(ctx, "link", "set", "lo", "up"); err != nil {
		_ = n.Delete(ctx)
		return nil, err
	}
	return n, nil
}

// Name is the namespace's name, as `ip netns` knows it.
func (n *NS) Name() string { return n.name }

// Path is the namespace's bind mount, which setns(2) opens.
func (n *NS) Path() string { return filepath.Join(NetnsDir, n.name) }

func (n *NS) String() string { return n.name }

// Delete deletes the namespace, and with it every interface in it. Processes still inside
// keep it alive until they exit, but it loses its name.
func (n *NS) Delete(ctx context.Context) error {
	err := ip(ctx, "netns", "delete", n.name)
	if err != nil {
		if _, statErr := os.Stat(n.Path()); errors.Is(statErr, fs.ErrNotExist) {
			err = nil // already gone
		}
	}
	if err == nil {
		Release(n.name)
	}
	return err
}

// IP runs `ip -n NAME args...`, e.g. n.IP(ctx, "addr", "add", "10.0.0.1/24", "dev", "eth0").
func (n *NS) IP(ctx context.Context, args ...string) error {
	return ip(ctx, append([]string{"-n", n.name}, args...)...)
}

// Command returns a command that runs name inside the namespace (through `ip netns exec`,
// which execs it, so the process id is the program's own). The process is killed if this
// process dies.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Do runs fn on an OS thread switched into the namespace with setns(2), and switches the
// thread back afterwards.
//
// Only what fn creates itself belongs to the namespace: sockets opened inside fn (a
// listener, a dialed connection, a UDP socket) stay in it for their whole life and may be
// used from any goroutine afterwards. Goroutines that fn starts run on other threads, in
// the original namespace, and so would sockets they open; programs that must live in the
// namespace (wireguard-go, servers with background workers) belong in a process started
// with Command. A panic in fn is re-raised in the caller; fn must not call t.FailNow (it
// runs on another goroutine), which Do reports as an error.
func (n *NS) Do(fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netnstest: open current namespace: %w", err)}
			return
		}
		defer orig.Close()
		target, err := os.Open(n.Path())
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netnstest: open namespace %s: %w", n.name, err)}
			return
		}
		err = unix.Setns(int(target.Fd()), unix.CLONE_NEWNET)
		target.Close()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netnstest: enter namespace %s: %w", n.name, err)}
			return
		}
		defer func() {
			// A thread that cannot go back stays locked: the runtime then ends it with this
			// goroutine instead of running other goroutines in the wrong namespace.
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
		}()
		returned := false
		defer func() {
			if v := recover(); v != nil {
				done <- result{panicked: true, value: v}
			} else if !returned {
				// runtime.Goexit, as t.FailNow does: report instead of leaving Do waiting.
				done <- result{err: errors.New("netnstest: fn called runtime.Goexit (t.FailNow?) inside Do")}
			}
		}()
		err = fn()
		returned = true
		done <- result{err: err}
	}()
	r := <-done
	if r.panicked {
		panic(r.value)
	}
	return r.err
}

// Listen listens inside the namespace; see Do.
func (n *NS) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() (err error) {
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket inside the namespace; see Do.
func (n *NS) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// Dial connects from inside the namespace; see Do. Use an IP address: a host name would be
// resolved inside the namespace too.
func (n *NS) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Connect joins a and b with a veth pair, assigns cidrA (an address with its prefix, such as
// "10.99.0.1/24") to a's end and cidrB to b's, and brings both up. The pair is created
// directly inside the namespaces, never in the caller's. It returns the interface names.
func Connect(ctx context.Context, a, b *NS, cidrA, cidrB string) (ifA, ifB string, err error) {
	pa, err := netip.ParsePrefix(cidrA)
	if err != nil {
		return "", "", fmt.Errorf("netnstest: address of %s: %w", a, err)
	}
	pb, err := netip.ParsePrefix(cidrB)
	if err != nil {
		return "", "", fmt.Errorf("netnstest: address of %s: %w", b, err)
	}
	if ifA, err = NewName("va"); err != nil {
		return "", "", err
	}
	if ifB, err = NewName("vb"); err != nil {
		Release(ifA)
		return "", "", err
	}
	if err := ip(ctx, "link", "add", ifA, "netns", a.name, "type", "veth", "peer", "name", ifB, "netns", b.name); err != nil {
		Release(ifA)
		Release(ifB)
		return "", "", err
	}
	for _, step := range []struct {
		ns   *NS
		args []string
	}{
		{a, []string{"addr", "add", pa.String(), "dev", ifA}},
		{b, []string{"addr", "add", pb.String(), "dev", ifB}},
		{a, []string{"link", "set", ifA, "up"}},
		{b, []string{"link", "set", ifB, "up"}},
	} {
		if err := step.ns.IP(ctx, step.args...); err != nil {
			_ = Disconnect(ctx, a, ifA, ifB)
			return "", "", err
		}
	}
	return ifA, ifB, nil
}

// Disconnect deletes the veth pair made by Connect (deleting one end deletes both). A pair
// whose namespace is already gone is not an error.
func Disconnect(ctx context.Context, a *NS, ifA, ifB string) error {
	err := a.IP(ctx, "link", "delete", ifA)
	if err != nil {
		if _, statErr := os.Stat(a.Path()); errors.Is(statErr, fs.ErrNotExist) || strings.Contains(err.Error(), "Cannot find device") {
			err = nil
		}
	}
	Release(ifA)
	Release(ifB)
	return err
}

// Sweep removes what earlier runs left behind: namespaces, interfaces of the calling
// process's namespace and WireGuard UAPI sockets whose names NewName made for a process
// that no longer runs. Names of live processes, this one or another test binary, are left
// alone, and so is every name NewName cannot have made.
func Sweep(ctx context.Context, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	stale := func(name string) bool { return nameRE.MatchString(name) && !ownerAlive(name) }

	if entries, err := os.ReadDir(NetnsDir); err == nil {
		for _, e := range entries {
			if !stale(e.Name()) {
				continue
			}
			log.Info("sweeping leftover network namespace", "name", e.Name())
			if err := ip(ctx, "netns", "delete", e.Name()); err != nil {
				// Another process sweeping at the same time may have been first.
				if _, statErr := os.Stat(filepath.Join(NetnsDir, e.Name())); !errors.Is(statErr, fs.ErrNotExist) {
					errs = append(errs, err)
					continue
				}
			}
			Release(e.Name())
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("netnstest: %w", err))
	}

	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			if !stale(i.Name) {
				continue
			}
			log.Info("sweeping leftover interface", "name", i.Name)
			if err := ip(ctx, "link", "delete", i.Name); err != nil && linkExists(i.Name) {
				errs = append(errs, err)
				continue
			}
			Release(i.Name)
		}
	} else {
		errs = append(errs, fmt.Errorf("netnstest: %w", err))
	}

	if socks, err := filepath.Glob(filepath.Join(WireGuardSocketDir, Prefix+"*.sock")); err == nil {
		for _, s := range socks {
			name := strings.TrimSuffix(filepath.Base(s), ".sock")
			if !stale(name) {
				continue
			}
			log.Info("sweeping leftover WireGuard socket", "path", s)
			if err := os.Remove(s); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("netnstest: %w", err))
				continue
			}
			Release(name)
		}
	}

	// Registrations whose owner died and whose resource is gone (deleted above, or never made).
	if names, err := registered(); err == nil {
		for _, name := range names {
			if !ownerAlive(name) && !exists(name) {
				Release(name)
			}
		}
	} else {
		errs = append(errs, fmt.Errorf("netnstest: %w", err))
	}
	return errors.Join(errs...)
}

// linkExists reports whether this namespace has an interface called name. After a failed
// delete it tells "already gone" (such as the peer of a veth deleted just before, which ip
// reports as "Cannot find device" or, racing the kernel, "No such device") from a failure.
func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

func exists(name string) bool {
	if _, err := os.Stat(filepath.Join(NetnsDir, name)); err == nil {
		return true
	}
	if linkExists(name) {
		return true
	}
	_, err := os.Stat(filepath.Join(WireGuardSocketDir, name+".sock"))
	return err == nil
}

// ip runs the ip(8) command and returns its error output as the error.
func ip(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("netnstest: ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
