package softtpm_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/ekcert"
	"github.com/attestboot/attestboot/services/softtpm"
)

// TestCacheReload: a second Pool on the same directory has the same CA and loads the same
// TPMs, from files only their owner can read.
func TestCacheReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p1, err := softtpm.NewPool(softtpm.Config{CacheDir: dir})
	require.NoError(t, err)
	require.NoError(t, p1.Prepare(context.Background(), 2))
	a1 := newTPM(t, p1, 0)
	again := newTPM(t, p1, 0)
	require.Same(t, a1, again, "a Pool keeps what it loaded")

	p2, err := softtpm.NewPool(softtpm.Config{CacheDir: dir})
	require.NoError(t, err)
	ca1, err := p1.CA()
	require.NoError(t, err)
	ca2, err := p2.CA()
	require.NoError(t, err)
	require.Equal(t, ca1.Raw, ca2.Raw)
	for i := range 2 {
		x, y := newTPM(t, p1, i), newTPM(t, p2, i)
		require.Equal(t, x.EKSHA256(), y.EKSHA256(), "index %d", i)
		require.Equal(t, x.EKCertificate().Raw, y.EKCertificate().Raw)
		require.Equal(t, i, y.Index())
	}
	require.NotEqual(t, newTPM(t, p2, 0).EKSHA256(), newTPM(t, p2, 1).EKSHA256())

	// Same answers from the chip itself: the reloaded SRK (derived from the seed) is the same.
	srk := func(tpm *softtpm.TPM) []byte {
		ch := open(t, tpm)
		_, name, _, err := tpm2.ReadPublic(ch, 0x81000001)
		require.NoError(t, err)
		return name
	}
	require.Equal(t, srk(newTPM(t, p1, 1)), srk(newTPM(t, p2, 1)))

	for _, name := range []string{"ca.pem", "tpms/00000.pem", "tpms/00001.pem"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), name)
	}
	entries, err := os.ReadDir(p2.TrustDir())
	require.NoError(t, err)
	require.Len(t, entries, 1, "the trust directory holds the CA certificate only")
	roots, err := ekcert.LoadRoots(p2.TrustDir())
	require.NoError(t, err)
	require.NoError(t, ekcert.Verify(newTPM(t, p2, 1).EKCertificate(), roots, nil))
}

// TestNewCAMakesNewTPMs: TPMs certified by a CA that is gone are made again.
func TestNewCAMakesNewTPMs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p1, err := softtpm.NewPool(softtpm.Config{CacheDir: dir})
	require.NoError(t, err)
	old := newTPM(t, p1, 0)
	require.NoError(t, os.Remove(filepath.Join(dir, "ca.pem")))

	p2, err := softtpm.NewPool(softtpm.Config{CacheDir: dir})
	require.NoError(t, err)
	tpm := newTPM(t, p2, 0)
	require.NotEqual(t, old.EKSHA256(), tpm.EKSHA256())
	ca, err := p2.CA()
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	require.NoError(t, ekcert.Verify(tpm.EKCertificate(), roots, nil))
	require.Error(t, ekcert.Verify(old.EKCertificate(), roots, nil))
}

// TestEKCertificate: the certificate is what the attestor's EK policy accepts from a TPM
// manufacturer, for the key the TPM holds at 0x81010001 with the TCG default template.
func TestEKCertificate(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	tpm := newTPM(t, pool, 0)
	cert := tpm.EKCertificate()
	ca, err := pool.CA()
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	chains, err := ekcert.VerifyWithOptions(cert, ekcert.Options{Roots: roots, CurrentTime: time.Now()})
	require.NoError(t, err)
	require.Len(t, chains, 1)
	info, err := ekcert.ParseTPMInfo(cert)
	require.NoError(t, err)
	require.Equal(t, ekcert.TPMInfo{Manufacturer: softtpm.SANManufacturer, Model: softtpm.SANModel, Version: softtpm.SANVersion}, info)
	require.Equal(t, x509.KeyUsageKeyEncipherment, cert.KeyUsage)
	require.Contains(t, cert.UnknownExtKeyUsage, ekcert.OIDEKCertificate)
	require.Empty(t, cert.Subject.String(), "the TCG profile leaves the subject empty")
	require.Equal(t, 9999, cert.NotAfter.Year())

	ch := open(t, tpm)
	pub, _, _, err := tpm2.ReadPublic(ch, 0x81010001)
	require.NoError(t, err)
	key, err := pub.Key()
	require.NoError(t, err)
	require.True(t, key.(*rsa.PublicKey).Equal(cert.PublicKey))
	// go-attestation's template (unexported) is the TCG default EK template L-1.
	require.Equal(t, tpm2.FlagFixedTPM|tpm2.FlagFixedParent|tpm2.FlagSensitiveDataOrigin|
		tpm2.FlagAdminWithPolicy|tpm2.FlagRestricted|tpm2.FlagDecrypt, pub.Attributes)
	require.Equal(t, tpm2.AlgSHA256, pub.NameAlg)
	require.Equal(t, "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa", hexOf(pub.AuthPolicy))
	require.Equal(t, &tpm2.SymScheme{Alg: tpm2.AlgAES, KeyBits: 128, Mode: tpm2.AlgCFB}, pub.RSAParameters.Symmetric)
	require.Equal(t, uint16(2048), pub.RSAParameters.KeyBits)
	require.Nil(t, pub.RSAParameters.Sign)

	nv, err := tpm2.NVReadPublic(ch, 0x01C00002)
	require.NoError(t, err)
	require.Equal(t, uint16(len(cert.Raw)), nv.DataSize)
	require.Equal(t, tpm2.KeyProp(0x62072801), tpm2.KeyProp(nv.Attributes), "as swtpm_setup --lock-nvram")
}

// TestPrepare makes TPMs in parallel once; a second Prepare finds them.
func TestPrepare(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, err := softtpm.NewPool(softtpm.Config{CacheDir: dir})
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, p.Prepare(context.Background(), 4))
	made := time.Since(start)
	files, err := filepath.Glob(filepath.Join(dir, "tpms", "*.pem"))
	require.NoError(t, err)
	require.Len(t, files, 4)
	start = time.Now()
	require.NoError(t, p.Prepare(context.Background(), 4))
	t.Logf("Prepare(4): %v making, %v when made", made, time.Since(start))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, p.Prepare(ctx, 8), context.Canceled)
	_, err = p.TPM(-1)
	require.Error(t, err)
}

// BenchmarkBoot measures the TPM part of one node's boot, client and TPM together, as the
// simulator spends it: open, read the EK, create an AK, activate a credential, quote, read
// the PCRs, close. Making the credential (the attestor's work) is not timed.
func BenchmarkBoot(b *testing.B) {
	for _, alg := range []attest.Algorithm{attest.ECDSA} {
		b.Run(string(alg), func(b *testing.B) {
			tpm := newTPM(b, newPool(b), 0)
			nonce := make([]byte, 32)
			var cpu time.Duration
			for b.Loop() {
				cpu0 := cpuTime()
				ch, err := tpm.Open()
				require.NoError(b, err)
				at, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: ch})
				require.NoError(b, err)
				eks, err := at.EKs()
				require.NoError(b, err)
				ak, err := at.NewAK(&attest.AKConfig{Algorithm: alg})
				require.NoError(b, err)
				cpu += cpuTime() - cpu0

				b.StopTimer()
				ap := attest.ActivationParameters{EK: eks[0].Public, AK: ak.AttestationParameters()}
				_, cred, err := ap.Generate()
				require.NoError(b, err)
				b.StartTimer()

				cpu0 = cpuTime()
				_, err = ak.ActivateCredentialWithEK(at, *cred, eks[0])
				require.NoError(b, err)
				_, err = ak.Quote(at, nonce, attest.HashSHA256)
				require.NoError(b, err)
				_, err = at.PCRs(attest.HashSHA256)
				require.NoError(b, err)
				require.NoError(b, ak.Close(at))
				require.NoError(b, at.Close())
				cpu += cpuTime() - cpu0
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkLoad measures loading one TPM from the cache: reading its file, parsing the EK
// and its certificate.
func BenchmarkLoad(b *testing.B) {
	const n = 64
	dir := b.TempDir()
	p, err := softtpm.NewPool(softtpm.Config{CacheDir: dir})
	require.NoError(b, err)
	require.NoError(b, p.Prepare(context.Background(), n))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%n == 0 {
			// A new Pool, so that every load reads the file.
			b.StopTimer()
			p, err = softtpm.NewPool(softtpm.Config{CacheDir: dir})
			require.NoError(b, err)
			b.StartTimer()
		}
		_, err := p.TPM(i % n)
		require.NoError(b, err)
		i++
	}
}

// BenchmarkResident reports the heap a loaded TPM keeps (bytes per TPM), the figure that
// decides how many simulated nodes fit in one process.
func BenchmarkResident(b *testing.B) {
	const n = 200
	dir := b.TempDir()
	p, err := softtpm.NewPool(softtpm.Config{CacheDir: dir})
	require.NoError(b, err)
	require.NoError(b, p.Prepare(context.Background(), n))
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		p, err := softtpm.NewPool(softtpm.Config{CacheDir: dir})
		require.NoError(b, err)
		for i := range n {
			_, err := p.TPM(i)
			require.NoError(b, err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/tpm")
		runtime.KeepAlive(p)
	}
}
