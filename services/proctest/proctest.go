// Package proctest runs the project's binaries as real child processes in tests and
// benchmarks: started, awaited until ready, and stopped at cleanup.
package proctest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Process is a running child.
type Process struct {
	Cmd    *exec.Cmd
	exited chan struct{}
	err    error // valid once exited is closed
}

// Pid of the child.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Exited is closed when the child has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is the child's exit error once Exited is closed.
func (p *Process) Err() error { <-p.exited; return p.err }

// Start runs cmd (its output goes to the test log unless set), waits until ready returns nil,
// and at cleanup sends SIGTERM, then SIGKILL after 10 s. The test fails if the child exits
// before it is ready or does not become ready within 30 s.
func Start(t testing.TB, cmd *exec.Cmd, ready func() error) *Process {
	t.Helper()
	if cmd.Stdout == nil {
		cmd.Stdout = t.Output()
	}
	if cmd.Stderr == nil {
		cmd.Stderr = t.Output()
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	p := &Process{Cmd: cmd, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.Stop() })

	deadline := time.Now().Add(30 * time.Second)
	for {
		err := ready()
		if err == nil {
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before it was ready: %v", cmd.Path, p.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 30 s: %v", cmd.Path, err)
		}
	}
}

// Stop ends the child gracefully (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (p *Process) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.exited
	}
}

// Kill ends the child at once, as a crash would, and waits for it.
func (p *Process) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.exited
}

// FreeAddr returns a loopback TCP address that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Dialable is a ready check: addr accepts TCP connections.
func Dialable(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// FileExists is a ready check: path exists.
func FileExists(path string) func() error {
	return func() error {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("waiting for %s: %w", path, err)
		}
		return nil
	}
}

// All is a ready check that passes when every check passes.
func All(checks ...func() error) func() error {
	return func() error {
		for _, c := range checks {
			if err := c(); err != nil {
				return err
			}
		}
		return nil
	}
}

// ExitCode of a finished child's error: 0 for nil, -1 when it did not exit normally.
func ExitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}
