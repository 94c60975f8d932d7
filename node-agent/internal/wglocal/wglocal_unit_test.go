package wglocal

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
)

func TestParseMode(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"tun", "kernel", "netstack"} {
		m, err := ParseMode(s)
		require.NoError(t, err)
		require.Equal(t, Mode(s), m)
	}
	for _, s := range []string{"", "TUN", "userspace", "wireguard-go"} {
		_, err := ParseMode(s)
		require.Error(t, err, "%q", s)
	}
}

func key(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	return k
}

func answer(gw wgtypes.Key) *tunnelmgrv1.OpenTunnelResponse {
	pub := gw.PublicKey()
	return &tunnelmgrv1.OpenTunnelResponse{
		TunnelId: "t1", GatewayPublicKey: pub[:], Endpoint: "10.99.0.1:51820",
		NodeAddresses: []string{"100.64.0.7/32"}, GatewayAddresses: []string{"100.64.0.1"},
		AllowedIps: []string{"100.64.0.1/32", "100.64.0.0/10"}, MetadataUrl: "http://100.64.0.1/",
		PersistentKeepaliveSeconds: 25,
	}
}

func TestParseAnswer(t *testing.T) {
	t.Parallel()
	gw := key(t)
	p, err := parse(answer(gw))
	require.NoError(t, err)
	require.Equal(t, gw.PublicKey(), p.gateway)
	require.Equal(t, "10.99.0.1:51820", p.endpoint.String())
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("100.64.0.7/32")}, p.addresses)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32"), netip.MustParsePrefix("100.64.0.0/10")}, p.allowed)
	require.Equal(t, 25*time.Second, p.keepalive)

	// Allowed IPs are masked: a host address with a short prefix becomes its network.
	a := answer(gw)
	a.AllowedIps = []string{"100.64.3.4/16"}
	p, err = parse(a)
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}, p.allowed)

	for name, mutate := range map[string]func(*tunnelmgrv1.OpenTunnelResponse){
		"short gateway key": func(a *tunnelmgrv1.OpenTunnelResponse) { a.GatewayPublicKey = []byte{1, 2, 3} },
		"no endpoint port":  func(a *tunnelmgrv1.OpenTunnelResponse) { a.Endpoint = "10.99.0.1" },
		"bad node address":  func(a *tunnelmgrv1.OpenTunnelResponse) { a.NodeAddresses = []string{"100.64.0.7"} },
		"bad allowed IP":    func(a *tunnelmgrv1.OpenTunnelResponse) { a.AllowedIps = []string{"everything"} },
		"no node address":   func(a *tunnelmgrv1.OpenTunnelResponse) { a.NodeAddresses = nil },
		"no allowed IPs":    func(a *tunnelmgrv1.OpenTunnelResponse) { a.AllowedIps = nil },
	} {
		a := answer(gw)
		mutate(a)
		_, err := parse(a)
		require.Error(t, err, name)
	}
}

func TestUpRefusesBadParams(t *testing.T) {
	t.Parallel()
	gw := key(t)
	_, err := Up(context.Background(), Params{Mode: "carrier-pigeon", Key: key(t), Answer: answer(gw), Logger: slog.New(slog.DiscardHandler)})
	require.ErrorContains(t, err, "carrier-pigeon")
	_, err = Up(context.Background(), Params{Mode: TUN, Key: key(t), Answer: answer(gw), Logger: slog.New(slog.DiscardHandler)})
	require.ErrorContains(t, err, "no interface name")
	bad := answer(gw)
	bad.NodeAddresses = nil
	_, err = Up(context.Background(), Params{Mode: Netstack, Key: key(t), Answer: bad, Logger: slog.New(slog.DiscardHandler)})
	require.ErrorContains(t, err, "without addresses")
}

// gateway is a WireGuard peer with its own netstack and an HTTP server on its tunnel address,
// standing in for tunnelmgr's device and the metadata service; it listens on loopback UDP, so
// the test needs neither root nor a namespace.
type gateway struct {
	key  wgtypes.Key
	port int
	dev  *device.Device
}

func startGateway(t *testing.T, node wgtypes.Key, nodeAddr string) *gateway {
	t.Helper()
	tunDev, tnet, err := netstack.CreateNetTUN([]netip.Addr{netip.MustParseAddr("100.64.0.1")}, nil, 1420)
	require.NoError(t, err)
	dev := device.NewDevice(tunDev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	g := &gateway{key: key(t), dev: dev}
	t.Cleanup(dev.Close)
	pub := node.PublicKey()
	require.NoError(t, dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\npublic_key=%s\nallowed_ip=%s\n",
		hex.EncodeToString(g.key[:]), hex.EncodeToString(pub[:]), nodeAddr)))
	require.NoError(t, dev.Up())
	// The kernel chose the port: read it back as wgctrl would.
	cfg, err := dev.IpcGet()
	require.NoError(t, err)
	i := strings.Index(cfg, "listen_port=")
	require.GreaterOrEqual(t, i, 0, cfg)
	_, err = fmt.Sscanf(cfg[i:], "listen_port=%d", &g.port)
	require.NoError(t, err)
	require.NotZero(t, g.port)

	l, err := tnet.ListenTCP(&net.TCPAddr{IP: net.IPv4(100, 64, 0, 1), Port: 80})
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s", r.URL.Path, r.RemoteAddr)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return g
}

// TestNetstackTunnel brings up the netstack end from an OpenTunnel answer and fetches over it
// from a real WireGuard peer: the handshake, the node's address and the routes all come from
// the answer.
func TestNetstackTunnel(t *testing.T) {
	t.Parallel()
	nodeKey := key(t)
	gw := startGateway(t, nodeKey, "100.64.0.7/32")
	gwPub := gw.key.PublicKey()
	ans := &tunnelmgrv1.OpenTunnelResponse{
		GatewayPublicKey: gwPub[:], Endpoint: fmt.Sprintf("127.0.0.1:%d", gw.port),
		NodeAddresses: []string{"100.64.0.7/32"}, AllowedIps: []string{"100.64.0.1/32"},
		MetadataUrl: "http://100.64.0.1/",
	}
	tun, err := Up(context.Background(), Params{Mode: Netstack, Key: nodeKey, Answer: ans, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://100.64.0.1/meta-data", nil)
	require.NoError(t, err)
	resp, err := tun.HTTPClient().Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Regexp(t, `^/meta-data from 100\.64\.0\.7:\d+$`, string(body), "the gateway sees the node's tunnel address")

	require.NoError(t, tun.Close())
	// Once closed, nothing goes through any more.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	req, err = http.NewRequestWithContext(ctx2, http.MethodGet, "http://100.64.0.1/meta-data", nil)
	require.NoError(t, err)
	_, err = tun.HTTPClient().Do(req)
	require.Error(t, err)
}

// A node whose key the gateway does not know gets no handshake, so no answer.
func TestNetstackTunnelWrongKey(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, key(t), "100.64.0.7/32")
	gwPub := gw.key.PublicKey()
	ans := &tunnelmgrv1.OpenTunnelResponse{
		GatewayPublicKey: gwPub[:], Endpoint: fmt.Sprintf("127.0.0.1:%d", gw.port),
		NodeAddresses: []string{"100.64.0.7/32"}, AllowedIps: []string{"100.64.0.1/32"},
	}
	tun, err := Up(context.Background(), Params{Mode: Netstack, Key: key(t), Answer: ans, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer tun.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://100.64.0.1/meta-data", nil)
	require.NoError(t, err)
	_, err = tun.HTTPClient().Do(req)
	require.Error(t, err)
}
