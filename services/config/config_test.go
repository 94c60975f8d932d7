package config_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/config"
)

type settings struct {
	listen  string
	grace   time.Duration
	debug   bool
	names   config.StringList
	token   string
	workers int
}

func newFlagSet(s *settings) *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	fs.StringVar(&s.listen, "listen", ":8443", "listen address")
	fs.DurationVar(&s.grace, "shutdown-grace", 10*time.Second, "grace")
	fs.BoolVar(&s.debug, "debug", false, "debug")
	s.names = config.StringList{"localhost"}
	fs.Var(&s.names, "tls-dns-names", "names")
	fs.IntVar(&s.workers, "workers", 4, "workers")
	config.SecretVar(fs, &s.token, "admin-token", "admin token")
	return fs
}

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestEnvName(t *testing.T) {
	t.Parallel()
	require.Equal(t, "ATTESTOR_LISTEN", config.EnvName("ATTESTOR", "listen"))
	require.Equal(t, "ATTESTOR_TLS_CERT", config.EnvName("attestor", "tls-cert"))
	require.Equal(t, "METADATA_A_B_C", config.EnvName("METADATA_", "a.b-c"))
	require.Equal(t, "LISTEN", config.EnvName("", "listen"))
}

func TestApplyEnvOverridesDefaultsButNotCommandLine(t *testing.T) {
	t.Parallel()
	var s settings
	fs := newFlagSet(&s)
	require.NoError(t, fs.Parse([]string{"-listen", "127.0.0.1:1"}))
	err := config.ApplyEnv(fs, "ATTESTOR", envMap(map[string]string{
		"ATTESTOR_LISTEN":         "0.0.0.0:2", // loses: set on the command line
		"ATTESTOR_SHUTDOWN_GRACE": "3s",
		"ATTESTOR_DEBUG":          "true",
		"ATTESTOR_TLS_DNS_NAMES":  "a.example, b.example,,",
		"ATTESTOR_ADMIN_TOKEN":    "from-env",
		"OTHER_WORKERS":           "99", // another prefix: ignored
	}))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:1", s.listen)
	require.Equal(t, 3*time.Second, s.grace)
	require.True(t, s.debug)
	require.Equal(t, config.StringList{"a.example", "b.example"}, s.names)
	require.Equal(t, "from-env", s.token)
	require.Equal(t, 4, s.workers)
}

func TestApplyEnvErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	var s settings
	fs := newFlagSet(&s)
	require.NoError(t, fs.Parse(nil))
	err := config.ApplyEnv(fs, "TUNNELMGR", envMap(map[string]string{
		"TUNNELMGR_WORKERS":        "many",
		"TUNNELMGR_SHUTDOWN_GRACE": "soon",
	}))
	require.ErrorContains(t, err, "TUNNELMGR_WORKERS")
	require.ErrorContains(t, err, "TUNNELMGR_SHUTDOWN_GRACE")

	unparsed := flag.NewFlagSet("x", flag.ContinueOnError)
	require.Error(t, config.ApplyEnv(unparsed, "X", envMap(nil)))
}

// TestParseUsesProcessEnvironment cannot run in parallel: it sets process environment variables.
func TestParseUsesProcessEnvironment(t *testing.T) {
	t.Setenv("METADATA_WORKERS", "7")
	t.Setenv("METADATA_LISTEN", "[::1]:9")
	t.Setenv("METADATA_ADMIN_TOKEN", "tok")

	var s settings
	fs := newFlagSet(&s)
	require.NoError(t, config.Parse(fs, "METADATA", []string{"-workers", "8"}))
	require.Equal(t, 8, s.workers, "command line wins")
	require.Equal(t, "[::1]:9", s.listen, "environment beats default")
	require.Equal(t, "tok", s.token)
	require.Contains(t, fs.Lookup("listen").Usage, "(env METADATA_LISTEN)")
}

func TestParseRefusesSecretOnCommandLine(t *testing.T) {
	t.Parallel()
	var s settings
	fs := newFlagSet(&s)
	var help bytes.Buffer
	fs.SetOutput(&help)
	err := config.Parse(fs, "ATTESTOR", []string{"-admin-token", "hunter2-visible-in-ps"})
	require.ErrorContains(t, err, "ATTESTOR_ADMIN_TOKEN")
	require.NotContains(t, err.Error(), "hunter2")

	fs.PrintDefaults()
	require.NotContains(t, help.String(), "hunter2", "-help must not show a secret")
	require.Contains(t, help.String(), "environment only")
}

func TestReadSecretFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}

	got, err := config.ReadSecretFile(write("lf", "s3cret token\n"))
	require.NoError(t, err)
	require.Equal(t, "s3cret token", got)

	got, err = config.ReadSecretFile(write("crlf", " padded \r\n\r\n"))
	require.NoError(t, err)
	require.Equal(t, " padded ", got, "only trailing newlines are trimmed")

	_, err = config.ReadSecretFile(write("empty", "\n"))
	require.ErrorContains(t, err, "empty")

	_, err = config.ReadSecretFile(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)

	_, err = config.ReadSecretFile(write("big", string(make([]byte, 2<<20))))
	require.ErrorContains(t, err, "larger than")
}
