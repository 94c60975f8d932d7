package reuseport_test

import (
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/reuseport"
)

// TestTwoListenersShareAnAddress: with Control, a second listener binds the first one's
// address and both receive connections; without it, the second bind fails.
func TestTwoListenersShareAnAddress(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lc := net.ListenConfig{Control: reuseport.Control}
	a, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer a.Close()
	b, err := lc.Listen(ctx, "tcp", a.Addr().String())
	require.NoError(t, err, "second listener on the same address")
	defer b.Close()

	_, err = (&net.ListenConfig{}).Listen(ctx, "tcp", a.Addr().String())
	require.Error(t, err, "a listener without SO_REUSEPORT must not join")

	// Each listener answers with its name; connections from different source ports are
	// spread by the kernel's hash, so enough of them reach both.
	serve := func(l net.Listener, name string) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(name))
			c.Close()
		}
	}
	go serve(a, "a")
	go serve(b, "b")
	seen := map[string]bool{}
	for i := 0; i < 200 && len(seen) < 2; i++ {
		c, err := net.Dial("tcp", a.Addr().String())
		require.NoError(t, err)
		got, err := io.ReadAll(c)
		c.Close()
		require.NoError(t, err)
		seen[string(got)] = true
	}
	require.Equal(t, map[string]bool{"a": true, "b": true}, seen)
}
