package wglocal

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStackTunClosesUnderTraffic: the stack keeps sending (a dial's SYN and its retransmits)
// while nobody reads and the device closes; the sends give up instead of panicking, and Read
// says closed.
func TestStackTunClosesUnderTraffic(t *testing.T) {
	t.Parallel()
	for range 20 {
		st, err := newStackTun([]netip.Addr{netip.MustParseAddr("100.64.0.9")}, 1420)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		dialed := make(chan error, 1)
		go func() {
			_, err := st.DialContext(ctx, "tcp", "100.64.0.1:80")
			dialed <- err
		}()
		time.Sleep(time.Millisecond) // the SYN is waiting for a reader
		require.NoError(t, st.Close())
		require.NoError(t, st.Close(), "twice is once")
		_, err = st.Read([][]byte{make([]byte, 1500)}, []int{0}, 0)
		require.ErrorIs(t, err, os.ErrClosed)
		require.Error(t, <-dialed)
		cancel()
	}
}

func TestStackTunDialsOnlyAddresses(t *testing.T) {
	t.Parallel()
	st, err := newStackTun([]netip.Addr{netip.MustParseAddr("100.64.0.9")}, 1420)
	require.NoError(t, err)
	defer st.Close()
	_, err = st.DialContext(context.Background(), "tcp", "metadata.example:80")
	require.ErrorContains(t, err, "not an IP address and port")
	_, err = st.DialContext(context.Background(), "udp", "100.64.0.1:53")
	require.Error(t, err)
}
