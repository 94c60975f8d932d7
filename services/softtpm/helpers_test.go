package softtpm_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/softtpm"
	"github.com/attestboot/attestboot/services/tpmconn"
)

// newPool returns a Pool on a fresh cache directory: every TPM a test asks for is made
// (an RSA-2048 key, ~70 ms), so tests ask for few.
func newPool(t testing.TB) *softtpm.Pool {
	t.Helper()
	p, err := softtpm.NewPool(softtpm.Config{CacheDir: t.TempDir()})
	require.NoError(t, err)
	return p
}

func newTPM(t testing.TB, p *softtpm.Pool, index int) *softtpm.TPM {
	t.Helper()
	tpm, err := p.TPM(index)
	require.NoError(t, err)
	return tpm
}

// recorder is a channel that remembers the response code of the last command of each
// command code, so that a test can see what go-attestation or go-tpm turned into an error
// (go-attestation flushes its session after a failure, so "the last response" is not it).
type recorder struct {
	tpmconn.Channel
	mu   sync.Mutex
	code uint32            // of the command written last
	rcs  map[uint32]uint32 // command code -> response code
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	if len(p) >= 10 {
		r.code = binary.BigEndian.Uint32(p[6:10])
	}
	r.mu.Unlock()
	return r.Channel.Write(p)
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.Channel.Read(p)
	r.mu.Lock()
	if n >= 10 {
		if r.rcs == nil {
			r.rcs = make(map[uint32]uint32)
		}
		r.rcs[r.code] = binary.BigEndian.Uint32(p[6:10])
	}
	r.mu.Unlock()
	return n, err
}

// lastRC is the response code of the last command with command code cc.
func (r *recorder) lastRC(cc uint32) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	rc, ok := r.rcs[cc]
	if !ok {
		return 0xFFFFFFFF
	}
	return rc
}

func open(t testing.TB, tpm *softtpm.TPM) *recorder {
	t.Helper()
	ch, err := tpm.Open()
	require.NoError(t, err)
	t.Cleanup(func() { ch.Close() })
	return &recorder{Channel: ch}
}

// run sends one raw command and returns the whole response, checking the response header
// is well formed whatever the command was.
func run(t testing.TB, ch tpmconn.Channel, cmd []byte) []byte {
	t.Helper()
	_, err := ch.Write(cmd)
	require.NoError(t, err)
	buf := make([]byte, 8192)
	n, err := ch.Read(buf)
	require.NoError(t, err)
	resp := buf[:n]
	require.GreaterOrEqual(t, len(resp), 10, "response shorter than a header")
	require.Equal(t, uint32(len(resp)), binary.BigEndian.Uint32(resp[2:6]), "response size field")
	tag := binary.BigEndian.Uint16(resp)
	require.Contains(t, []uint16{0x8001, 0x8002}, tag)
	if rc := binary.BigEndian.Uint32(resp[6:10]); rc != 0 {
		require.Len(t, resp, 10, "an error response is a bare header")
		require.Equal(t, uint16(0x8001), tag, "an error response has no sessions")
	}
	return resp
}

func rcOf(resp []byte) uint32 { return binary.BigEndian.Uint32(resp[6:10]) }

// cmd builds a command from hex fragments (spaces allowed), filling in the size field.
func cmd(t testing.TB, fragments ...string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(strings.Join(fragments, ""), " ", ""))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(b), 6)
	binary.BigEndian.PutUint32(b[2:], uint32(len(b)))
	return b
}

func bytesBuffer(b []byte) *bytes.Buffer { return bytes.NewBuffer(b) }
