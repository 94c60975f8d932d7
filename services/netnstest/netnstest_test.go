package netnstest_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/attestboot/attestboot/services/netnstest"
	"github.com/attestboot/attestboot/services/testdep"
)

func TestNewName(t *testing.T) {
	t.Parallel()
	testdep.Root(t)
	seen := map[string]bool{}
	for _, label := range []string{"", "gw", "Node-07", "averyverylonglabel", "wg0!"} {
		name, err := netnstest.NewName(label)
		require.NoError(t, err)
		t.Cleanup(func() { netnstest.Release(name) })
		require.True(t, strings.HasPrefix(name, netnstest.Prefix), name)
		require.LessOrEqual(t, len(name), netnstest.MaxNameLen, name)
		require.False(t, seen[name], "names are unique")
		seen[name] = true
		_, err = os.Stat(filepath.Join(netnstest.RegistryDir, name))
		require.NoError(t, err, "the name is registered to this process")
	}
}

// echo serves every connection of l by copying it back until EOF.
func echo(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	got := make([]byte, len(msg))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, msg, string(got))
}

// interfaceNames lists the interfaces of the calling thread's namespace. It does not use t:
// it runs on goroutines other than the test's.
func interfaceNames() []string {
	ifs, err := net.Interfaces()
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names
}

func TestVethTCP(t *testing.T) {
	t.Parallel()
	a := netnstest.New(t, "a")
	b := netnstest.New(t, "b")
	ifA, ifB := netnstest.Link(t, a, b, "10.99.0.1/24", "10.99.0.2/24")

	l, err := a.Listen("tcp", "10.99.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	go echo(l)

	c, err := b.Dial(t.Context(), "tcp", l.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	roundTrip(t, c, "hello across the veth")
	require.Equal(t, "10.99.0.2", c.LocalAddr().(*net.TCPAddr).IP.String())

	// Inside a namespace only its own interfaces exist; the caller's namespace has neither end.
	var inA []string
	require.NoError(t, a.Do(func() error {
		inA = interfaceNames()
		return nil
	}))
	require.ElementsMatch(t, []string{"lo", ifA}, inA)
	outside := interfaceNames()
	require.NotContains(t, outside, ifA)
	require.NotContains(t, outside, ifB)

	// The listener lives in A: connections from B keep arriving after Do has returned.
	c2, err := b.Dial(t.Context(), "tcp", l.Addr().String())
	require.NoError(t, err)
	defer c2.Close()
	roundTrip(t, c2, "second")
}

// TestDoRestoresThreads runs many Do calls concurrently and checks that no goroutine outside
// Do ever sees the namespace: threads go back to the caller's namespace after use.
func TestDoRestoresThreads(t *testing.T) {
	t.Parallel()
	a := netnstest.New(t, "do")
	b := netnstest.New(t, "do")
	ifA, _ := netnstest.Link(t, a, b, "10.98.0.1/30", "10.98.0.2/30")

	var wg sync.WaitGroup
	errs := make(chan string, 400)
	for range 100 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_ = a.Do(func() error {
				if !slices.Contains(interfaceNames(), ifA) {
					errs <- "inside Do: namespace not entered"
				}
				return nil
			})
		}()
		go func() {
			defer wg.Done()
			if slices.Contains(interfaceNames(), ifA) {
				errs <- "outside Do: a thread was left in the namespace"
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}

	require.PanicsWithValue(t, "boom", func() { _ = a.Do(func() error { panic("boom") }) })
	require.ErrorContains(t, a.Do(func() error { runtime.Goexit(); return nil }), "Goexit")
	require.NotContains(t, interfaceNames(), ifA)
}

func TestCommandRunsInside(t *testing.T) {
	t.Parallel()
	a := netnstest.New(t, "cmd")
	out, err := a.Command(t.Context(), "ip", "-o", "link", "show").CombinedOutput()
	require.NoError(t, err, string(out))
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, 1, "a new namespace holds only lo: %s", out)
	require.Contains(t, lines[0], "lo:")
	require.Contains(t, lines[0], "UP", "lo is up")
}

// TestWireGuardTunnel is the tunnel that the gateway and a node build in the real flow:
// wireguard-go in two namespaces, configured through wgctrl from here, TCP over the tunnel
// addresses, then the peer removed through wgctrl cuts the traffic.
func TestWireGuardTunnel(t *testing.T) {
	t.Parallel()
	testdep.Binaries(t, "wireguard-go")
	begin := time.Now()
	gw := netnstest.New(t, "gw")
	node := netnstest.New(t, "node")
	netnstest.Link(t, gw, node, "10.97.0.1/24", "10.97.0.2/24")
	wgGW := gw.StartWireGuardGo(t, "wg")
	wgNode := node.StartWireGuardGo(t, "wg")
	devicesUp := time.Since(begin)

	client, err := wgctrl.New()
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })

	keyGW, err := wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	keyNode, err := wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	port := 51820 // each device binds in its own namespace: the same port does not clash
	prefix := func(s string) net.IPNet {
		p := netip.MustParsePrefix(s)
		return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	require.NoError(t, client.ConfigureDevice(wgGW, wgtypes.Config{
		PrivateKey: &keyGW, ListenPort: &port, ReplacePeers: true,
		Peers: []wgtypes.PeerConfig{{
			PublicKey:         keyNode.PublicKey(),
			AllowedIPs:        []net.IPNet{prefix("10.200.0.2/32")},
			ReplaceAllowedIPs: true,
		}},
	}))
	require.NoError(t, client.ConfigureDevice(wgNode, wgtypes.Config{
		PrivateKey: &keyNode, ListenPort: &port, ReplacePeers: true,
		Peers: []wgtypes.PeerConfig{{
			PublicKey:         keyGW.PublicKey(),
			Endpoint:          &net.UDPAddr{IP: net.ParseIP("10.97.0.1"), Port: port},
			AllowedIPs:        []net.IPNet{prefix("10.200.0.1/32")},
			ReplaceAllowedIPs: true,
		}},
	}))
	ctx := t.Context()
	for _, step := range []struct {
		ns   *netnstest.NS
		args []string
	}{
		{gw, []string{"addr", "add", "10.200.0.1/24", "dev", wgGW}},
		{gw, []string{"link", "set", wgGW, "up"}},
		{node, []string{"addr", "add", "10.200.0.2/24", "dev", wgNode}},
		{node, []string{"link", "set", wgNode, "up"}},
	} {
		require.NoError(t, step.ns.IP(ctx, step.args...))
	}

	l, err := gw.Listen("tcp", "10.200.0.1:7000")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	go echo(l)

	dialStart := time.Now()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := node.Dial(dctx, "tcp", "10.200.0.1:7000")
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	roundTrip(t, c, "hello through the tunnel")
	firstExchange := time.Since(dialStart)
	require.Equal(t, "10.200.0.2", c.LocalAddr().(*net.TCPAddr).IP.String(), "the node's side of the connection is its tunnel address")

	dev, err := client.Device(wgGW)
	require.NoError(t, err)
	require.Len(t, dev.Peers, 1)
	require.False(t, dev.Peers[0].LastHandshakeTime.IsZero(), "the peers completed a handshake")
	require.Positive(t, dev.Peers[0].ReceiveBytes)
	require.Equal(t, "10.97.0.2", dev.Peers[0].Endpoint.IP.String(), "the gateway learnt the node's endpoint")

	// Removing the peer on the gateway cuts the tunnel: the open connection goes silent and
	// a new one cannot be made.
	require.NoError(t, client.ConfigureDevice(wgGW, wgtypes.Config{
		Peers: []wgtypes.PeerConfig{{PublicKey: keyNode.PublicKey(), Remove: true}},
	}))
	dev, err = client.Device(wgGW)
	require.NoError(t, err)
	require.Empty(t, dev.Peers)

	require.NoError(t, c.SetDeadline(time.Now().Add(time.Second)))
	_, err = c.Write([]byte("anyone?"))
	require.NoError(t, err, "the write only fills the local buffer")
	_, err = c.Read(make([]byte, 7))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "an echo came back without a peer")

	dctx, cancel = context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = node.Dial(dctx, "tcp", "10.200.0.1:7000")
	require.Error(t, err, "a new connection got through without a peer")

	t.Logf("two namespaces + veth + two wireguard-go devices: %v; configure, handshake and first TCP exchange: %v; whole test: %v",
		devicesUp, firstExchange, time.Since(begin))
}
