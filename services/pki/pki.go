package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// AdminCommonName is the subject common name of the admin client certificate, and the identity
// the gRPC server accepts as admin by default.
const AdminCommonName = "attestboot-admin"

// File names inside the state directory.
const (
	CACertFile     = "ca.pem"
	CAKeyFile      = "ca-key.pem"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server-key.pem"
	AdminCertFile  = "admin.pem"
	AdminKeyFile   = "admin-key.pem"
	lockFile       = ".lock"
)

// Options tune Ensure. The zero value is usable.
type Options struct {
	// Hosts are DNS names or IP addresses the server certificate must cover, in addition to
	// localhost, 127.0.0.1 and ::1.
	Hosts []string
	// CAValidity is the lifetime of a new CA. Default 10 years.
	CAValidity time.Duration
	// LeafValidity is the lifetime of new server and admin certificates. Default 1 year: leaves are
	// renewed by Ensure, the CA is not.
	LeafValidity time.Duration
	// RenewBefore is how long before expiry Ensure replaces a leaf certificate. Default 30 days.
	RenewBefore time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.CAValidity == 0 {
		o.CAValidity = 10 * 365 * 24 * time.Hour
	}
	if o.LeafValidity == 0 {
		o.LeafValidity = 365 * 24 * time.Hour
	}
	if o.RenewBefore == 0 {
		o.RenewBefore = 30 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

func (o Options) validate() error {
	if o.CAValidity < 0 || o.LeafValidity < 0 || o.RenewBefore < 0 {
		return errors.New("pki: validities must not be negative")
	}
	if o.RenewBefore >= o.LeafValidity {
		return errors.New("pki: RenewBefore must be shorter than LeafValidity, or every start would reissue")
	}
	if o.LeafValidity > o.CAValidity {
		return errors.New("pki: LeafValidity must not exceed CAValidity")
	}
	for _, h := range o.Hosts {
		if strings.TrimSpace(h) == "" || strings.ContainsAny(h, " /") {
			return fmt.Errorf("pki: invalid host %q", h)
		}
	}
	return nil
}

// Bundle locates the files of a development PKI. Every path is absolute.
type Bundle struct {
	Dir            string
	CACertPath     string
	CAKeyPath      string
	ServerCertPath string
	ServerKeyPath  string
	AdminCertPath  string
	AdminKeyPath   string
	// CA is the CA certificate.
	CA *x509.Certificate
}

// Ensure makes sure dir holds a development PKI and returns it:
//
//   - a CA (ECDSA P-256), created if absent and never replaced, since every node and admin
//     trusts it;
//   - a server certificate (ServerAuth) for localhost, 127.0.0.1, ::1 and opts.Hosts, reissued when
//     it is missing, invalid, not from this CA, close to expiry, or does not cover a requested
//     host (the new one covers the old hosts too, so services sharing the directory with different
//     host lists converge instead of replacing each other's names);
//   - an admin client certificate (ClientAuth, CN attestboot-admin), reissued on the same terms.
//
// Private keys are written 0600 and the directory is created 0700; an existing key readable by
// group or others is refused, as ssh does. Several processes may call Ensure on one directory at
// once: an exclusive flock serialises them and every file is replaced by an atomic rename, so a
// reader never sees a partial file.
func Ensure(dir string, opts Options) (*Bundle, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: create state dir: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()

	b := bundleIn(dir)
	ca, caKey, err := ensureCA(b, opts)
	if err != nil {
		return nil, err
	}
	b.CA = ca
	if err := ensureServer(b, ca, caKey, opts); err != nil {
		return nil, err
	}
	if err := ensureAdmin(b, ca, caKey, opts); err != nil {
		return nil, err
	}
	return b, nil
}

// Load returns the bundle of an existing development PKI without creating or changing anything,
// for clients (an admin CLI, tests) that share a state directory with a server.
func Load(dir string) (*Bundle, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	b := bundleIn(dir)
	ca, err := readCert(b.CACertPath)
	if err != nil {
		return nil, err
	}
	b.CA = ca
	return b, nil
}

func bundleIn(dir string) *Bundle {
	return &Bundle{
		Dir:            dir,
		CACertPath:     filepath.Join(dir, CACertFile),
		CAKeyPath:      filepath.Join(dir, CAKeyFile),
		ServerCertPath: filepath.Join(dir, ServerCertFile),
		ServerKeyPath:  filepath.Join(dir, ServerKeyFile),
		AdminCertPath:  filepath.Join(dir, AdminCertFile),
		AdminKeyPath:   filepath.Join(dir, AdminKeyFile),
	}
}

// lockDir takes an exclusive flock on dir/.lock. flock locks belong to the open file description,
// so two goroutines of one process exclude each other just like two processes do.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pki: open lock file: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pki: lock state dir: %w", err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

func ensureCA(b *Bundle, opts Options) (*x509.Certificate, crypto.Signer, error) {
	ca, err := readCert(b.CACertPath)
	if err == nil {
		key, err := readKey(b.CAKeyPath)
		if err != nil {
			return nil, nil, err
		}
		if !publicKeysEqual(ca.PublicKey, key.Public()) {
			return nil, nil, fmt.Errorf("pki: %s does not match %s", b.CAKeyPath, b.CACertPath)
		}
		if now := opts.Now(); now.After(ca.NotAfter.Add(-opts.RenewBefore)) {
			// Replacing the CA silently would lock out every node and admin that trusts it.
			return nil, nil, fmt.Errorf("pki: development CA %s expires %s: move the state dir away to create a new one", b.CACertPath, ca.NotAfter.Format(time.RFC3339))
		}
		return ca, key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	name, err := keyName(key.Public())
	if err != nil {
		return nil, nil, err
	}
	now := opts.Now()
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			Organization: []string{"attestboot"},
			// The fingerprint tells CAs of different state dirs apart in error messages.
			CommonName: "attestboot development CA " + name,
		},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(opts.CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	ca, err = createCert(tmpl, nil, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	// The key goes first: a crash between the two writes leaves no certificate, so the next start
	// creates both again instead of finding a certificate without its key.
	if err := writeKey(b.CAKeyPath, key); err != nil {
		return nil, nil, err
	}
	if err := writeCert(b.CACertPath, ca); err != nil {
		return nil, nil, err
	}
	return ca, key, nil
}

func ensureServer(b *Bundle, ca *x509.Certificate, caKey crypto.Signer, opts Options) error {
	dnsNames := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	for _, h := range opts.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = appendIP(ips, ip)
		} else {
			dnsNames = appendName(dnsNames, h)
		}
	}

	old, ok := usableLeaf(b.ServerCertPath, b.ServerKeyPath, ca, x509.ExtKeyUsageServerAuth, opts)
	if ok && coversAll(old, dnsNames, ips) {
		return nil
	}
	if old != nil {
		for _, n := range old.DNSNames {
			dnsNames = appendName(dnsNames, n)
		}
		for _, ip := range old.IPAddresses {
			ips = appendIP(ips, ip)
		}
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"attestboot"}, CommonName: "attestboot-server"},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		// ServerAuth only: the server certificate must not pass as a client (admin) certificate.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return issueLeafFiles(b.ServerCertPath, b.ServerKeyPath, tmpl, ca, caKey, opts)
}

func ensureAdmin(b *Bundle, ca *x509.Certificate, caKey crypto.Signer, opts Options) error {
	if cert, ok := usableLeaf(b.AdminCertPath, b.AdminKeyPath, ca, x509.ExtKeyUsageClientAuth, opts); ok && cert.Subject.CommonName == AdminCommonName {
		return nil
	}
	return issueLeafFiles(b.AdminCertPath, b.AdminKeyPath, clientTemplate(AdminCommonName), ca, caKey, opts)
}

func clientTemplate(commonName string) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"attestboot"}, CommonName: commonName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// usableLeaf returns the certificate at certPath (or nil) and whether it can be kept: it parses,
// its key matches, it chains to ca for usage, and it is not about to expire.
func usableLeaf(certPath, keyPath string, ca *x509.Certificate, usage x509.ExtKeyUsage, opts Options) (*x509.Certificate, bool) {
	cert, err := readCert(certPath)
	if err != nil {
		return nil, false
	}
	key, err := readKey(keyPath)
	if err != nil || !publicKeysEqual(cert.PublicKey, key.Public()) {
		return cert, false
	}
	now := opts.Now()
	if now.After(cert.NotAfter.Add(-opts.RenewBefore)) {
		return cert, false
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return cert, false
	}
	return cert, true
}

func coversAll(cert *x509.Certificate, dnsNames []string, ips []net.IP) bool {
	for _, n := range dnsNames {
		if !slices.ContainsFunc(cert.DNSNames, func(c string) bool { return strings.EqualFold(c, n) }) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

func appendName(names []string, n string) []string {
	if slices.ContainsFunc(names, func(c string) bool { return strings.EqualFold(c, n) }) {
		return names
	}
	return append(names, n)
}

func appendIP(ips []net.IP, ip net.IP) []net.IP {
	if slices.ContainsFunc(ips, ip.Equal) {
		return ips
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return append(ips, ip)
}

func issueLeafFiles(certPath, keyPath string, tmpl, ca *x509.Certificate, caKey crypto.Signer, opts Options) error {
	cert, key, err := issueLeaf(tmpl, ca, caKey, opts)
	if err != nil {
		return err
	}
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return writeCert(certPath, cert)
}

func issueLeaf(tmpl, ca *x509.Certificate, caKey crypto.Signer, opts Options) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key: %w", err)
	}
	now := opts.Now()
	tmpl.NotBefore = now.Add(-5 * time.Minute)
	tmpl.NotAfter = now.Add(opts.LeafValidity)
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	cert, err := createCert(tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// IssueClientCert signs a new client certificate (ClientAuth, ECDSA P-256) with the bundle's CA,
// for another admin identity or for tests that need a verified but unauthorised client. The
// result is PEM; nothing is written to the state directory.
func (b *Bundle) IssueClientCert(commonName string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if commonName == "" {
		return nil, nil, errors.New("pki: client certificate needs a common name")
	}
	caKey, err := readKey(b.CAKeyPath)
	if err != nil {
		return nil, nil, err
	}
	opts := Options{LeafValidity: validity}.withDefaults()
	cert, key, err := issueLeaf(clientTemplate(commonName), b.CA, caKey, opts)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse new certificate: %w", err)
	}
	return cert, nil
}

// keyName is a short fingerprint of pub, used only to tell CAs of different state dirs apart.
func keyName(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("pki: encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:4]), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: read certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("pki: %s holds no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse %s: %w", path, err)
	}
	return cert, nil
}

func readKey(path string) (crypto.Signer, error) {
	if err := checkKeyMode(path); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: read key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("pki: %s holds no PKCS#8 PEM private key", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: %s: unsupported key type %T", path, key)
	}
	return signer, nil
}

// checkKeyMode refuses a private key that group or others can read or write.
func checkKeyMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("pki: key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("pki: private key %s has mode %04o, want 0600 (chmod 600 it)", path, fi.Mode().Perm())
	}
	return nil
}

func writeCert(path string, cert *x509.Certificate) error {
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: encode key: %w", err)
	}
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// writeAtomic writes data to a temporary file next to path and renames it over path, so readers
// see the old content or the new, never a mix; the mode is set before any byte is written.
func writeAtomic(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}
