package seal_test

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/metadata/internal/seal"
)

func TestSealOpenBinding(t *testing.T) {
	t.Parallel()
	k, err := seal.New("k1", bytes.Repeat([]byte{1}, 32))
	require.NoError(t, err)
	ct, nonce, id, err := k.Seal("node:n1", "munge.key", []byte("the value"))
	require.NoError(t, err)
	require.Equal(t, "k1", id)
	require.NotContains(t, string(ct), "the value")

	v, err := k.Open(id, "node:n1", "munge.key", ct, nonce)
	require.NoError(t, err)
	require.Equal(t, "the value", string(v))

	// The row moved to another node or name does not open.
	for _, c := range [][2]string{{"node:n2", "munge.key"}, {"node:n1", "other"}, {"defaults", "munge.key"}} {
		_, err := k.Open(id, c[0], c[1], ct, nonce)
		require.ErrorIs(t, err, seal.ErrOpen)
	}
	_, err = k.Open("k0", "node:n1", "munge.key", ct, nonce)
	require.ErrorIs(t, err, seal.ErrOpen)

	// Rotation: a new current key still opens what the old one sealed.
	k2, err := seal.New("k2", bytes.Repeat([]byte{2}, 32))
	require.NoError(t, err)
	require.NoError(t, k2.Add("k1", bytes.Repeat([]byte{1}, 32)))
	v, err = k2.Open("k1", "node:n1", "munge.key", ct, nonce)
	require.NoError(t, err)
	require.Equal(t, "the value", string(v))

	_, err = seal.New("bad id", bytes.Repeat([]byte{1}, 32))
	require.Error(t, err)
	_, err = seal.New("k", []byte("short"))
	require.Error(t, err)
}

func TestLoadKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	raw := bytes.Repeat([]byte{0xab}, 32)
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, mode))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	k, err := seal.LoadKey(write("raw", raw, 0o600))
	require.NoError(t, err)
	require.Equal(t, raw, k)
	k, err = seal.LoadKey(write("hex", []byte(hex.EncodeToString(raw)+"\n"), 0o400))
	require.NoError(t, err)
	require.Equal(t, raw, k)
	_, err = seal.LoadKey(write("open", raw, 0o644))
	require.ErrorContains(t, err, "chmod 600")
	_, err = seal.LoadKey(write("short", []byte("abc"), 0o600))
	require.Error(t, err)
}
