package tpmtest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/ekcert"
	"github.com/attestboot/attestboot/services/testdep"
	"github.com/attestboot/attestboot/services/tpmtest"
)

// Persistent handles swtpm_setup gives the EKs (TCG EK Credential Profile, "low range").
const (
	rsaEKHandle = 0x81010001
	eccEKHandle = 0x81010016
)

// TestAttestationRoundTrip is the harness's end-to-end proof: a manufactured swtpm, opened
// through tpmconn by go-attestation, presents an EK certificate that verifies against the
// harness CA and matches the EK inside the TPM, and completes credential activation.
func TestAttestationRoundTrip(t *testing.T) {
	t.Parallel()
	start := time.Now()
	tpm := tpmtest.Start(t)
	t.Logf("swtpm ready after %v (manufacturing included on a cold cache)", time.Since(start))

	ch, err := tpm.Open()
	require.NoError(t, err)
	at, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: ch})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, at.Close()) })

	info, err := at.Info()
	require.NoError(t, err)
	require.Equal(t, attest.TPMInterfaceCommandChannel, info.Interface)
	t.Logf("TPM: manufacturer %v, vendor %q, firmware %d.%d", info.Manufacturer, info.VendorInfo, info.FirmwareVersionMajor, info.FirmwareVersionMinor)

	eks, err := at.EKs()
	require.NoError(t, err)
	var ek attest.EK
	for _, e := range eks {
		if _, ok := e.Public.(*rsa.PublicKey); ok && e.Certificate != nil {
			ek = e
		}
	}
	require.NotNil(t, ek.Certificate, "go-attestation found no RSA EK certificate in NV")
	require.Equal(t, tpm.EKCertificate().Raw, ek.Certificate.Raw, "the TPM holds the certificate the harness reports")

	// The certificate chains to the harness CA, given as pools and as a trust directory.
	require.NoError(t, ekcert.Verify(ek.Certificate, tpm.RootCAs(), tpm.Intermediates()))
	trusted, err := ekcert.LoadRoots(tpm.CA().TrustDir)
	require.NoError(t, err)
	require.NoError(t, ekcert.Verify(ek.Certificate, trusted, nil))
	tpmInfo, err := ekcert.ParseTPMInfo(ek.Certificate)
	require.NoError(t, err)
	require.Equal(t, "swtpm", tpmInfo.Model)

	// go-attestation takes the EK public key from the certificate; read the key the TPM
	// really holds, through go-tpm's transport over the same channel, and compare.
	tr := transport.FromReadWriter(ch)
	for _, handle := range []tpm2.TPMHandle{rsaEKHandle, eccEKHandle} {
		rsp, err := tpm2.ReadPublic{ObjectHandle: handle}.Execute(tr)
		require.NoError(t, err, "ReadPublic %#x", handle)
		pubArea, err := rsp.OutPublic.Contents()
		require.NoError(t, err)
		pub, err := tpm2.Pub(*pubArea)
		require.NoError(t, err)
		switch pub.(type) {
		case *rsa.PublicKey:
			require.True(t, ekcert.PublicKeyMatches(ek.Certificate, pub), "RSA EK certificate does not certify the TPM's RSA EK")
			require.True(t, ekcert.PublicKeyMatches(tpm.EKCertificate(), pub))
			sum, err := ekcert.SHA256PKIX(pub)
			require.NoError(t, err)
			require.Equal(t, tpm.EKSHA256(), sum)
		case *ecdsa.PublicKey:
			require.True(t, ekcert.PublicKeyMatches(tpm.ECCEKCertificate(), pub), "ECC EK certificate does not certify the TPM's ECC EK")
			require.NoError(t, ekcert.Verify(tpm.ECCEKCertificate(), tpm.RootCAs(), tpm.Intermediates()))
		default:
			t.Fatalf("unexpected EK type %T at %#x", pub, handle)
		}
	}

	// Credential activation: the server side encrypts a secret to the EK for this AK; only
	// the TPM holding both can recover it.
	akStart := time.Now()
	ak, err := at.NewAK(&attest.AKConfig{Algorithm: attest.ECDSA})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ak.Close(at)) })
	akTook := time.Since(akStart)

	params := ak.AttestationParameters()
	ap := attest.ActivationParameters{EK: ek.Public, AK: params}
	secret, ec, err := ap.Generate()
	require.NoError(t, err)
	actStart := time.Now()
	got, err := ak.ActivateCredential(at, *ec)
	require.NoError(t, err)
	actTook := time.Since(actStart)
	require.Equal(t, secret, got)

	// A credential made for another EK does not activate.
	other := tpmtest.Start(t)
	ap.EK = other.EKPublicKey()
	_, ec2, err := ap.Generate()
	require.NoError(t, err)
	_, err = ak.ActivateCredential(at, *ec2)
	require.Error(t, err)

	t.Logf("NewAK(ECDSA) %v, ActivateCredential %v", akTook, actTook)
}

func TestTransports(t *testing.T) {
	t.Parallel()
	for _, tr := range []tpmtest.Transport{tpmtest.TransportUnix, tpmtest.TransportTCP} {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			tpm := tpmtest.StartWithConfig(t, tpmtest.Config{Transport: tr}, 1)[0]
			prefix := map[tpmtest.Transport]string{tpmtest.TransportUnix: "unix:", tpmtest.TransportTCP: "swtpm:127.0.0.1:"}[tr]
			require.True(t, strings.HasPrefix(tpm.Addr(), prefix), tpm.Addr())

			ch, err := tpm.Open()
			require.NoError(t, err)
			defer ch.Close()
			rsp, err := tpm2.GetRandom{BytesRequested: 16}.Execute(transport.FromReadWriter(ch))
			require.NoError(t, err)
			require.Len(t, rsp.RandomBytes.Buffer, 16)
			log, err := ch.MeasurementLog()
			require.NoError(t, err)
			require.Nil(t, log)
		})
	}
}

func TestStartNGivesDistinctEKs(t *testing.T) {
	t.Parallel()
	tpms := tpmtest.StartN(t, 3)
	eks := map[[32]byte]int{}
	for _, tpm := range tpms {
		eks[tpm.EKSHA256()] = tpm.Index()
		require.NoError(t, ekcert.Verify(tpm.EKCertificate(), tpm.RootCAs(), tpm.Intermediates()))
	}
	require.Len(t, eks, 3, "every TPM has its own EK")
}

// newPool makes a pool with a private cache, so the test sees a cold cache.
func newPool(t *testing.T) *tpmtest.Pool {
	t.Helper()
	testdep.Binaries(t, "swtpm", "swtpm_setup", "swtpm_localca")
	pool, err := tpmtest.NewPool(tpmtest.Config{CacheDir: t.TempDir()})
	require.NoError(t, err)
	return pool
}

func TestPoolCacheAndLeases(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t)

	// A fresh cache has no CA until the first manufacture; asking for it makes one.
	ca, err := pool.CA(ctx)
	require.NoError(t, err)
	entries, err := os.ReadDir(ca.TrustDir)
	require.NoError(t, err)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(ca.TrustDir, e.Name()))
		require.NoError(t, err)
		require.NotContains(t, string(b), "PRIVATE KEY", "the trust directory holds certificates only")
	}

	start := time.Now()
	first, err := pool.Start(ctx, 0)
	require.NoError(t, err)
	t.Logf("start of index 0, manufactured already by CA(): %v", time.Since(start))
	require.Equal(t, 0, first.Index())

	_, err = pool.Start(ctx, 0)
	require.ErrorIs(t, err, tpmtest.ErrBusy, "an index runs once at a time")

	start = time.Now()
	second, err := pool.StartAny(ctx)
	require.NoError(t, err)
	t.Logf("StartAny on a cold index (manufacture + start): %v", time.Since(start))
	require.Equal(t, 1, second.Index())
	require.NotEqual(t, first.EKSHA256(), second.EKSHA256())

	ek0 := first.EKSHA256()
	pid := first.Pid()
	require.NoError(t, first.Stop())
	require.NoError(t, first.Stop(), "Stop is idempotent")
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "swtpm is gone")

	start = time.Now()
	again, err := pool.Start(ctx, 0)
	require.NoError(t, err)
	t.Logf("start of cached index 0: %v", time.Since(start))
	require.Equal(t, ek0, again.EKSHA256(), "an index keeps its EK")
	require.NoError(t, again.Stop())
	require.NoError(t, second.Stop())

	// Another pool on the same cache (another test binary) reuses the states and the CA.
	samePool, err := tpmtest.NewPool(tpmtest.Config{CacheDir: pool.CacheDir()})
	require.NoError(t, err)
	st, err := samePool.Manufacture(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, second.EKSHA256(), mustHash(t, st))
}

func mustHash(t *testing.T, st *tpmtest.State) [32]byte {
	t.Helper()
	sum, err := ekcert.SHA256PKIX(st.EKCertificate.PublicKey)
	require.NoError(t, err)
	return sum
}

func TestRunsDoNotChangeTheCachedState(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t)
	tpm, err := pool.Start(ctx, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tpm.Stop() })

	// Persist a key at a free handle; a later run of the same index must not see it.
	ch, err := tpm.Open()
	require.NoError(t, err)
	tr := transport.FromReadWriter(ch)
	const handle = tpm2.TPMHandle(0x81000099)
	created, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(tr)
	require.NoError(t, err)
	_, err = tpm2.EvictControl{
		Auth:             tpm2.TPMRHOwner,
		ObjectHandle:     &tpm2.NamedHandle{Handle: created.ObjectHandle, Name: created.Name},
		PersistentHandle: handle,
	}.Execute(tr)
	require.NoError(t, err)
	_, err = tpm2.ReadPublic{ObjectHandle: handle}.Execute(tr)
	require.NoError(t, err)
	require.NoError(t, ch.Close())
	require.NoError(t, tpm.Stop())

	again, err := pool.Start(ctx, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = again.Stop() })
	ch, err = again.Open()
	require.NoError(t, err)
	defer ch.Close()
	_, err = tpm2.ReadPublic{ObjectHandle: handle}.Execute(transport.FromReadWriter(ch))
	require.Error(t, err, "the persisted key leaked into the next run")
}

func TestStopReportsACrash(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	testdep.Binaries(t, "swtpm", "swtpm_setup", "swtpm_localca")
	pool, err := tpmtest.NewPool(tpmtest.Config{})
	require.NoError(t, err)
	tpm, err := pool.StartAny(ctx)
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(tpm.Pid(), syscall.SIGKILL))
	select {
	case <-tpm.Done():
	case <-ctx.Done():
		t.Fatal("swtpm not reaped")
	}
	err = tpm.Stop()
	require.ErrorContains(t, err, "exited before Stop")

	// The lease was released: the index can run again.
	again, err := pool.Start(ctx, tpm.Index())
	require.NoError(t, err)
	require.NoError(t, again.Stop())
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	_, err := tpmtest.NewPool(tpmtest.Config{CacheDir: t.TempDir(), Swtpm: "/nonexistent/swtpm"})
	require.ErrorIs(t, err, tpmtest.ErrMissingBinary)
	_, err = tpmtest.NewPool(tpmtest.Config{CacheDir: t.TempDir(), Transport: "udp"})
	require.Error(t, err)
	require.False(t, errors.Is(err, tpmtest.ErrMissingBinary))
}
