package agent

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeMetadata is the metadata service as a node sees it through its tunnel: the four
// documents, phone-home, and 403 for everything once the tunnel is closed.
type fakeMetadata struct {
	mu       sync.Mutex
	docs     map[string][]byte
	fail     map[string][]int // status codes to answer, in turn, before the document
	requests map[string]int
	posts    []url.Values
	closed   bool
	// closeOnPhoneHome closes the tunnel when the phone-home arrives, as the service does.
	closeOnPhoneHome bool
	// loseAnswer records a phone-home and closes the tunnel, but the answer never arrives.
	loseAnswer bool
}

func newFakeMetadata() *fakeMetadata {
	return &fakeMetadata{
		docs: map[string][]byte{
			"meta-data": []byte("instance-id: t1\n"), "user-data": []byte("#cloud-config\n"),
			"vendor-data": []byte(""), "network-config": []byte("version: 2\n"),
		},
		fail: map[string][]int{}, requests: map[string]int{}, closeOnPhoneHome: true,
	}
}

func (f *fakeMetadata) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := strings.TrimPrefix(r.URL.Path, "/")
	f.requests[r.Method+" "+name]++
	if f.closed {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	if codes := f.fail[name]; len(codes) > 0 {
		f.fail[name] = codes[1:]
		w.WriteHeader(codes[0])
		return
	}
	if r.Method == http.MethodPost && name == "phone-home" {
		if err := r.ParseForm(); err != nil || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.posts = append(f.posts, r.PostForm)
		f.closed = f.closeOnPhoneHome
		if f.loseAnswer {
			panic(http.ErrAbortHandler) // the connection is cut without an answer
		}
		return
	}
	doc, ok := f.docs[name]
	if !ok || r.Method != http.MethodGet {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	_, _ = w.Write(doc)
}

func (f *fakeMetadata) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[key]
}

func (f *fakeMetadata) postedForms() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]url.Values(nil), f.posts...)
}

func (f *fakeMetadata) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
}

func serve(t *testing.T, h http.Handler) *metadataClient {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	// Without the trailing slash: the client adds it.
	return newMetadataClient(srv.Client(), srv.URL)
}

var fastBackoff = Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}

func TestNewMetadataClientBase(t *testing.T) {
	t.Parallel()
	require.Equal(t, "http://100.64.0.1/", newMetadataClient(nil, "http://100.64.0.1").base)
	require.Equal(t, "http://100.64.0.1/", newMetadataClient(nil, "http://100.64.0.1/").base)
}

func TestFetchAllRetriesBusyService(t *testing.T) {
	t.Parallel()
	f := newFakeMetadata()
	f.fail["meta-data"] = []int{503, 503}
	f.fail["user-data"] = []int{500}
	f.fail["network-config"] = []int{403} // the peer may not be in place yet
	m := serve(t, f)
	d, err := m.fetchAll(context.Background(), fastBackoff)
	require.NoError(t, err)
	require.Equal(t, f.docs["meta-data"], d.MetaData)
	require.Equal(t, f.docs["user-data"], d.UserData)
	require.Empty(t, d.VendorData)
	require.Equal(t, f.docs["network-config"], d.NetworkConfig)
	require.Equal(t, 3, f.count("GET meta-data"))
	require.Equal(t, 2, f.count("GET user-data"))
	require.Equal(t, 1, f.count("GET vendor-data"))
	require.Equal(t, 2, f.count("GET network-config"))
}

func TestFetchAllNotFoundIsPermanent(t *testing.T) {
	t.Parallel()
	f := newFakeMetadata()
	delete(f.docs, "vendor-data")
	m := serve(t, f)
	d, err := m.fetchAll(context.Background(), fastBackoff)
	var s errStatus
	require.ErrorAs(t, err, &s)
	require.Equal(t, errStatus{"vendor-data", 404}, s)
	require.Equal(t, 1, f.count("GET vendor-data"), "a 404 is an answer, not retried")
	require.Zero(t, f.count("GET network-config"), "the fetch stops at the first permanent failure")
	require.Equal(t, Documents{}, d, "nothing of a partial fetch is handed back")
}

func TestFetchAllGivesUpAtDeadline(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	m := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.WriteHeader(503)
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := m.fetchAll(ctx, fastBackoff)
	require.Error(t, err)
	// The last error is the service's 503, or the request the deadline cut short.
	var s errStatus
	require.True(t, errors.As(err, &s) || errors.Is(err, context.DeadlineExceeded), "%v", err)
	require.Greater(t, requests.Load(), int32(2), "retried until the deadline")
	require.Less(t, time.Since(start), 2*time.Second)
}

func TestFetchRefusesOversizedDocument(t *testing.T) {
	t.Parallel()
	f := newFakeMetadata()
	f.docs["user-data"] = bytes.Repeat([]byte("x"), maxDocument+1)
	m := serve(t, f)
	_, err := m.get(context.Background(), "user-data")
	require.ErrorIs(t, err, errTooLarge)
	// The size error is an answer: fetchAll fails at once instead of retrying to the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	d, err := m.fetchAll(ctx, fastBackoff)
	require.ErrorIs(t, err, errTooLarge)
	require.Less(t, time.Since(start), time.Second, "no retries")
	require.Equal(t, Documents{}, d)

	f.mu.Lock()
	f.docs["user-data"] = bytes.Repeat([]byte("x"), maxDocument)
	f.mu.Unlock()
	d, err = m.fetchAll(context.Background(), fastBackoff)
	require.NoError(t, err)
	require.Len(t, d.UserData, maxDocument, "exactly the limit is fine")
}

func TestRetryableFetch(t *testing.T) {
	t.Parallel()
	for code, want := range map[int]bool{500: true, 502: true, 503: true, 403: true, 404: false, 400: false, 401: false, 410: false} {
		require.Equal(t, want, retryableFetch(errStatus{"meta-data", code}), "HTTP %d", code)
	}
	require.True(t, retryableFetch(errors.New("dial tcp: i/o timeout")), "transport errors: the handshake may be under way")
}

func TestPhoneHomeForm(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc/ssh"), 0o755))
	ed := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE root@cn001"
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/ssh/ssh_host_ed25519_key.pub"), []byte(ed+"\n"), 0o644))
	rsa := "ssh-rsa AAAAB3NzaC1yc2E root@cn001"
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/ssh/ssh_host_rsa_key.pub"), []byte(rsa), 0o644))

	f := newFakeMetadata()
	m := serve(t, f)
	require.NoError(t, m.phoneHome(context.Background(), root, "tunnel-42"))
	posts := f.postedForms()
	require.Len(t, posts, 1)
	form := posts[0]
	host, _ := os.Hostname()
	// The fields of cloud-init's phone_home module, missing keys as N/A.
	require.Equal(t, url.Values{
		"instance_id": {"tunnel-42"}, "hostname": {host}, "fqdn": {host},
		"pub_key_rsa": {rsa}, "pub_key_ecdsa": {"N/A"}, "pub_key_ed25519": {ed},
	}, form)

	f.close()
	err := m.phoneHome(context.Background(), root, "tunnel-42")
	require.Equal(t, errStatus{"phone-home", 403}, err)
}

func TestAwaitPhoneHomeAgentPosts(t *testing.T) {
	t.Parallel()
	f := newFakeMetadata()
	f.fail["phone-home"] = []int{503} // retried like a fetch
	m := serve(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, m.awaitPhoneHome(ctx, SeedConfig{PhoneHome: PhoneHomeAgent, Root: t.TempDir()}, "t1"))
	posts := f.postedForms()
	require.Len(t, posts, 1)
	require.Equal(t, "t1", posts[0].Get("instance_id"))
	require.Equal(t, 2, f.count("POST phone-home"))
	require.Equal(t, 1, f.count("GET meta-data"), "one probe before the retry; after a 200, none: the service closes the tunnel itself")
}

// TestAwaitPhoneHomeAnswerLost: the service recorded the phone-home and closed the tunnel, but
// its answer was lost; the agent finds the tunnel closed instead of posting until its deadline.
func TestAwaitPhoneHomeAnswerLost(t *testing.T) {
	t.Parallel()
	f := newFakeMetadata()
	f.loseAnswer = true
	m := serve(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, m.awaitPhoneHome(ctx, SeedConfig{PhoneHome: PhoneHomeAgent, Root: t.TempDir()}, "t1"))
	require.Len(t, f.postedForms(), 1)
	require.Equal(t, 1, f.count("POST phone-home"), "posted once; then the probe found the tunnel closed")
	require.Equal(t, 1, f.count("GET meta-data"), "one probe")
}

// TestAwaitPhoneHomeRetriesWhileOpen: a failed attempt with the tunnel still open is retried
// (the probe answers, so the phone-home did not happen).
func TestAwaitPhoneHomeRetriesWhileOpen(t *testing.T) {
	t.Parallel()
	f := newFakeMetadata()
	f.fail["phone-home"] = []int{503, 502}
	m := serve(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, m.awaitPhoneHome(ctx, SeedConfig{PhoneHome: PhoneHomeAgent, Root: t.TempDir()}, "t1"))
	require.Len(t, f.postedForms(), 1)
	require.Equal(t, 3, f.count("POST phone-home"))
	require.Equal(t, 2, f.count("GET meta-data"), "a probe before each retry")
}

func TestAwaitPhoneHomeCloudInitOnlyWaits(t *testing.T) {
	t.Parallel()
	f := newFakeMetadata()
	m := serve(t, f)
	// cloud-init's phone_home reaches the service a little later.
	time.AfterFunc(300*time.Millisecond, f.close)
	start := time.Now()
	require.NoError(t, m.awaitPhoneHome(context.Background(), SeedConfig{PhoneHome: PhoneHomeCloudInit}, "t1"))
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	require.Empty(t, f.postedForms(), "the agent never phones home itself in cloud-init mode")
}

func TestAwaitPhoneHomeAutoLeavesItToCloudInit(t *testing.T) {
	t.Parallel()
	f := newFakeMetadata()
	f.closed = true // cloud-init's module phoned home during the final stage
	m := serve(t, f)
	require.NoError(t, m.awaitPhoneHome(context.Background(), SeedConfig{PhoneHome: PhoneHomeAuto}, "t1"))
	require.Empty(t, f.postedForms())
	require.Zero(t, f.count("POST phone-home"))
}

func TestAwaitPhoneHomeFailsWhileTunnelStaysOpen(t *testing.T) {
	t.Parallel()
	f := newFakeMetadata()
	f.closeOnPhoneHome = false
	m := serve(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	// cloud-init was to phone home, but nothing closes the tunnel.
	err := m.awaitPhoneHome(ctx, SeedConfig{PhoneHome: PhoneHomeCloudInit, Root: t.TempDir()}, "t1")
	require.ErrorContains(t, err, "tunnel still open")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Empty(t, f.postedForms())
}

func TestClosedProbe(t *testing.T) {
	t.Parallel()
	f := newFakeMetadata()
	m := serve(t, f)
	ctx := context.Background()
	require.False(t, m.closed(ctx, time.Second), "documents still served: open")
	f.close()
	require.True(t, m.closed(ctx, time.Second), "403: the peer is gone from the service's view")

	// No answer at all: the gateway removed the peer.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	gone := newMetadataClient(&http.Client{}, "http://"+addr)
	require.True(t, gone.closed(ctx, time.Second))

	// A caller that gave up is not an answer.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.False(t, gone.closed(cctx, time.Second))

	// A service that hangs counts as gone after the probe's wait, and not before.
	var hung atomic.Bool
	release := make(chan struct{})
	slow := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hung.Store(true)
		select {
		case <-r.Context().Done():
		case <-release:
			w.WriteHeader(http.StatusOK) // a busy service answering after 300 ms
		}
	}))
	start := time.Now()
	require.True(t, slow.closed(ctx, 200*time.Millisecond))
	require.True(t, hung.Load())
	require.Less(t, time.Since(start), 2*time.Second)
	time.AfterFunc(300*time.Millisecond, func() { close(release) })
	require.False(t, slow.closed(ctx, 2*time.Second), "a longer wait hears the busy service answer: open")
}
