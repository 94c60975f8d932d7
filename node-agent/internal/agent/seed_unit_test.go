package agent

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func newTestSeed(t *testing.T, cfg SeedConfig) *seed {
	t.Helper()
	require.NoError(t, cfg.validate())
	return newSeed(cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
}

func docs() Documents {
	return Documents{
		MetaData:      []byte("instance-id: i-1\nlocal-hostname: cn001\n"),
		UserData:      []byte("#cloud-config\nwrite_files: [{path: /etc/munge/munge.key, content: secret}]\n"),
		VendorData:    []byte("#cloud-config\nphone_home: {url: http://100.64.0.1/phone-home}\n"),
		NetworkConfig: []byte("version: 2\nethernets: {eth0: {dhcp4: true}}\n"),
	}
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	st, err := os.Lstat(path)
	require.NoError(t, err)
	return st.Mode()
}

func TestSeedConfigDefaults(t *testing.T) {
	t.Parallel()
	var c SeedConfig
	require.NoError(t, c.validate())
	require.Equal(t, "/var/lib/cloud/seed/nocloud-net", c.Dir, "the local seed cloud-init 22.4 reads network-config from")
	require.Equal(t, "/", c.Root)
	require.Equal(t, PhoneHomeAuto, c.PhoneHome)
	for _, m := range []PhoneHome{PhoneHomeAuto, PhoneHomeAgent, PhoneHomeCloudInit} {
		c := SeedConfig{PhoneHome: m}
		require.NoError(t, c.validate())
	}
	c = SeedConfig{PhoneHome: "nobody"}
	require.ErrorContains(t, c.validate(), "nobody")
}

func TestSeedWritePermissions(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "seed", "nocloud-net")
	s := newTestSeed(t, SeedConfig{Dir: dir})
	d := docs()
	require.NoError(t, s.write(d))

	require.Equal(t, fs.ModeDir|0o700, mode(t, dir))
	for name, want := range map[string][]byte{
		"meta-data": d.MetaData, "user-data": d.UserData, "vendor-data": d.VendorData, "network-config": d.NetworkConfig,
	} {
		p := filepath.Join(dir, name)
		require.Equal(t, fs.FileMode(0o600), mode(t, p), name)
		got, err := os.ReadFile(p)
		require.NoError(t, err)
		require.Equal(t, want, got, name)
	}
}

func TestSeedWriteTightensExistingDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "seed")
	require.NoError(t, os.Mkdir(dir, 0o755))
	// A stale world-readable file from an earlier boot is replaced, not reused.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "user-data"), []byte("old"), 0o644))
	s := newTestSeed(t, SeedConfig{Dir: dir})
	require.NoError(t, s.write(docs()))
	require.Equal(t, fs.ModeDir|0o700, mode(t, dir))
	require.Equal(t, fs.FileMode(0o600), mode(t, filepath.Join(dir, "user-data")))
	got, err := os.ReadFile(filepath.Join(dir, "user-data"))
	require.NoError(t, err)
	require.Equal(t, docs().UserData, got)
}

func TestSeedWriteDoesNotFollowSymlinks(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	dir := filepath.Join(base, "seed")
	require.NoError(t, os.Mkdir(dir, 0o700))
	// Someone planted links where the secret-bearing files go, pointing at a file they can
	// read (or one the agent must not overwrite).
	target := filepath.Join(base, "attacker-readable")
	require.NoError(t, os.WriteFile(target, []byte("untouched"), 0o644))
	require.NoError(t, os.Symlink(target, filepath.Join(dir, "user-data")))
	require.NoError(t, os.Symlink(filepath.Join(base, "dangling"), filepath.Join(dir, "vendor-data")))

	s := newTestSeed(t, SeedConfig{Dir: dir})
	require.NoError(t, s.write(docs()))

	got, err := os.ReadFile(target)
	require.NoError(t, err)
	require.Equal(t, "untouched", string(got), "nothing written through the link")
	require.NoFileExists(t, filepath.Join(base, "dangling"), "no file created through a dangling link")
	for _, name := range []string{"user-data", "vendor-data"} {
		require.Equal(t, fs.FileMode(0o600), mode(t, filepath.Join(dir, name)), "%s is a regular file of its own", name)
	}
}

func TestSeedWriteFailsOnWhatItCannotReplace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A non-empty directory where a file goes cannot be removed with os.Remove: the write
	// must fail rather than write elsewhere.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "user-data", "x"), 0o700))
	s := newTestSeed(t, SeedConfig{Dir: dir})
	err := s.write(docs())
	require.ErrorContains(t, err, "user-data")
}

func TestSeedWriteSkipsEmptyNetworkConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newTestSeed(t, SeedConfig{Dir: dir})
	d := docs()
	d.NetworkConfig = nil
	require.NoError(t, s.write(d))
	require.NoFileExists(t, filepath.Join(dir, "network-config"), "an empty one would override cloud-init's fallback")
	require.FileExists(t, filepath.Join(dir, "meta-data"))
	// The other documents are written even when empty: cloud-init needs them to exist.
	d = docs()
	d.VendorData = []byte{}
	require.NoError(t, s.write(d))
	st, err := os.Stat(filepath.Join(dir, "vendor-data"))
	require.NoError(t, err)
	require.Zero(t, st.Size())
}

func TestDocumentsZero(t *testing.T) {
	t.Parallel()
	d := docs()
	user := d.UserData
	d.zero()
	require.Equal(t, make([]byte, len(user)), user, "the secret bytes themselves are overwritten")
}

func TestSeedCleanupRemovesSecretBearingSeedFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newTestSeed(t, SeedConfig{Dir: dir, Root: t.TempDir()})
	require.NoError(t, s.write(docs()))
	s.cleanup()
	require.NoFileExists(t, filepath.Join(dir, "user-data"))
	require.NoFileExists(t, filepath.Join(dir, "vendor-data"))
	require.FileExists(t, filepath.Join(dir, "meta-data"), "cloud-init needs the instance id on later stages")
	require.FileExists(t, filepath.Join(dir, "network-config"))
	s.cleanup() // twice is fine: nothing left to remove
}

// purgeTree is a fake root with cloud-init 22.4's copies of the data and its neighbours.
var (
	purged = []string{
		"var/lib/cloud/instances/iid-1/user-data.txt",
		"var/lib/cloud/instances/iid-1/user-data.txt.i",
		"var/lib/cloud/instances/iid-1/vendor-data.txt",
		"var/lib/cloud/instances/iid-1/vendor-data.txt.i",
		"var/lib/cloud/instances/iid-1/vendor-data2.txt",
		"var/lib/cloud/instances/iid-1/vendor-data2.txt.i",
		"var/lib/cloud/instances/iid-1/cloud-config.txt",
		"var/lib/cloud/instances/iid-1/vendor-cloud-config.txt",
		"var/lib/cloud/instances/iid-1/obj.pkl",
		"var/lib/cloud/instances/iid-1/scripts/runcmd",
		"var/lib/cloud/instances/iid-2/user-data.txt",
		"run/cloud-init/instance-data-sensitive.json",
		"var/log/cloud-init.log",
		"var/log/cloud-init-output.log",
	}
	kept = []string{
		"var/lib/cloud/instances/iid-1/datasource",
		"var/lib/cloud/instances/iid-1/boot-finished",
		"var/lib/cloud/instances/iid-1/sem/config_phone_home",
		"var/lib/cloud/data/instance-id",
		"run/cloud-init/instance-data.json",
		"var/log/syslog",
		"etc/ssh/ssh_host_ed25519_key.pub",
	}
)

func fakeRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, p := range append(append([]string{}, purged...), kept...) {
		full := filepath.Join(root, p)
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(p), 0o600))
	}
	return root
}

func TestSeedCleanupPurgesCloudInitCopies(t *testing.T) {
	t.Parallel()
	root := fakeRoot(t)
	s := newTestSeed(t, SeedConfig{Dir: filepath.Join(root, "var/lib/cloud/seed/nocloud-net"), Root: root, Purge: true})
	require.NoError(t, s.write(docs()))
	s.cleanup()
	for _, p := range purged {
		require.NoFileExists(t, filepath.Join(root, p), "purged")
	}
	require.NoDirExists(t, filepath.Join(root, "var/lib/cloud/instances/iid-1/scripts"))
	for _, p := range kept {
		require.FileExists(t, filepath.Join(root, p), "kept")
	}
}

func TestSeedCleanupWithoutPurgeKeepsCloudInitCopies(t *testing.T) {
	t.Parallel()
	root := fakeRoot(t)
	s := newTestSeed(t, SeedConfig{Dir: filepath.Join(root, "seed"), Root: root, Purge: false})
	s.cleanup()
	for _, p := range append(append([]string{}, purged...), kept...) {
		require.FileExists(t, filepath.Join(root, p))
	}
}

func TestRunCloudInit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()

	s := newTestSeed(t, SeedConfig{Dir: dir})
	require.NoError(t, s.runCloudInit(ctx), "no command: left to the init system")

	s = newTestSeed(t, SeedConfig{Dir: dir, Command: []string{"sh", "-c", `echo "seed=$1" > "$1/ran"`, "sh", "{seed}"}})
	require.NoError(t, s.runCloudInit(ctx))
	got, err := os.ReadFile(filepath.Join(dir, "ran"))
	require.NoError(t, err)
	require.Equal(t, "seed="+dir+"\n", string(got), "{seed} is replaced by the seed directory")

	s = newTestSeed(t, SeedConfig{Dir: dir, Command: []string{"sh", "-c", "echo stage failed: modules-final >&2; exit 3"}})
	err = s.runCloudInit(ctx)
	require.ErrorContains(t, err, "exit status 3")
	require.ErrorContains(t, err, "stage failed: modules-final", "the output's tail explains the failure")

	s = newTestSeed(t, SeedConfig{Dir: dir, Command: []string{"sh", "-c", "head -c 10000 /dev/zero | tr '\\0' x; echo END; exit 1"}})
	err = s.runCloudInit(ctx)
	require.Error(t, err)
	require.Less(t, len(err.Error()), 4200, "only the tail of a long output")
	require.True(t, strings.HasSuffix(strings.TrimSpace(err.Error()), "END"))

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	s = newTestSeed(t, SeedConfig{Dir: dir, Command: []string{"sleep", "10"}})
	require.Error(t, s.runCloudInit(cctx), "the deadline stops cloud-init")
}
