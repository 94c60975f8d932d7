package pki_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/pki"
)

const (
	helperDirEnv  = "ATTESTBOOT_PKI_HELPER_DIR"
	helperHostEnv = "ATTESTBOOT_PKI_HELPER_HOST"
)

// TestMain doubles as the helper process of TestEnsureConcurrentProcesses, which runs the test
// binary again to call Ensure from separate processes, the way several services start on a host.
func TestMain(m *testing.M) {
	if dir := os.Getenv(helperDirEnv); dir != "" {
		b, err := pki.Ensure(dir, pki.Options{Hosts: []string{os.Getenv(helperHostEnv)}})
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		sum := sha256.Sum256(b.CA.Raw)
		fmt.Println("CA", hex.EncodeToString(sum[:]))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestEnsureConcurrentProcesses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hosts := []string{"attestor.internal", "tunnelmgr.internal", "metadata.internal", "10.9.8.7"}
	cmds := make([]*exec.Cmd, len(hosts))
	outs := make([]*strings.Builder, len(hosts))
	for i, h := range hosts {
		cmds[i] = exec.Command(os.Args[0])
		cmds[i].Env = append(os.Environ(), helperDirEnv+"="+dir, helperHostEnv+"="+h)
		outs[i] = new(strings.Builder)
		cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
		require.NoError(t, cmds[i].Start())
	}
	var fingerprint string
	for i, c := range cmds {
		require.NoError(t, c.Wait(), outs[i].String())
		line := strings.SplitN(outs[i].String(), "\n", 2)[0]
		require.True(t, strings.HasPrefix(line, "CA "), outs[i].String())
		if fingerprint == "" {
			fingerprint = line
		}
		require.Equal(t, fingerprint, line, "every process ended up with the same CA")
	}

	b, err := pki.Load(dir)
	require.NoError(t, err)
	sum := sha256.Sum256(b.CA.Raw)
	require.Equal(t, "CA "+hex.EncodeToString(sum[:]), fingerprint)
	srv := readCert(t, b.ServerCertPath)
	for _, h := range hosts {
		require.NoError(t, srv.VerifyHostname(h), h)
	}
}
