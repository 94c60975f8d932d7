package wglocal

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.zx2c4.com/wireguard/conn"
)

// TestUDPBindRoundTrip: two binds exchange a datagram through the ports Open chose, one at a
// time, and a closed bind refuses to send and can open again.
func TestUDPBindRoundTrip(t *testing.T) {
	t.Parallel()
	var a, b udpBind
	_, portA, err := a.Open(0)
	require.NoError(t, err)
	defer a.Close()
	recvB, portB, err := b.Open(0)
	require.NoError(t, err)
	defer b.Close()
	require.Len(t, recvB, 1)
	require.Equal(t, 1, b.BatchSize())
	_, _, err = b.Open(0)
	require.ErrorIs(t, err, conn.ErrBindAlreadyOpen)

	toB, err := a.ParseEndpoint("127.0.0.1:" + strconv.Itoa(int(portB)))
	require.NoError(t, err)
	require.NoError(t, a.Send([][]byte{[]byte("hello")}, toB))
	bufs, sizes, eps := [][]byte{make([]byte, 1500)}, []int{0}, []conn.Endpoint{nil}
	n, err := recvB[0](bufs, sizes, eps)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, "hello", string(bufs[0][:sizes[0]]))
	require.Equal(t, "127.0.0.1:"+strconv.Itoa(int(portA)), eps[0].DstToString(), "the sender, as an IPv4 address")

	require.NoError(t, a.Close())
	require.Error(t, a.Send([][]byte{[]byte("x")}, toB))
	_, _, err = a.Open(0)
	require.NoError(t, err, "a closed bind opens again")
	_, err = a.ParseEndpoint("not an endpoint")
	require.Error(t, err)
}
