package attestctl_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/attestctl"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/pgtest"
	"github.com/attestboot/attestboot/services/pki"
	"github.com/attestboot/attestboot/services/proctest"
	"github.com/attestboot/attestboot/services/testdep"
)

// childEnv makes this test binary run as attestctl, to test the real process (exit status,
// standard streams, environment).
const childEnv = "ATTESTBOOT_TEST_RUN_ATTESTCTL"

func TestMain(m *testing.M) {
	proctest.RunIfChild(childEnv, func() int { return attestctl.Main(os.Args[1:]) })
	code := pgtest.Main(m)
	// The service binaries built for this run are tens of megabytes each.
	for _, dir := range []string{binDir, tmBinDir} {
		if dir != "" {
			os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}

// The services' binaries, built once per test binary.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func serviceBinaries(t testing.TB) string {
	t.Helper()
	testdep.Binaries(t, "go")
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "attestctl-test-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir,
			"github.com/attestboot/attestboot/attestor/cmd/attestor",
			"github.com/attestboot/attestboot/metadata/cmd/metadata")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binDir
}

// stack is Postgres, an attestor and a metadata service on loopback, sharing one development
// PKI. The metadata datasource waits for a WireGuard interface that never appears: these tests
// need only its admin API.
type stack struct {
	dbURL    string
	store    *inventory.Store
	state    string
	attestor string
	metadata string
	token    string
}

func startStack(t *testing.T) *stack {
	t.Helper()
	bin := serviceBinaries(t)
	url := pgtest.NewDB(t)
	s := &stack{dbURL: url, store: inventory.New(pgtest.Pool(t, url), inventory.Options{}), state: t.TempDir(),
		attestor: proctest.FreeAddr(t), metadata: proctest.FreeAddr(t), token: "test-admin-token-0123456789"}
	kek := filepath.Join(s.state, "kek")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	require.NoError(t, os.WriteFile(kek, key, 0o600))

	start := func(name, addr string, args ...string) {
		cmd := exec.Command(filepath.Join(bin, name), append([]string{"serve", "-listen", addr, "-state-dir", s.state,
			"-metrics-listen", "", "-migrate=false"}, args...)...)
		env := "ATTESTOR"
		if name == "metadata" {
			env = "METADATA"
		}
		cmd.Env = append(os.Environ(), env+"_DATABASE_URL="+url, env+"_ADMIN_TOKEN="+s.token, env+"_LOG_LEVEL=warn")
		proctest.Start(t, cmd, proctest.All(proctest.FileExists(filepath.Join(s.state, pki.AdminKeyFile)), proctest.Dialable(addr)))
	}
	start("attestor", s.attestor)
	start("metadata", s.metadata, "-gateway", "gw1", "-wg-interface", "actl-nowg0", "-http-listen", "127.0.0.1:0", "-kek-file", kek)
	return s
}

// result is one run of the command line.
type result struct {
	code   int
	stdout string
	stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// globals are the flags that point the command line at this stack.
func (s *stack) globals() []string {
	return []string{"-attestor", s.attestor, "-metadata", s.metadata, "-state-dir", s.state, "-timeout", "10s"}
}

// run runs the command line in-process with the stack's admin certificate.
func (s *stack) run(t *testing.T, args ...string) result {
	t.Helper()
	return s.runWith(t, "", nil, args...)
}

// runWith runs it with stdin and extra environment variables.
func (s *stack) runWith(t *testing.T, stdin string, env map[string]string, args ...string) result {
	t.Helper()
	return runCLI(t.Context(), stdin, env, append(s.globals(), args...)...)
}

func runCLI(ctx context.Context, stdin string, env map[string]string, args ...string) result {
	var out, errb bytes.Buffer
	code := attestctl.Run(ctx, args, attestctl.Env{
		Stdin: bytes.NewBufferString(stdin), Stdout: &out, Stderr: &errb,
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
	})
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// syncBuffer collects output written by a command running in another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
