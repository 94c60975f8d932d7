package datasource_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/metadata/internal/closertest"
	"github.com/attestboot/attestboot/metadata/internal/datasource"
	"github.com/attestboot/attestboot/metadata/internal/nodedocs"
	"github.com/attestboot/attestboot/metadata/internal/seal"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/pgtest"
	"github.com/attestboot/attestboot/services/tunneltest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// secretValue must never show up in logs, errors or events.
const secretValue = "s3cr3t-munge-value-7f1e"

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is a datasource on loopback: the gateway's pool is 127.77.0.0/24, so tunnel addresses
// are loopback addresses a client can bind to and the source-address lookup is the real one.
type env struct {
	store  *inventory.Store
	keys   *seal.Keyring
	closer *closertest.Fake
	addr   string
	logs   *syncBuffer
	ds     *datasource.Server
}

const gw = "gw-test"

func setup(t testing.TB) *env {
	t.Helper()
	return setupWith(t, nil)
}

// setupWith is setup with the datasource's configuration changed by mod.
func setupWith(t testing.TB, mod func(*datasource.Config)) *env {
	t.Helper()
	return setupStore(t, inventory.Options{}, mod)
}

// setupStore is setupWith on a store made with opts.
func setupStore(t testing.TB, opts inventory.Options, mod func(*datasource.Config)) *env {
	t.Helper()
	pool := pgtest.NewPool(t)
	store := inventory.New(pool, opts)
	ctx := context.Background()
	_, err := store.UpsertGateway(ctx, inventory.Gateway{
		Name: gw, PublicKey: bytes.Repeat([]byte{7}, 32), Endpoint: "127.0.0.1:51820",
		IPv4Pool: netip.MustParsePrefix("127.77.0.0/24"), AddressV4: netip.MustParseAddr("127.77.0.1"),
	})
	require.NoError(t, err)
	keys, err := seal.New("k1", bytes.Repeat([]byte{9}, 32))
	require.NoError(t, err)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l, err := net.Listen("tcp", "127.77.0.1:0")
	require.NoError(t, err)
	cfg := datasource.Config{Gateway: gw, Listen: l.Addr().String(), Prefix: "/cloud-init/", CloseDelay: time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	closer := &closertest.Fake{Called: make(chan closertest.Call, 10)}
	docs := nodedocs.New(store, keys, datasource.PhoneHome(cfg))
	ds, err := datasource.New(cfg, store, docs, closer, logger, nil)
	require.NoError(t, err)
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ds.Serve(sctx, l) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &env{store: store, keys: keys, closer: closer, addr: l.Addr().String(), logs: logs, ds: ds}
}

// node creates an enabled node with an open tunnel and returns the tunnel.
func (e *env) node(t testing.TB, id, hostname string, groups ...string) inventory.Tunnel {
	t.Helper()
	ctx := context.Background()
	_, err := e.store.CreateNode(ctx, inventory.Node{ID: id, Hostname: hostname, Enabled: true})
	require.NoError(t, err)
	for _, g := range groups {
		require.NoError(t, e.store.AddGroupMember(ctx, g, id))
	}
	return tunneltest.Open(t, e.store, id, gw, nil)
}

// client returns an HTTP client whose connections come from src.
func client(src netip.Addr) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 1000}, Timeout: 10 * time.Second}
}

func get(t testing.TB, c *http.Client, u string) (int, string) {
	t.Helper()
	res, err := c.Get(u)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

func (e *env) putSecret(t testing.TB, scope inventory.Scope, name, value string, untilPhoneHome bool) {
	t.Helper()
	ct, nonce, id, err := e.keys.Seal(scope.String(), name, []byte(value))
	require.NoError(t, err)
	_, err = e.store.PutSecret(context.Background(), inventory.Secret{Scope: scope, Name: name, Ciphertext: ct, Nonce: nonce, KeyID: id, UntilPhoneHome: untilPhoneHome})
	require.NoError(t, err)
}

func events(t testing.TB, store *inventory.Store, kind string) []inventory.Event {
	t.Helper()
	evs, err := store.QueryEvents(context.Background(), inventory.EventQuery{Kinds: []string{kind}})
	require.NoError(t, err)
	return evs
}

func TestDocumentsRoutesAndIsolation(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	_, err := e.store.CreateGroup(ctx, inventory.Group{Name: "compute", Priority: 10})
	require.NoError(t, err)
	t1 := e.node(t, "n1", "c1", "compute")
	t2 := e.node(t, "n2", "")
	e.putSecret(t, inventory.NodeScope("n1"), "munge.key", secretValue, false)
	_, err = e.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: inventory.DefaultsScope,
		UserData: "#cloud-config\nruncmd: [echo {{ .Node.ID }}]\n"})
	require.NoError(t, err)
	_, err = e.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: inventory.NodeScope("n1"),
		UserData: "#cloud-config\nwrite_files: [{path: /k, content: {{ secret \"munge.key\" | quote }}}]\n"})
	require.NoError(t, err)

	c1, c2 := client(t1.AddressV4), client(t2.AddressV4)
	base := "http://" + e.addr
	for _, p := range []string{"/meta-data", "/meta-data/", "/cloud-init/meta-data", "/cloud-init/meta-data/"} {
		code, body := get(t, c1, base+p)
		require.Equal(t, 200, code, p)
		require.Contains(t, body, "instance-id: "+t1.ID)
		require.Contains(t, body, "local-hostname: c1")
	}
	code, body := get(t, c1, base+"/user-data")
	require.Equal(t, 200, code)
	require.Contains(t, body, "echo n1")
	require.Contains(t, body, secretValue)
	code, body = get(t, c1, base+"/vendor-data")
	require.Equal(t, 200, code)
	require.Contains(t, body, "url: http://"+e.addr+"/cloud-init/phone-home")
	code, body = get(t, c1, base+"/network-config")
	require.Equal(t, 200, code)
	require.Empty(t, body, "nothing to say is an empty 200")

	// The second node gets its own documents, never the first's.
	code, body = get(t, c2, base+"/user-data")
	require.Equal(t, 200, code)
	require.Contains(t, body, "echo n2")
	require.NotContains(t, body, secretValue)
	code, body = get(t, c2, base+"/meta-data")
	require.Equal(t, 200, code)
	require.Contains(t, body, "instance-id: "+t2.ID)
	require.Contains(t, body, "hostname: n2", "a node without hostname is named by its id")

	// A header never changes who the node is.
	req, err := http.NewRequest(http.MethodGet, base+"/user-data", nil)
	require.NoError(t, err)
	req.Header.Set("X-Forwarded-For", t1.AddressV4.String())
	res, err := c2.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.NotContains(t, string(b), secretValue)

	code, _ = get(t, c1, base+"/nope")
	require.Equal(t, 404, code)
	code, _ = get(t, c1, base+"/cloud-init/user-data/x")
	require.Equal(t, 404, code)
	res, err = c1.Post(base+"/meta-data", "text/plain", nil)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 405, res.StatusCode)

	// A source without an open tunnel is refused, with an event.
	code, _ = get(t, client(netip.MustParseAddr("127.77.0.200")), base+"/meta-data")
	require.Equal(t, 403, code)
	refused := events(t, e.store, datasource.EventRefused)
	require.Len(t, refused, 1)
	require.Equal(t, "no_open_tunnel", refused[0].Reason)
	require.Equal(t, "127.77.0.200", refused[0].Detail["source"])

	// Secret deliveries are events naming the secret.
	delivered := events(t, e.store, datasource.EventSecretsDelivered)
	require.Len(t, delivered, 1)
	require.Equal(t, "n1", delivered[0].NodeID)
	require.Equal(t, []any{"munge.key"}, delivered[0].Detail["secrets"])

	// A closed tunnel's address is refused.
	_, _, err = e.store.CloseTunnel(ctx, t2.ID, inventory.TunnelClosed, "admin")
	require.NoError(t, err)
	code, _ = get(t, c2, base+"/meta-data")
	require.Equal(t, 403, code)

	require.NotContains(t, e.logs.String(), secretValue)
	for _, ev := range append(refused, delivered...) {
		require.NotContains(t, fmt.Sprint(ev), secretValue)
	}
}

// sshKey returns an OpenSSH public key line of a fresh ed25519 key.
func sshKey(t testing.TB) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	var blob []byte
	for _, part := range [][]byte{[]byte("ssh-ed25519"), pub} {
		blob = binary.BigEndian.AppendUint32(blob, uint32(len(part)))
		blob = append(blob, part...)
	}
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob) + " root@c1"
}

func TestPhoneHome(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	tun := e.node(t, "n1", "c1")
	e.putSecret(t, inventory.NodeScope("n1"), "once", secretValue, true)
	_, err := e.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: inventory.NodeScope("n1"),
		UserData: "#cloud-config\nbootcmd: [echo {{ secret \"once\" | quote }}]\n"})
	require.NoError(t, err)
	c := client(tun.AddressV4)
	base := "http://" + e.addr

	// Malformed and oversized phone-homes change nothing.
	for _, body := range []string{"", "pub_key_ed25519=ssh-ed25519+AAAA", "pub_key_rsa=" + url.QueryEscape(sshKey(t)), strings.Repeat("a", 70<<10)} {
		res, err := c.Post(base+"/phone-home", "application/x-www-form-urlencoded", strings.NewReader(body))
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, 400, res.StatusCode)
	}
	n, err := e.store.GetNode(ctx, "n1")
	require.NoError(t, err)
	require.True(t, n.LastBootAt.IsZero())
	require.Empty(t, e.closer.Calls())

	_, body := get(t, c, base+"/user-data")
	require.Contains(t, body, secretValue, "an until-phone-home secret is served before phone-home")

	key := sshKey(t)
	form := url.Values{"pub_key_rsa": {"N/A"}, "pub_key_ecdsa": {"N/A"}, "pub_key_ed25519": {key},
		"instance_id": {tun.ID}, "hostname": {"c1"}, "fqdn": {"c1.site"}}
	res, err := c.PostForm(base+"/cloud-init/phone-home/"+tun.ID, form)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
	select {
	case call := <-e.closer.Called:
		require.Equal(t, closertest.Call{TunnelID: tun.ID, Reason: "phone_home"}, call)
	case <-time.After(5 * time.Second):
		t.Fatal("the tunnel was not closed after phone-home")
	}
	keys, err := e.store.ListHostKeys(ctx, "n1")
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.Equal(t, strings.TrimSuffix(key, " root@c1"), keys[0].PublicKey)
	n, err = e.store.GetNode(ctx, "n1")
	require.NoError(t, err)
	require.False(t, n.LastBootAt.IsZero())
	boot := events(t, e.store, datasource.EventBootCompleted)
	require.Len(t, boot, 1)
	require.Equal(t, true, boot[0].Detail["instance_id_matches"])

	// After phone-home the secret is withheld (the fake closer left the tunnel open).
	_, body = get(t, c, base+"/user-data")
	require.NotContains(t, body, secretValue)
	delivered := events(t, e.store, datasource.EventSecretsDelivered)
	require.Len(t, delivered, 2)
	require.Equal(t, []any{"once"}, delivered[1].Detail["withheld_after_phone_home"])
	require.NotContains(t, e.logs.String(), secretValue)
}

func FuzzParsePhoneHome(f *testing.F) {
	f.Add("pub_key_rsa=N%2FA&pub_key_ed25519=ssh-ed25519+AAAAC3NzaC1lZDI1NTE5AAAAIGQ3&instance_id=x&hostname=h&fqdn=h")
	f.Add("pub_key_ecdsa=ecdsa-sha2-nistp256+AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY%3D")
	f.Add("instance_id=a&instance_id=b")
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		rep, err := datasource.ParsePhoneHome(form)
		if err != nil {
			return
		}
		for _, k := range rep.Keys {
			if !strings.HasPrefix(k.PublicKey, k.Type+" ") {
				t.Fatalf("key %q does not start with its type %q", k.PublicKey, k.Type)
			}
		}
	})
}
