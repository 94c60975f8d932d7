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
		time.Sleep(time.Millisecond) // the SYN is queued for a reader
		require.NoError(t, st.Close())
		require.NoError(t, st.Close(), "twice is once")
		_, err = st.Read([][]byte{make([]byte, 1500)}, []int{0}, 0)
		require.ErrorIs(t, err, os.ErrClosed)
		require.Error(t, <-dialed)
		cancel()
	}
}

// TestStackTunNeverWaitsForTheDevice: nobody reads, yet the stack's sends do not wait: the
// SYNs of three dials are queued, and each dial gives up at its deadline instead of hanging in
// a send (upstream's netstack hands packets over an unbuffered channel while holding the
// connection's lock, which made the stack's processors spin).
func TestStackTunNeverWaitsForTheDevice(t *testing.T) {
	t.Parallel()
	st, err := newStackTun([]netip.Addr{netip.MustParseAddr("100.64.0.9")}, 1420)
	require.NoError(t, err)
	defer st.Close()
	dialed := make(chan error, 3)
	for range 3 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			_, err := st.DialContext(ctx, "tcp", "100.64.0.1:80")
			dialed <- err
		}()
	}
	for range 3 {
		select {
		case err := <-dialed:
			require.Error(t, err, "nobody answers")
		case <-time.After(30 * time.Second):
			t.Fatal("a dial hangs: the stack waits for the device to read")
		}
	}
	require.Equal(t, 3, st.ep.NumQueued(), "each dial's SYN waits in the queue")
	for range 3 {
		buf, sizes := make([]byte, 1500), []int{0}
		n, err := st.Read([][]byte{buf}, sizes, 0)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.Equal(t, byte(4), buf[0]>>4, "an IPv4 packet")
		require.Equal(t, byte(6), buf[9], "carrying TCP")
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
