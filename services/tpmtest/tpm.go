package tpmtest

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/attestboot/attestboot/services/ekcert"
	"github.com/attestboot/attestboot/services/proctest"
	"github.com/attestboot/attestboot/services/tpmconn"
)

// TPM is a running swtpm, a child process of this one.
type TPM struct {
	index int
	addr  string
	// server and ctrl are the network addresses (path or host:port) of swtpm's sockets.
	server, ctrl string
	state        *State
	ca           *CA
	runDir       string
	cmd          *exec.Cmd
	exited       chan struct{} // closed when the process has been reaped
	stderr       *proctest.Tail
	lease        io.Closer
	// waitErr is the process's exit; written before exited is closed, read only after.
	waitErr error

	stopOnce sync.Once
	stopErr  error
}

// Index is the cache index of this TPM: the same index always has the same EK.
func (t *TPM) Index() int { return t.index }

// Addr is the tpmconn address of the TPM ("unix:/path" or "swtpm:127.0.0.1:PORT").
func (t *TPM) Addr() string { return t.addr }

// Open opens a command channel. swtpm serves one connection at a time: close the channel
// before opening the next one, or the next one waits.
func (t *TPM) Open() (tpmconn.Channel, error) { return tpmconn.Open(t.addr) }

// Pid is the swtpm process id.
func (t *TPM) Pid() int { return t.cmd.Process.Pid }

// Done is closed when the swtpm process has exited, whether by Stop or not.
func (t *TPM) Done() <-chan struct{} { return t.exited }

// State is the cached state this TPM runs a copy of.
func (t *TPM) State() *State { return t.state }

// EKCertificate is the RSA-2048 EK certificate the TPM holds in NV 0x1c00002.
func (t *TPM) EKCertificate() *x509.Certificate { return t.state.EKCertificate }

// ECCEKCertificate is the ECC P-384 EK certificate the TPM holds in NV 0x1c00016.
func (t *TPM) ECCEKCertificate() *x509.Certificate { return t.state.ECCEKCertificate }

// EKPublicKey is the RSA EK's public key, as certified.
func (t *TPM) EKPublicKey() crypto.PublicKey { return t.state.EKCertificate.PublicKey }

// EKSHA256 is the SHA-256 of the RSA EK's PKIX encoding, the EK identity of the inventory.
func (t *TPM) EKSHA256() [32]byte {
	// The certificate's SubjectPublicKeyInfo is that encoding; it hashes without error.
	sum, _ := ekcert.SHA256PKIX(t.EKPublicKey())
	return sum
}

// CA is the CA that certified the EKs.
func (t *TPM) CA() *CA { return t.ca }

// RootCAs returns a pool holding the EK CA root.
func (t *TPM) RootCAs() *x509.CertPool { return t.ca.RootCAs() }

// Intermediates returns a pool holding the EK CA intermediate.
func (t *TPM) Intermediates() *x509.CertPool { return t.ca.Intermediates() }

// Stop kills swtpm, removes its private state copy and releases the index. It is safe to
// call more than once. It reports an error if swtpm had died before Stop.
func (t *TPM) Stop() error {
	t.stopOnce.Do(func() { t.stopErr = t.stop() })
	return t.stopErr
}

func (t *TPM) stop() error {
	var errs []error
	select {
	case <-t.exited:
		errs = append(errs, fmt.Errorf("tpmtest: swtpm %d exited before Stop: %w: %s", t.index, t.waitErr, t.stderr))
	default:
		// SIGTERM lets swtpm close its sockets; SIGKILL if it does not go.
		_ = t.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-t.exited:
		case <-time.After(5 * time.Second):
			_ = t.cmd.Process.Kill()
			<-t.exited
		}
	}
	if err := os.RemoveAll(t.runDir); err != nil {
		errs = append(errs, fmt.Errorf("tpmtest: %w", err))
	}
	if err := t.lease.Close(); err != nil {
		errs = append(errs, fmt.Errorf("tpmtest: release lease: %w", err))
	}
	return errors.Join(errs...)
}

// run starts swtpm on a private copy of st and waits until it accepts connections.
func (p *Pool) run(ctx context.Context, st *State, ca *CA, lease io.Closer) (*TPM, error) {
	start := time.Now()
	runDir, err := os.MkdirTemp(p.cfg.RunDir, "swtpm-")
	if err != nil {
		return nil, fmt.Errorf("tpmtest: %w", err)
	}
	stateDir := filepath.Join(runDir, "state")
	if err := copyDir(st.Dir, stateDir); err != nil {
		os.RemoveAll(runDir)
		return nil, fmt.Errorf("tpmtest: copy state: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, p.cfg.StartTimeout)
	defer cancel()
	// A TCP port chosen free can be taken before swtpm binds it; try a few pairs.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		t, err := p.spawn(ctx, st, ca, runDir, stateDir, lease)
		if err == nil {
			p.log.Info("started swtpm", "index", st.Index, "addr", t.addr, "pid", t.Pid(), "took", time.Since(start))
			return t, nil
		}
		lastErr = err
		if p.cfg.Transport != TransportTCP || ctx.Err() != nil {
			break
		}
	}
	os.RemoveAll(runDir)
	return nil, lastErr
}

func (p *Pool) spawn(ctx context.Context, st *State, ca *CA, runDir, stateDir string, lease io.Closer) (*TPM, error) {
	t := &TPM{
		index: st.Index, state: st, ca: ca, runDir: runDir, lease: lease,
		exited: make(chan struct{}), stderr: proctest.NewTail(8 << 10),
	}
	var serverOpt, ctrlOpt string
	switch p.cfg.Transport {
	case TransportUnix:
		sock := filepath.Join(runDir, "tpm.sock")
		if len(sock)+len(".ctrl") > 107 {
			return nil, fmt.Errorf("tpmtest: socket path %q too long for a unix socket: set a shorter RunDir", sock)
		}
		_ = os.Remove(sock)
		_ = os.Remove(sock + ".ctrl")
		serverOpt = "type=unixio,path=" + sock
		ctrlOpt = "type=unixio,path=" + sock + ".ctrl"
		t.addr = tpmconn.PrefixUnix + sock
		t.server, t.ctrl = sock, sock+".ctrl"
	case TransportTCP:
		port, err := freePortPair()
		if err != nil {
			return nil, err
		}
		serverOpt = fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port)
		ctrlOpt = fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1)
		t.addr = tpmconn.PrefixSwtpm + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		t.server = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		t.ctrl = net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1))
	}

	// Foreground child, killed by pid: with --daemon nobody reaps swtpm here (RECIPES.md).
	t.cmd = exec.Command(p.cfg.Swtpm, "socket", "--tpm2",
		"--tpmstate", "dir="+stateDir,
		"--server", serverOpt, "--ctrl", ctrlOpt,
		"--flags", "not-need-init,startup-clear",
	)
	t.cmd.Stdout = t.stderr
	t.cmd.Stderr = t.stderr
	// If the test binary dies without cleaning up, the kernel kills swtpm with it.
	t.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := t.cmd.Start(); err != nil {
		return nil, fmt.Errorf("tpmtest: start swtpm: %w", err)
	}
	go func() {
		t.waitErr = t.cmd.Wait()
		close(t.exited)
	}()

	network := "unix"
	if p.cfg.Transport == TransportTCP {
		network = "tcp"
	}
	// swtpm creates its control socket first and the server socket only after the TPM is
	// initialised: ready means both accept a connection. A probe connection to the server
	// socket is closed at once, which frees swtpm for the next (real) client.
	probes := []string{t.ctrl, t.server}
	for wait := time.Millisecond; len(probes) > 0; wait = min(2*wait, 50*time.Millisecond) {
		if c, err := net.DialTimeout(network, probes[0], time.Second); err == nil {
			c.Close()
			probes = probes[1:]
			continue
		}
		select {
		case <-t.exited:
			return nil, fmt.Errorf("tpmtest: swtpm exited during start-up: %v: %s", t.waitErr, t.stderr)
		case <-ctx.Done():
			_ = t.cmd.Process.Kill()
			<-t.exited
			return nil, fmt.Errorf("tpmtest: swtpm not listening on %s: %w: %s", probes[0], ctx.Err(), t.stderr)
		case <-time.After(wait):
		}
	}
	return t, nil
}

// freePortPair finds a port P such that P and P+1 (swtpm's control port) are free now.
func freePortPair() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("tpmtest: find free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if port >= 65535 {
			l.Close()
			continue
		}
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1)))
		l.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return port, nil
	}
	return 0, errors.New("tpmtest: no free pair of TCP ports")
}

// copyDir copies the regular files of src (a TPM state is one flat directory) into dst.
func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
