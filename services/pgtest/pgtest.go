// Package pgtest gives tests a throwaway Postgres: one server per test binary, started by Main
// from TestMain, and a fresh, already migrated database per test (NewDB, NewPool). Any module's
// tests can use it.
//
// The server is the newest /usr/lib/postgresql/<version>/bin found (or the directory in
// PGTEST_BINDIR). initdb runs once per machine into a cached data directory under
// os.TempDir() (guarded by a file lock); each test binary copies it (cp -a) into its own temp
// directory and starts postgres there on a unix socket only, with durability turned off. As
// root, initdb and postgres run as the postgres user. Databases are created from a template
// database migrated once per test binary, which takes milliseconds instead of re-running the
// migrations.
//
// With TEST_DATABASE_URL set, no server is started: databases are created on that server
// instead (the URL's user needs CREATEDB).
//
// A test that cannot get a database because the Postgres binaries are missing stops through
// testdep.Missing: it fails under CI=true and skips elsewhere.
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/testdep"
)

// EnvURL names the environment variable pointing at an existing server to use instead of a
// throwaway one.
const EnvURL = "TEST_DATABASE_URL"

// EnvBinDir names the environment variable that overrides where the Postgres server binaries
// (initdb, postgres) are looked for.
const EnvBinDir = "PGTEST_BINDIR"

// current is the server Main started for this test binary. It is package state because
// testing.M gives no other way to hand something from TestMain to the tests; only Main sets it.
var current struct {
	mu sync.Mutex
	h  *harness
}

// Main starts the server, runs the tests and stops the server. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// A server that cannot start does not stop the test binary: the tests that ask for a
// database fail (or, when binaries are missing, skip outside CI) and the others run.
func Main(m *testing.M) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	h := start()
	current.mu.Lock()
	current.h = h
	current.mu.Unlock()
	defer func() {
		current.mu.Lock()
		current.h = nil
		current.mu.Unlock()
		h.stop()
	}()
	if testing.Verbose() {
		switch {
		case h.missing != "":
			fmt.Fprintf(os.Stderr, "pgtest: no server: %s\n", h.missing)
		case h.err != nil:
			fmt.Fprintf(os.Stderr, "pgtest: server failed to start: %v\n", h.err)
		case h.external:
			fmt.Fprintf(os.Stderr, "pgtest: using %s\n", EnvURL)
		default:
			fmt.Fprintf(os.Stderr, "pgtest: Postgres %s ready in %v (initdb cache %s, copy %v, start %v)\n",
				h.major, h.startup.Round(time.Millisecond), h.cacheState,
				h.copyTime.Round(time.Millisecond), h.startTime.Round(time.Millisecond))
		}
	}
	return m.Run()
}

// NewDB returns the URL of a new database holding the migrated inventory schema, dropped when
// the test ends.
func NewDB(t testing.TB) string {
	t.Helper()
	h := get(t)
	ctx := context.Background()
	if err := h.ensureTemplate(ctx); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return h.createDB(t, h.template)
}

// NewEmptyDB returns the URL of a new database without the inventory schema (for migration
// tests), dropped when the test ends.
func NewEmptyDB(t testing.TB) string {
	t.Helper()
	return get(t).createDB(t, "template0")
}

// NewPool returns a pool on a new migrated database (NewDB), closed when the test ends.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return Pool(t, NewDB(t))
}

// Pool returns a pool connected to dbURL, closed when the test ends.
func Pool(t testing.TB, dbURL string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// ServerPID returns the pid of the postmaster serving dbURL, found as the parent of a backend,
// so benchmarks can read the cluster's CPU from /proc (procstat.CPUOfFamily). The server must
// run on this machine.
func ServerPID(t testing.TB, dbURL string) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(context.Background())
	var backend int
	if err := conn.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		t.Fatalf("pgtest: backend pid: %v", err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", backend))
	if err != nil {
		t.Fatalf("pgtest: the server does not run on this machine: %v", err)
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		t.Fatalf("pgtest: parse /proc/%d/stat: %v", backend, err)
	}
	return ppid
}

func get(t testing.TB) *harness {
	t.Helper()
	current.mu.Lock()
	h := current.h
	current.mu.Unlock()
	switch {
	case h == nil:
		// A bug in the test package, not a missing dependency: never skip over it.
		t.Fatal("pgtest: no server: call pgtest.Main from TestMain " +
			"(func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) })")
	case h.missing != "":
		testdep.Missing(t, "%s", h.missing)
	case h.err != nil:
		t.Fatalf("pgtest: the server did not start: %v", h.err)
	}
	return h
}

// harness is one server (started here or external) and what tests need to create databases.
type harness struct {
	missing string // a dependency is absent: tests stop through testdep.Missing
	err     error  // the server did not start

	external bool
	baseURL  string // connection string of the server's maintenance database
	admin    *pgxpool.Pool
	template string
	seq      atomic.Int64

	tplMu   sync.Mutex
	tplDone bool
	tplErr  error

	// Local server only.
	major                        string
	dir                          string // this binary's temp dir: data, socket, log
	cmd                          *exec.Cmd
	exited                       chan struct{}
	startup, copyTime, startTime time.Duration
	cacheState                   string
}

func start() *harness {
	h := &harness{}
	begin := time.Now()
	if u := os.Getenv(EnvURL); u != "" {
		h.external = true
		h.baseURL = u
		h.template = "attestboot_template_" + randomHex(6)
	} else {
		h.template = "attestboot_template"
		if err := h.startLocal(); err != nil {
			if h.missing == "" {
				h.err = err
			}
			h.stop()
			return h
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(h.baseURL)
	if err != nil {
		h.err = fmt.Errorf("parse server URL: %w", err)
		h.stop()
		return h
	}
	cfg.MaxConns = 4
	if h.admin, err = pgxpool.NewWithConfig(ctx, cfg); err == nil {
		err = h.admin.Ping(ctx)
	}
	if err != nil {
		h.err = fmt.Errorf("connect to the server: %w", err)
		h.stop()
		return h
	}
	h.startup = time.Since(begin)
	return h
}

// ensureTemplate creates and migrates the template database on first use, so test binaries
// that only need empty databases never pay for it.
func (h *harness) ensureTemplate(ctx context.Context) error {
	h.tplMu.Lock()
	defer h.tplMu.Unlock()
	if h.tplDone {
		return h.tplErr
	}
	h.tplDone = true
	h.tplErr = h.createTemplate(ctx)
	return h.tplErr
}

func (h *harness) createTemplate(ctx context.Context) error {
	tpl := pgx.Identifier{h.template}.Sanitize()
	if _, err := h.admin.Exec(ctx, "CREATE DATABASE "+tpl); err != nil {
		return fmt.Errorf("create template database: %w", err)
	}
	pool, err := pgxpool.New(ctx, h.dbURL(h.template))
	if err != nil {
		return fmt.Errorf("connect to template database: %w", err)
	}
	_, err = inventory.Migrate(ctx, pool)
	pool.Close()
	if err != nil {
		return fmt.Errorf("migrate template database: %w", err)
	}
	// No connections: CREATE DATABASE ... TEMPLATE refuses a template someone is connected to.
	if _, err := h.admin.Exec(ctx, "ALTER DATABASE "+tpl+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("mark template database: %w", err)
	}
	return nil
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

func (h *harness) createDB(t testing.TB, template string) string {
	t.Helper()
	// The test name makes a leftover database (after a crash, on an external server)
	// recognisable; the sequence number and random suffix make it unique.
	name := strings.Trim(nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	prefix := fmt.Sprintf("t%d_%s_", h.seq.Add(1), randomHex(3))
	name = prefix + name[:min(len(name), 63-len(prefix))]
	ident := pgx.Identifier{name}.Sanitize()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := h.admin.Exec(ctx, "CREATE DATABASE "+ident+" TEMPLATE "+pgx.Identifier{template}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// FORCE: a test that forgot to close a connection must not leave the database behind.
		if _, err := h.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return h.dbURL(name)
}

// dbURL returns the connection string of database name on the server.
func (h *harness) dbURL(name string) string {
	if !h.external {
		return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d&sslmode=disable",
			url.PathEscape(name), url.QueryEscape(h.dir), port)
	}
	if u, err := url.Parse(h.baseURL); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		u.RawPath = ""
		return u.String()
	}
	// key=value form: a later dbname overrides an earlier one.
	return h.baseURL + " dbname=" + name
}

func (h *harness) stop() {
	if h.admin != nil {
		if h.external && h.tplDone {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			tpl := pgx.Identifier{h.template}.Sanitize()
			_, _ = h.admin.Exec(ctx, "ALTER DATABASE "+tpl+" WITH IS_TEMPLATE false")
			_, _ = h.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+tpl+" WITH (FORCE)")
			cancel()
		}
		h.admin.Close()
	}
	if h.cmd != nil && h.cmd.Process != nil {
		// SIGQUIT is pg_ctl's "immediate" shutdown: nothing here needs to survive.
		_ = h.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-h.exited:
		case <-time.After(15 * time.Second):
			_ = h.cmd.Process.Kill()
			<-h.exited
		}
	}
	if h.dir != "" {
		_ = os.RemoveAll(h.dir)
	}
}

// port is the server's port. Only the socket file name depends on it (the server listens on
// no TCP address), and every test binary has its own socket directory.
const port = 5432

// runAs is the user the server runs as; nil means the current user.
type runAs = syscall.Credential

func (h *harness) startLocal() error {
	bin, err := findBinDir()
	if err != nil {
		h.missing = err.Error()
		return err
	}
	major, err := serverMajor(bin)
	if err != nil {
		return err
	}
	h.major = major
	cred, err := serverUser()
	if err != nil {
		h.missing = err.Error()
		return err
	}
	sweepStaleRuns()

	cached, state, err := cachedDataDir(bin, major, cred)
	if err != nil {
		return err
	}
	h.cacheState = state

	parent := os.TempDir()
	if len(parent) > 60 {
		// Unix socket paths are limited to 107 bytes.
		parent = "/tmp"
	}
	h.dir, err = os.MkdirTemp(parent, runPrefix)
	if err != nil {
		return fmt.Errorf("create run directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(h.dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	if err := chown(h.dir, cred); err != nil {
		return err
	}
	t0 := time.Now()
	data := filepath.Join(h.dir, "data")
	if out, err := exec.Command("cp", "-a", cached, data).CombinedOutput(); err != nil {
		return fmt.Errorf("copy cached data directory: %v: %s", err, out)
	}
	h.copyTime = time.Since(t0)

	t0 = time.Now()
	logFile, err := os.Create(filepath.Join(h.dir, "postgres.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	h.cmd = exec.Command(filepath.Join(bin, "postgres"),
		"-D", data,
		"-k", h.dir,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=",
		// A test server needs no durability: nothing survives the test binary.
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "wal_level=minimal",
		"-c", "max_wal_senders=0",
		"-c", "max_wal_size=4GB",
		// With 1 MB segments (see cachedDataDir) a CREATE DATABASE fills several; zeroing each
		// first would make it a third slower.
		"-c", "wal_init_zero=off",
		"-c", "checkpoint_timeout=1h",
		// Parallel tests each hold a pool; boot-storm tests hold many connections.
		"-c", "max_connections=300",
	)
	h.cmd.Dir = h.dir
	h.cmd.Stdout, h.cmd.Stderr = logFile, logFile
	h.cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: cred,
		// Own process group: Ctrl-C in the terminal reaches the test binary, not the server.
		Setpgid: true,
		// If the test binary dies without running Main's cleanup (a test timeout panic, a
		// kill), the server shuts down with it. Set after the credential change, so it sticks.
		Pdeathsig: syscall.SIGQUIT,
	}
	if err := h.cmd.Start(); err != nil {
		h.cmd = nil
		return fmt.Errorf("start postgres: %w", err)
	}
	h.exited = make(chan struct{})
	go func() {
		_ = h.cmd.Wait()
		close(h.exited)
	}()
	h.baseURL = h.dbURL("postgres")
	if err := h.waitReady(60 * time.Second); err != nil {
		return err
	}
	h.startTime = time.Since(t0)
	return nil
}

func (h *harness) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgconn.Connect(ctx, h.baseURL)
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return nil
		}
		select {
		case <-h.exited:
			return fmt.Errorf("postgres exited during start-up: %s", h.logTail())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after %v: %v: %s", timeout, err, h.logTail())
		}
	}
}

func (h *harness) logTail() string {
	b, _ := os.ReadFile(filepath.Join(h.dir, "postgres.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// findBinDir returns the directory of the newest installed server binaries.
func findBinDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		if !isExecutable(filepath.Join(d, "postgres")) || !isExecutable(filepath.Join(d, "initdb")) {
			return "", fmt.Errorf("%s=%s holds no initdb and postgres", EnvBinDir, d)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		return versionOf(b) - versionOf(a) // newest first
	})
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "postgres")) && isExecutable(filepath.Join(d, "initdb")) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		d := filepath.Dir(p)
		if isExecutable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errors.New("postgres server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or on PATH " +
		"(install the postgresql package, or set " + EnvBinDir + " or " + EnvURL + ")")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

var versionOutput = regexp.MustCompile(`\(PostgreSQL\) ([0-9]+)`)

func serverMajor(bin string) (string, error) {
	out, err := exec.Command(filepath.Join(bin, "postgres"), "-V").Output()
	if err != nil {
		return "", fmt.Errorf("postgres -V: %w", err)
	}
	m := versionOutput.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("postgres -V: unexpected output %q", out)
	}
	return string(m[1]), nil
}

// serverUser returns the credential to run initdb and postgres with. Both refuse to run as
// root, so root runs them as the postgres user; anyone else runs them as themselves.
func serverUser() (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, errors.New("running as root needs a postgres user to run the server as (install the postgresql package)")
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user has non-numeric ids %s:%s", u.Uid, u.Gid)
	}
	// Groups empty (not nil with NoSetGroups): drop root's supplementary groups.
	return &runAs{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

func chown(path string, cred *runAs) error {
	if cred == nil {
		return nil
	}
	if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

// cachedDataDir returns a freshly initdb'ed data directory cached across test runs, creating
// it on first use. A file lock makes concurrent test binaries wait for one initdb instead of
// each running their own. The result is only ever copied, never started in place.
func cachedDataDir(bin, major string, cred *runAs) (dir, state string, err error) {
	// Per user and major version: another user could not copy a 0700 directory, and a data
	// directory only works with the major version that created it.
	// The format number changes whenever the initdb flags below do.
	base := filepath.Join(os.TempDir(), fmt.Sprintf("attestboot-pgtest-%s-f%d-uid%d", major, cacheFormat, os.Geteuid()))
	lock, err := os.OpenFile(base+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", "", fmt.Errorf("initdb cache lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", "", fmt.Errorf("initdb cache lock: %w", err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()

	data := filepath.Join(base, "data")
	ready := filepath.Join(base, "ready")
	if _, err := os.Stat(ready); err == nil {
		return data, "hit", nil
	}
	// A missing marker means no cache or an interrupted initdb: start over.
	if err := os.RemoveAll(base); err != nil {
		return "", "", fmt.Errorf("reset initdb cache: %w", err)
	}
	if err := os.Mkdir(base, 0o700); err != nil {
		return "", "", fmt.Errorf("create initdb cache: %w", err)
	}
	if err := chown(base, cred); err != nil {
		return "", "", err
	}
	tmp := filepath.Join(base, "data.tmp")
	cmd := exec.Command(filepath.Join(bin, "initdb"),
		"-D", tmp, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8",
		// 1 MB WAL segments instead of 16: the copy each test binary makes is 40% smaller.
		"--wal-segsize=1",
		"--no-sync", "--no-instructions")
	cmd.Dir = base
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("initdb: %v: %s", err, out)
	}
	if err := os.Rename(tmp, data); err != nil {
		return "", "", fmt.Errorf("initdb cache: %w", err)
	}
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		return "", "", fmt.Errorf("initdb cache: %w", err)
	}
	return data, "miss (ran initdb)", nil
}

// cacheFormat identifies the initdb flags of the cached data directory.
const cacheFormat = 1

const (
	runPrefix = "attestboot-pgtest-run-"
	ownerFile = "owner.pid"
)

// sweepStaleRuns removes run directories left by test binaries that died without cleaning up
// (killed before Main's deferred stop ran). A directory whose owner or server still runs is
// left alone.
func sweepStaleRuns() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), runPrefix+"*"))
	for _, d := range dirs {
		// A directory another binary is still setting up has no owner file yet.
		if fi, err := os.Stat(d); err != nil || time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		if alive(readPID(filepath.Join(d, ownerFile))) || alive(readPID(filepath.Join(d, "data", "postmaster.pid"))) {
			continue
		}
		_ = os.RemoveAll(d)
	}
}

// readPID reads the first line of a pid file; 0 when there is none.
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
