package wgdevice

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The embedded device itself is exercised by tunnelmgr's process tests, inside namespaces.

func TestKeyIsCreatedOnceAndKept(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state", "wg-gw1.key")
	var (
		wg   sync.WaitGroup
		keys = make([]wgtypes.Key, 8)
	)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys {
		require.Equal(t, keys[0], k, "concurrent first starts agree on one key")
	}
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	again, err := LoadOrCreateKey(path)
	require.NoError(t, err)
	require.Equal(t, keys[0], again, "a restart keeps the key")

	require.NoError(t, os.Chmod(path, 0o644))
	_, err = LoadOrCreateKey(path)
	require.ErrorContains(t, err, "mode", "a readable key is refused")
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	k, err := wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	for name, cfg := range map[string]Config{
		"no name":   {PrivateKey: k},
		"long name": {Name: "a-very-long-interface-name", PrivateKey: k},
		"bad port":  {Name: "wg0", ListenPort: 70000, PrivateKey: k},
		"no key":    {Name: "wg0"},
	} {
		require.Error(t, cfg.validate(), name)
	}
	ok := Config{Name: "wg0", PrivateKey: k}
	require.NoError(t, ok.validate())
	require.Equal(t, 1420, ok.MTU)
}
