package netnstest

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/attestboot/attestboot/services/proctest"
)

// Process is a program running inside a namespace.
type Process struct {
	cmd    *exec.Cmd
	out    *proctest.Tail
	exited chan struct{}
	err    error // valid once exited is closed

	stopOnce sync.Once
}

// Pid is the program's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output is the end of what the program wrote to stdout and stderr.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the program has exited.
func (p *Process) Done() <-chan struct{} { return p.exited }

// Err is the program's exit status; valid once Done is closed.
func (p *Process) Err() error { return p.err }

// Stop sends SIGTERM, then SIGKILL after 5 s, and waits for the program to exit.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
}

// Start runs a program inside the namespace until Stop. It is tied to no context, since it
// must outlive the call; if this process dies the kernel kills it (see Command).
func (n *NS) Start(name string, args ...string) (*Process, error) {
	cmd := n.Command(context.Background(), name, args...)
	p := &Process{cmd: cmd, out: proctest.NewTail(16 << 10), exited: make(chan struct{})}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("netnstest: start %s in %s: %w", name, n, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}
