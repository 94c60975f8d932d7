package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

var allClasses = []Class{ClassOther, ClassConfig, ClassTPM, ClassAttestation, ClassTunnel, ClassWireGuard, ClassMetadata, ClassCloudInit, ClassPhoneHome}

func TestClassesHaveDistinctExitCodesAndNames(t *testing.T) {
	t.Parallel()
	codes := map[int]Class{}
	names := map[string]Class{}
	for _, c := range allClasses {
		code := c.ExitCode()
		require.NotZero(t, code, "%s: 0 is success", c)
		require.Less(t, code, 126, "%s: 126 and up mean exec failures and signals to a shell", c)
		require.NotContains(t, codes, code, "%s shares its exit code", c)
		codes[code] = c
		require.NotEmpty(t, c.String())
		require.NotContains(t, names, c.String())
		names[c.String()] = c
	}
	require.Equal(t, map[string]Class{
		"other": ClassOther, "config": ClassConfig, "tpm": ClassTPM, "attestation": ClassAttestation,
		"tunnel": ClassTunnel, "wireguard": ClassWireGuard, "metadata": ClassMetadata,
		"cloud-init": ClassCloudInit, "phone-home": ClassPhoneHome,
	}, names)
	// The exit codes are an interface to init systems and scripts: they must not drift.
	require.Equal(t, 2, ClassConfig.ExitCode())
	require.Equal(t, 10, ClassTPM.ExitCode())
	require.Equal(t, 16, ClassPhoneHome.ExitCode())
}

func TestClassOf(t *testing.T) {
	t.Parallel()
	cause := errors.New("connection refused")
	err := fail(ClassTunnel, cause)
	require.Equal(t, ClassTunnel, ClassOf(err))
	require.Equal(t, ClassTunnel, ClassOf(fmt.Errorf("boot: %w", err)), "found through wrapping")
	require.ErrorIs(t, err, cause, "the cause stays reachable")
	require.Equal(t, "tunnel: connection refused", err.Error())
	require.Equal(t, ClassOther, ClassOf(cause))
	require.Equal(t, ClassOther, ClassOf(nil))
	// The outermost class wins: a phase's class names where the boot failed.
	require.Equal(t, ClassMetadata, ClassOf(fail(ClassMetadata, fail(ClassWireGuard, cause))))
}

// A configuration error is found before anything is touched, and has the config class.
func TestBootRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	good := Config{NodeID: "n1", TPM: "unix:/nonexistent", Attestor: "a:1", TunnelManager: "b:2", TLS: &tls.Config{}}
	for name, mutate := range map[string]func(*Config){
		"no node id":        func(c *Config) { c.NodeID = "" },
		"no TPM":            func(c *Config) { c.TPM = "" },
		"no attestor":       func(c *Config) { c.Attestor = "" },
		"no tunnel manager": func(c *Config) { c.TunnelManager = "" },
		"no TLS":            func(c *Config) { c.TLS = nil },
		"bad phone-home":    func(c *Config) { c.Seed.PhoneHome = "pigeon" },
	} {
		c := good
		mutate(&c)
		_, err := Boot(context.Background(), c, slog.New(slog.DiscardHandler))
		require.Error(t, err, name)
		require.Equal(t, ClassConfig, ClassOf(err), "%s: %v", name, err)
	}

	// A good configuration with an unreachable TPM fails in the TPM phase, with its class.
	res, err := Boot(context.Background(), good, slog.New(slog.DiscardHandler))
	require.Equal(t, ClassTPM, ClassOf(err), "%v", err)
	require.Len(t, res.Phases, 1)
	require.Equal(t, "tpm", res.Phases[0].Name)
}
