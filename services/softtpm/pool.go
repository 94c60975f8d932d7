package softtpm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/attestboot/attestboot/services/ekcert"
)

// EnvCacheDir names the environment variable that overrides the default cache directory.
const EnvCacheDir = "ATTESTBOOT_SOFTTPM_CACHE"

// MaxIndex bounds TPM indices: far above any simulated boot storm.
const MaxIndex = 1 << 20

// fileFormat versions the cache files; files of another format are made again.
const fileFormat = "1"

// PEM block types and headers of the cache files.
const (
	pemSeed      = "SOFTTPM SEED"
	pemKey       = "PRIVATE KEY"
	pemCert      = "CERTIFICATE"
	headerFormat = "Format"
	headerCA     = "CA-SHA256"
)

// Config configures a Pool. The zero value is usable.
type Config struct {
	// CacheDir holds the CA and one file per TPM (its EK key, EK certificate and seed).
	// Default: $ATTESTBOOT_SOFTTPM_CACHE, else os.TempDir()/attestboot-softtpm-cache.
	// Processes may share it: files are created atomically and the first one written wins.
	CacheDir string
	// Logger receives what Prepare made (default: discarded).
	Logger *slog.Logger
	// MaxParallel bounds the key generations of Prepare (default GOMAXPROCS).
	MaxParallel int
}

func (c *Config) setDefaults() {
	if c.CacheDir == "" {
		c.CacheDir = os.Getenv(EnvCacheDir)
	}
	if c.CacheDir == "" {
		c.CacheDir = filepath.Join(os.TempDir(), "attestboot-softtpm-cache")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxParallel == 0 {
		c.MaxParallel = runtime.GOMAXPROCS(0)
	}
}

func (c *Config) validate() error {
	if c.MaxParallel < 1 {
		return errors.New("softtpm: MaxParallel must be positive")
	}
	abs, err := filepath.Abs(c.CacheDir)
	if err != nil {
		return fmt.Errorf("softtpm: cache dir: %w", err)
	}
	c.CacheDir = abs
	return nil
}

// Pool makes software TPMs by index and caches them on disk and in memory: index i is the
// same TPM (same EK, same certificate) in every process that uses the same cache directory,
// as tpmtest.Pool does for swtpm, without a process per TPM.
type Pool struct {
	cfg    Config
	log    *slog.Logger
	caKey  *ecdsa.PrivateKey
	caCert *x509.Certificate
	caSum  string // hex SHA-256 of the CA certificate, written into every TPM file

	mu   sync.Mutex
	tpms map[int]*slot
}

// slot is one index being loaded or loaded; ready is closed when tpm or err is set.
type slot struct {
	ready chan struct{}
	tpm   *TPM
	err   error
}

// NewPool opens (creating if needed) the cache directory and its CA.
func NewPool(cfg Config) (*Pool, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, log: cfg.Logger, tpms: make(map[int]*slot)}
	for _, d := range []string{cfg.CacheDir, p.tpmDir(), p.TrustDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("softtpm: prepare cache: %w", err)
		}
	}
	if err := p.loadOrMakeCA(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Pool) tpmDir() string { return filepath.Join(p.cfg.CacheDir, "tpms") }
func (p *Pool) caPath() string { return filepath.Join(p.cfg.CacheDir, "ca.pem") }
func (p *Pool) tpmPath(index int) string {
	return filepath.Join(p.tpmDir(), fmt.Sprintf("%05d.pem", index))
}

// CacheDir returns the cache directory in use.
func (p *Pool) CacheDir() string { return p.cfg.CacheDir }

// TrustDir is a directory holding only the CA certificate (ca.pem, no key): point an
// attestor's trusted EK CA directory at it.
func (p *Pool) TrustDir() string { return filepath.Join(p.cfg.CacheDir, "trust") }

// CA returns the manufacturer CA that signs the EK certificates of the Pool's TPMs. It is made
// once per cache directory.
func (p *Pool) CA() (*x509.Certificate, error) { return p.caCert, nil }

func (p *Pool) loadOrMakeCA() error {
	for range 3 {
		b, err := os.ReadFile(p.caPath())
		if errors.Is(err, fs.ErrNotExist) {
			if err := p.makeCA(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("softtpm: read CA: %w", err)
		}
		if err := p.parseCA(b); err != nil {
			return err
		}
		certPEM := pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: p.caCert.Raw})
		if err := writeFileAtomic(filepath.Join(p.TrustDir(), "ca.pem"), certPEM, 0o644); err != nil {
			return fmt.Errorf("softtpm: publish CA: %w", err)
		}
		return nil
	}
	return errors.New("softtpm: CA file keeps disappearing")
}

func (p *Pool) parseCA(b []byte) error {
	var keyDER, certDER []byte
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		switch block.Type {
		case pemKey:
			keyDER = block.Bytes
		case pemCert:
			certDER = block.Bytes
		}
	}
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return fmt.Errorf("softtpm: %s: CA key: %w", p.caPath(), err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("softtpm: %s: CA certificate: %w", p.caPath(), err)
	}
	ecKey, ok := key.(*ecdsa.PrivateKey)
	if !ok || !ekcert.PublicKeyMatches(cert, &ecKey.PublicKey) {
		return fmt.Errorf("softtpm: %s: CA key and certificate do not match", p.caPath())
	}
	sum := sha256.Sum256(cert.Raw)
	p.caKey, p.caCert, p.caSum = ecKey, cert, hex.EncodeToString(sum[:])
	return nil
}

// makeCA writes a new CA unless another process got there first.
func (p *Pool) makeCA() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("softtpm: CA key: %w", err)
	}
	now := time.Now().UTC()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{Organization: []string{"attestboot"}, CommonName: "attestboot softtpm EK CA"},
		NotBefore:    now.Add(-24 * time.Hour),
		NotAfter:     notAfterForever(),
		IsCA:         true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("softtpm: CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("softtpm: CA key: %w", err)
	}
	b := append(pem.EncodeToMemory(&pem.Block{Type: pemKey, Bytes: keyDER}), pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: der})...)
	if _, err := createExclusive(p.caPath(), b); err != nil {
		return fmt.Errorf("softtpm: write CA: %w", err)
	}
	return nil
}

// notAfterForever is 99991231235959Z, the "no well-defined expiration" of RFC 5280 that
// TPM EK certificates use.
func notAfterForever() time.Time { return time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC) }

// Prepare makes the TPMs 0 to n-1 that are missing from the cache, MaxParallel at a time. It
// does not load them: TPM does, in well under a millisecond each.
func (p *Pool) Prepare(ctx context.Context, n int) error {
	if n < 0 || n > MaxIndex {
		return fmt.Errorf("softtpm: cannot prepare %d TPMs (max %d)", n, MaxIndex)
	}
	start := time.Now()
	var made atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.cfg.MaxParallel)
	for i := range n {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			if _, err := p.readFile(i); err == nil {
				return nil
			}
			if _, err := p.makeFile(i); err != nil {
				return err
			}
			made.Add(1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p.log.Info("prepared softtpm TPMs", "count", n, "made", made.Load(), "took", time.Since(start), "cache", p.cfg.CacheDir)
	return nil
}

// TPM returns TPM index, loading it from the cache (or making and caching it) on first use.
// Later calls return the same *TPM.
func (p *Pool) TPM(index int) (*TPM, error) {
	if index < 0 || index >= MaxIndex {
		return nil, fmt.Errorf("softtpm: index %d out of range [0, %d)", index, MaxIndex)
	}
	p.mu.Lock()
	s, ok := p.tpms[index]
	if ok {
		p.mu.Unlock()
		<-s.ready
		return s.tpm, s.err
	}
	s = &slot{ready: make(chan struct{})}
	p.tpms[index] = s
	p.mu.Unlock()

	s.tpm, s.err = p.load(index)
	if s.err != nil {
		// Not cached: a later call tries again.
		p.mu.Lock()
		delete(p.tpms, index)
		p.mu.Unlock()
	}
	close(s.ready)
	return s.tpm, s.err
}

// tpmFile is a TPM's cache file, decoded but not parsed.
type tpmFile struct {
	seed, key, cert []byte
}

// readFile reads the file of index; a missing file, one of another format or certified by
// another CA is an error.
func (p *Pool) readFile(index int) (tpmFile, error) {
	b, err := os.ReadFile(p.tpmPath(index))
	if err != nil {
		return tpmFile{}, err
	}
	var f tpmFile
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		switch block.Type {
		case pemSeed:
			if block.Headers[headerFormat] != fileFormat {
				return tpmFile{}, fmt.Errorf("softtpm: %s: format %q, want %q", p.tpmPath(index), block.Headers[headerFormat], fileFormat)
			}
			f.seed = block.Bytes
		case pemKey:
			f.key = block.Bytes
		case pemCert:
			if block.Headers[headerCA] != p.caSum {
				return tpmFile{}, fmt.Errorf("softtpm: %s was certified by another CA", p.tpmPath(index))
			}
			f.cert = block.Bytes
		}
	}
	if len(f.seed) != 32 || f.key == nil || f.cert == nil {
		return tpmFile{}, fmt.Errorf("softtpm: %s is incomplete", p.tpmPath(index))
	}
	return f, nil
}

// makeFile manufactures TPM index: an RSA-2048 EK, its certificate and a seed. A stale file
// is replaced; if another process writes the index at the same time, its file wins and is
// returned, so that every process sees one EK per index.
func (p *Pool) makeFile(index int) (tpmFile, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return tpmFile{}, fmt.Errorf("softtpm: EK of index %d: %w", index, err)
	}
	certDER, err := p.issueEKCertificate(index, &key.PublicKey)
	if err != nil {
		return tpmFile{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tpmFile{}, fmt.Errorf("softtpm: EK of index %d: %w", index, err)
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	b := pem.EncodeToMemory(&pem.Block{Type: pemSeed, Headers: map[string]string{headerFormat: fileFormat}, Bytes: seed})
	b = append(b, pem.EncodeToMemory(&pem.Block{Type: pemKey, Bytes: keyDER})...)
	b = append(b, pem.EncodeToMemory(&pem.Block{Type: pemCert, Headers: map[string]string{headerCA: p.caSum}, Bytes: certDER})...)

	path := p.tpmPath(index)
	if _, err := p.readFile(index); err != nil {
		// Missing, incomplete or of an older CA: clear the way for the new one.
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return tpmFile{}, fmt.Errorf("softtpm: %w", err)
		}
	}
	won, err := createExclusive(path, b)
	if err != nil {
		return tpmFile{}, fmt.Errorf("softtpm: write %s: %w", path, err)
	}
	if !won {
		return p.readFile(index)
	}
	p.log.Debug("made softtpm", "index", index, "file", path)
	return tpmFile{seed: seed, key: keyDER, cert: certDER}, nil
}

func (p *Pool) load(index int) (*TPM, error) {
	f, err := p.readFile(index)
	if err != nil {
		if f, err = p.makeFile(index); err != nil {
			return nil, err
		}
	}
	key, err := x509.ParsePKCS8PrivateKey(f.key)
	if err != nil {
		return nil, fmt.Errorf("softtpm: %s: EK: %w", p.tpmPath(index), err)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("softtpm: %s: EK is a %T, want RSA", p.tpmPath(index), key)
	}
	cert, err := x509.ParseCertificate(f.cert)
	if err != nil {
		return nil, fmt.Errorf("softtpm: %s: EK certificate: %w", p.tpmPath(index), err)
	}
	return newTPM(index, rsaKey, cert, f.seed)
}

// issueEKCertificate certifies an EK the way swtpm_localca does, following the TCG EK
// Credential Profile: empty subject, a critical subject alternative name naming the TPM
// (manufacturer, model, version), the TPM specification in subjectDirectoryAttributes,
// keyEncipherment only, extended key usage tcg-kp-EKCertificate.
func (p *Pool) issueEKCertificate(index int, pub *rsa.PublicKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("softtpm: serial: %w", err)
	}
	san, err := tpmSAN(SANManufacturer, SANModel, SANVersion)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		NotBefore:             p.caCert.NotBefore,
		NotAfter:              notAfterForever(),
		KeyUsage:              x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{ekcert.OIDEKCertificate},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: san},
			{Id: asn1.ObjectIdentifier{2, 5, 29, 9}, Value: []byte(tpmSpecificationAttribute)},
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, pub, p.caKey)
	if err != nil {
		return nil, fmt.Errorf("softtpm: EK certificate of index %d: %w", index, err)
	}
	return der, nil
}

// tpmSpecificationAttribute is the subjectDirectoryAttributes value of swtpm's EK
// certificates: tcg-at-tpmSpecification (2.23.133.2.16) of family "2.0", level 0,
// revision 164.
const tpmSpecificationAttribute = "\x30\x19\x30\x17\x06\x05\x67\x81\x05\x02\x10\x31\x0e\x30\x0c" +
	"\x0c\x03\x32\x2e\x30\x02\x01\x00\x02\x02\x00\xa4"

// tcgAttr is one TCG attribute of the TPM's directory name, a UTF8String as the EK
// Credential Profile has it; tcgAttrSET is a relative distinguished name (encoding/asn1
// encodes types named *SET as SET OF).
type tcgAttr struct {
	Type  asn1.ObjectIdentifier
	Value string `asn1:"utf8"`
}

type tcgAttrSET []tcgAttr

// tpmSAN encodes the subject alternative name of an EK certificate: one directoryName with
// the TPM manufacturer, model and version.
func tpmSAN(manufacturer, model, version string) ([]byte, error) {
	name, err := asn1.Marshal([]tcgAttrSET{
		{{ekcert.OIDTPMManufacturer, manufacturer}},
		{{ekcert.OIDTPMModel, model}},
		{{ekcert.OIDTPMVersion, version}},
	})
	if err != nil {
		return nil, fmt.Errorf("softtpm: encode TPM name: %w", err)
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}})
	if err != nil {
		return nil, fmt.Errorf("softtpm: encode subject alternative name: %w", err)
	}
	return san, nil
}

// createExclusive writes b to path with mode 0600 unless path exists, atomically: readers
// see no file or the whole file. It reports whether this call created it.
func createExclusive(path string, b []byte) (bool, error) {
	tmp, err := writeTemp(path, b, 0o600)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	// link(2) fails if path exists, where rename(2) would replace it.
	err = os.Link(tmp, path)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	return err == nil, err
}

// writeFileAtomic replaces path with b, atomically.
func writeFileAtomic(path string, b []byte, mode fs.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(b) {
		return nil
	}
	tmp, err := writeTemp(path, b, mode)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func writeTemp(path string, b []byte, mode fs.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// String names the TPM in logs.
func (t *TPM) String() string { return "softtpm#" + strconv.Itoa(t.index) }
