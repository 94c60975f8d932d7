package tpmtest

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/attestboot/attestboot/services/ekcert"
)

// EnvCacheDir names the environment variable that overrides the default cache directory.
const EnvCacheDir = "ATTESTBOOT_SWTPM_CACHE"

// Transport is how clients reach a running swtpm.
type Transport string

// Transports. Unix sockets are the default: they cannot collide with another process's
// ports, and a process inside a network namespace reaches them just the same (a TCP port
// on 127.0.0.1 of the root namespace is invisible from a test host's namespace).
const (
	TransportUnix Transport = "unix"
	TransportTCP  Transport = "tcp"
)

// maxIndex bounds the indices StartAny tries; far above any simulated boot storm.
const maxIndex = 1 << 16

// Config configures a Pool. The zero value is usable.
type Config struct {
	// CacheDir holds the local CA and the manufactured TPM states. Default: $ATTESTBOOT_SWTPM_CACHE,
	// else os.TempDir()/attestboot-swtpm-cache. Processes sharing it coordinate with file locks.
	CacheDir string
	// RunDir is where running TPMs get their private copy of a state and their sockets.
	// Default os.TempDir(). Keep it short: unix socket paths are limited to 107 bytes.
	RunDir string
	// Transport of started TPMs (default TransportUnix).
	Transport Transport
	// Logger receives manufacturing and start-up events (default: discarded).
	Logger *slog.Logger
	// MaxParallel bounds concurrent swtpm_setup runs of this Pool (default runtime.NumCPU()).
	MaxParallel int
	// StartTimeout bounds the wait for a started swtpm to accept connections (default 10 s).
	StartTimeout time.Duration
	// Swtpm, SwtpmSetup and SwtpmLocalCA are the programs to run; default: found on PATH.
	Swtpm, SwtpmSetup, SwtpmLocalCA string
}

func (c *Config) setDefaults() {
	if c.CacheDir == "" {
		c.CacheDir = os.Getenv(EnvCacheDir)
	}
	if c.CacheDir == "" {
		c.CacheDir = filepath.Join(os.TempDir(), "attestboot-swtpm-cache")
	}
	if c.RunDir == "" {
		c.RunDir = os.TempDir()
	}
	if c.Transport == "" {
		c.Transport = TransportUnix
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxParallel == 0 {
		c.MaxParallel = runtime.NumCPU()
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 10 * time.Second
	}
	if c.Swtpm == "" {
		c.Swtpm = "swtpm"
	}
	if c.SwtpmSetup == "" {
		c.SwtpmSetup = "swtpm_setup"
	}
	if c.SwtpmLocalCA == "" {
		c.SwtpmLocalCA = "swtpm_localca"
	}
}

// ErrMissingBinary is wrapped when swtpm, swtpm_setup or swtpm_localca cannot be found.
var ErrMissingBinary = errors.New("tpmtest: swtpm program not found")

func (c *Config) validate() error {
	if c.Transport != TransportUnix && c.Transport != TransportTCP {
		return fmt.Errorf("tpmtest: unknown transport %q", c.Transport)
	}
	if c.MaxParallel < 1 {
		return errors.New("tpmtest: MaxParallel must be positive")
	}
	if c.StartTimeout < 0 {
		return errors.New("tpmtest: StartTimeout must not be negative")
	}
	for _, p := range []*string{&c.Swtpm, &c.SwtpmSetup, &c.SwtpmLocalCA} {
		abs, err := exec.LookPath(*p)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrMissingBinary, err)
		}
		*p = abs
	}
	var err error
	if c.CacheDir, err = filepath.Abs(c.CacheDir); err != nil {
		return fmt.Errorf("tpmtest: cache dir: %w", err)
	}
	if c.RunDir, err = filepath.Abs(c.RunDir); err != nil {
		return fmt.Errorf("tpmtest: run dir: %w", err)
	}
	return nil
}

// Pool manufactures swtpm TPMs with a private local CA, caches their states on disk by index
// and starts them. Every index has its own TPM, manufactured once, with its own EK: states are
// never copied to make a second TPM, and an index runs at most once at a time machine-wide
// (a file lock, the lease, is held while it runs), so no two running TPMs share an EK.
//
// The cache survives the process, so later test runs and the many-node simulator start in
// milliseconds instead of a second per TPM. Several processes may share one cache.
type Pool struct {
	cfg Config
	log *slog.Logger
	sem chan struct{} // bounds concurrent swtpm_setup runs
}

// NewPool checks the swtpm programs and prepares the cache directory and its swtpm_setup /
// swtpm_localca configuration. Missing programs are ErrMissingBinary.
func NewPool(cfg Config) (*Pool, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, log: cfg.Logger, sem: make(chan struct{}, cfg.MaxParallel)}
	for _, d := range []string{p.cfg.CacheDir, p.caDir(), p.statesDir(), p.locksDir(), p.tmpDir(), p.trustDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("tpmtest: prepare cache: %w", err)
		}
	}
	if err := p.writeConfigFiles(); err != nil {
		return nil, err
	}
	return p, nil
}

// CacheDir returns the cache directory in use.
func (p *Pool) CacheDir() string { return p.cfg.CacheDir }

func (p *Pool) caDir() string     { return filepath.Join(p.cfg.CacheDir, "ca") }
func (p *Pool) statesDir() string { return filepath.Join(p.cfg.CacheDir, "states") }
func (p *Pool) locksDir() string  { return filepath.Join(p.cfg.CacheDir, "locks") }
func (p *Pool) tmpDir() string    { return filepath.Join(p.cfg.CacheDir, "tmp") }
func (p *Pool) trustDir() string  { return filepath.Join(p.cfg.CacheDir, "trust") }
func (p *Pool) stateDir(index int) string {
	return filepath.Join(p.statesDir(), fmt.Sprintf("%05d", index))
}

// writeConfigFiles writes the files of RECIPES.md that keep swtpm_localca's CA inside the
// cache instead of under /var/lib. Their content depends only on the cache path, so
// concurrent writers write the same bytes; rename makes each write atomic.
func (p *Pool) writeConfigFiles() error {
	ca := p.caDir()
	files := map[string]string{
		"swtpm-localca.conf": fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
			ca, filepath.Join(ca, "signkey.pem"), filepath.Join(ca, "issuercert.pem"), filepath.Join(ca, "certserial")),
		"swtpm-localca.options": "--platform-manufacturer attestboot\n--platform-version 2.1\n--platform-model swtpm\n",
		"swtpm_setup.conf": fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
			p.cfg.SwtpmLocalCA, filepath.Join(p.cfg.CacheDir, "swtpm-localca.conf"), filepath.Join(p.cfg.CacheDir, "swtpm-localca.options")),
	}
	for name, content := range files {
		if err := writeFileAtomic(filepath.Join(p.cfg.CacheDir, name), []byte(content), 0o600); err != nil {
			return fmt.Errorf("tpmtest: write %s: %w", name, err)
		}
	}
	return nil
}

// CA is the private certificate authority that signs the EK certificates of a Pool's TPMs:
// a root and the intermediate ("swtpm-localca") that issues EK certificates.
type CA struct {
	Root, Intermediate *x509.Certificate
	// TrustDir holds only RootPath and IntermediatePath (no private keys), so an attestor can
	// be pointed at it as its directory of trusted EK CAs.
	TrustDir         string
	RootPath         string
	IntermediatePath string
}

// RootCAs returns a new pool holding the root.
func (c *CA) RootCAs() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Root)
	return p
}

// Intermediates returns a new pool holding the intermediate.
func (c *CA) Intermediates() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Intermediate)
	return p
}

// CA returns the Pool's CA. swtpm_localca creates it while manufacturing the first TPM, so
// this manufactures index 0 if nothing was manufactured yet.
func (p *Pool) CA(ctx context.Context) (*CA, error) {
	if ca, err := p.loadCA(); err == nil {
		return ca, nil
	}
	if _, err := p.Manufacture(ctx, 0); err != nil {
		return nil, err
	}
	return p.loadCA()
}

func (p *Pool) loadCA() (*CA, error) {
	ca := &CA{
		TrustDir:         p.trustDir(),
		RootPath:         filepath.Join(p.trustDir(), "root.pem"),
		IntermediatePath: filepath.Join(p.trustDir(), "intermediate.pem"),
	}
	var err error
	if ca.Root, err = readPEMCert(ca.RootPath); err != nil {
		return nil, err
	}
	if ca.Intermediate, err = readPEMCert(ca.IntermediatePath); err != nil {
		return nil, err
	}
	return ca, nil
}

// publishTrust copies the CA certificates that swtpm_localca wrote next to its keys into the
// key-free trust directory. Called with the cache lock held.
func (p *Pool) publishTrust() error {
	for src, dst := range map[string]string{
		filepath.Join(p.caDir(), "swtpm-localca-rootca-cert.pem"): "root.pem",
		filepath.Join(p.caDir(), "issuercert.pem"):                "intermediate.pem",
	} {
		c, err := readPEMCert(src)
		if err != nil {
			return err
		}
		out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		if err := writeFileAtomic(filepath.Join(p.trustDir(), dst), out, 0o644); err != nil {
			return fmt.Errorf("tpmtest: publish CA: %w", err)
		}
	}
	return nil
}

// State is one manufactured TPM in the cache. Its files are shared by every run of that
// index: a running TPM works on a private copy, so that no run inherits keys, NV writes or
// lockout counters from an earlier one.
type State struct {
	Index int
	Dir   string
	// EKCertificate is the RSA-2048 EK certificate (NV 0x1c00002, the one go-attestation
	// reads); ECCEKCertificate the ECC P-384 one (NV 0x1c00016).
	EKCertificate, ECCEKCertificate *x509.Certificate
}

type stateMeta struct {
	// RootSHA256 ties a state to the CA that certified its EKs: states of an older CA (the ca
	// directory was removed) are manufactured again.
	RootSHA256 string    `json:"root_sha256"`
	Created    time.Time `json:"created"`
	Seconds    float64   `json:"manufacture_seconds"`
}

// Manufacture makes sure the state of index exists in the cache and returns it. The first
// manufacture of a cache also creates the CA. Concurrent calls for one index, in any
// process, manufacture it once.
func (p *Pool) Manufacture(ctx context.Context, index int) (*State, error) {
	if index < 0 || index >= maxIndex {
		return nil, fmt.Errorf("tpmtest: index %d out of range [0, %d)", index, maxIndex)
	}
	lock, err := lockFile(ctx, filepath.Join(p.locksDir(), fmt.Sprintf("%05d.mfg", index)))
	if err != nil {
		return nil, err
	}
	defer lock.Close()

	if ca, err := p.loadCA(); err == nil {
		if st, err := p.loadState(index, ca); err == nil {
			return st, nil
		}
		return p.manufactureLocked(ctx, index, ca)
	}
	// No CA yet: make it under the cache-wide lock, by manufacturing this index.
	global, err := lockFile(ctx, filepath.Join(p.cfg.CacheDir, "lock"))
	if err != nil {
		return nil, err
	}
	defer global.Close()
	ca, err := p.loadCA()
	if err != nil {
		// A root without its trust copy means an earlier process died in between.
		if _, statErr := os.Stat(filepath.Join(p.caDir(), "swtpm-localca-rootca-cert.pem")); statErr == nil {
			if err := p.publishTrust(); err != nil {
				return nil, err
			}
			if ca, err = p.loadCA(); err != nil {
				return nil, err
			}
		}
	}
	return p.manufactureLocked(ctx, index, ca) // ca is nil when this run creates it
}

func (p *Pool) loadState(index int, ca *CA) (*State, error) {
	dir := p.stateDir(index)
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return nil, err
	}
	var meta stateMeta
	if err := json.Unmarshal(b, &meta); err != nil {
		return nil, fmt.Errorf("tpmtest: %s: %w", dir, err)
	}
	if meta.RootSHA256 != fingerprint(ca.Root) {
		return nil, fmt.Errorf("tpmtest: %s was certified by another CA", dir)
	}
	st := &State{Index: index, Dir: dir}
	if st.EKCertificate, err = readDERCert(filepath.Join(dir, "ek-rsa2048.crt")); err != nil {
		return nil, err
	}
	if st.ECCEKCertificate, err = readDERCert(filepath.Join(dir, "ek-secp384r1.crt")); err != nil {
		return nil, err
	}
	return st, nil
}

// manufactureLocked runs swtpm_setup into a temporary directory and renames it into place
// once complete, so an interrupted run never leaves a half-made state behind. The index's
// manufacturing lock is held; when ca is nil the cache lock is held too and this run creates
// the CA.
func (p *Pool) manufactureLocked(ctx context.Context, index int, ca *CA) (*State, error) {
	select {
	case p.sem <- struct{}{}:
		defer func() { <-p.sem }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	start := time.Now()
	// Leftovers of a run of this index that died half-way; the lock says none is running.
	if stale, err := filepath.Glob(filepath.Join(p.tmpDir(), fmt.Sprintf("%05d-*", index))); err == nil {
		for _, d := range stale {
			_ = os.RemoveAll(d)
		}
	}
	tmp, err := os.MkdirTemp(p.tmpDir(), fmt.Sprintf("%05d-", index))
	if err != nil {
		return nil, fmt.Errorf("tpmtest: %w", err)
	}
	defer os.RemoveAll(tmp)

	// --create-spk persists the storage root key at 0x81000001, where go-attestation looks
	// for it; otherwise every run of a fresh copy would generate an RSA SRK (0.1-0.7 s).
	cmd := exec.CommandContext(ctx, p.cfg.SwtpmSetup,
		"--tpm2", "--tpmstate", tmp,
		"--create-ek-cert", "--create-platform-cert", "--create-spk", "--lock-nvram",
		"--pcr-banks", "sha256",
		"--config", filepath.Join(p.cfg.CacheDir, "swtpm_setup.conf"),
		"--write-ek-cert-files", tmp,
		"--logfile", filepath.Join(tmp, "setup.log"),
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		logTail, _ := os.ReadFile(filepath.Join(tmp, "setup.log"))
		return nil, fmt.Errorf("tpmtest: swtpm_setup for index %d: %w\n%s%s", index, err, out, tail(logTail, 2048))
	}
	if ca == nil {
		if err := p.publishTrust(); err != nil {
			return nil, err
		}
		if ca, err = p.loadCA(); err != nil {
			return nil, err
		}
	}
	took := time.Since(start)
	meta, err := json.Marshal(stateMeta{RootSHA256: fingerprint(ca.Root), Created: time.Now().UTC(), Seconds: took.Seconds()})
	if err != nil {
		return nil, fmt.Errorf("tpmtest: %w", err)
	}
	for _, name := range []string{"setup.log", ".lock"} {
		_ = os.Remove(filepath.Join(tmp, name))
	}
	if err := os.WriteFile(filepath.Join(tmp, "meta.json"), meta, 0o600); err != nil {
		return nil, fmt.Errorf("tpmtest: %w", err)
	}
	dst := p.stateDir(index)
	if err := os.RemoveAll(dst); err != nil { // a stale state of an older CA
		return nil, fmt.Errorf("tpmtest: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return nil, fmt.Errorf("tpmtest: %w", err)
	}
	st, err := p.loadState(index, ca)
	if err != nil {
		return nil, err
	}
	if err := ekcert.Verify(st.EKCertificate, ca.RootCAs(), ca.Intermediates()); err != nil {
		return nil, fmt.Errorf("tpmtest: freshly manufactured EK certificate of index %d: %w", index, err)
	}
	p.log.Info("manufactured swtpm", "index", index, "took", took, "ek_cert_serial", st.EKCertificate.SerialNumber)
	return st, nil
}

// Prepare manufactures indices 0 to n-1 ahead of time, MaxParallel at a time.
func (p *Pool) Prepare(ctx context.Context, n int) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(p.cfg.MaxParallel)
	for i := range n {
		g.Go(func() error {
			_, err := p.Manufacture(ctx, i)
			return err
		})
	}
	return g.Wait()
}

// ErrBusy is returned by Start when another TPM of that index is running, in this process
// or another one.
var ErrBusy = errors.New("tpmtest: TPM index already running")

// Start starts the TPM of index, manufacturing it first if needed. ctx bounds manufacturing
// and start-up only; the TPM runs until Stop.
func (p *Pool) Start(ctx context.Context, index int) (*TPM, error) {
	if index < 0 || index >= maxIndex {
		return nil, fmt.Errorf("tpmtest: index %d out of range [0, %d)", index, maxIndex)
	}
	lease, err := tryLockFile(filepath.Join(p.locksDir(), fmt.Sprintf("%05d.lease", index)))
	if err != nil {
		return nil, err
	}
	if lease == nil {
		return nil, fmt.Errorf("%w: %d", ErrBusy, index)
	}
	return p.startLeased(ctx, index, lease)
}

// StartAny starts the lowest index not running anywhere, so that the cache grows only as
// far as the largest number of TPMs ever running at once.
func (p *Pool) StartAny(ctx context.Context) (*TPM, error) {
	for index := range maxIndex {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		lease, err := tryLockFile(filepath.Join(p.locksDir(), fmt.Sprintf("%05d.lease", index)))
		if err != nil {
			return nil, err
		}
		if lease != nil {
			return p.startLeased(ctx, index, lease)
		}
	}
	return nil, fmt.Errorf("tpmtest: all %d TPM indices are running", maxIndex)
}

func (p *Pool) startLeased(ctx context.Context, index int, lease io.Closer) (*TPM, error) {
	st, err := p.Manufacture(ctx, index)
	if err != nil {
		lease.Close()
		return nil, err
	}
	ca, err := p.loadCA()
	if err != nil {
		lease.Close()
		return nil, err
	}
	t, err := p.run(ctx, st, ca, lease)
	if err != nil {
		lease.Close()
		return nil, err
	}
	return t, nil
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func readPEMCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tpmtest: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("tpmtest: %s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tpmtest: %s: %w", path, err)
	}
	return c, nil
}

func readDERCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tpmtest: %w", err)
	}
	c, err := ekcert.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("tpmtest: %s: %w", path, err)
	}
	return c, nil
}

func writeFileAtomic(path string, b []byte, mode fs.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(b) {
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
