package datasource_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/metadata/internal/datasource"
	"github.com/attestboot/attestboot/services/clock"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/tunneltest"
)

// TestCacheFollowsTunnels shows that the datasource's cache never outlives a tunnel: with a
// cache lifetime of an hour, a tunnel closed behind the service's back (by tunnelmgr) is
// refused at its next request, an address handed to another node's new tunnel gets that
// node's documents, and a phone-home recorded by another replica withholds until-phone-home
// secrets at once. Data changed by another process shows after the lifetime, or at once
// after InvalidateAll (what this process's admin API calls).
func TestCacheFollowsTunnels(t *testing.T) {
	t.Parallel()
	e := setupWith(t, func(c *datasource.Config) { c.CacheTTL = time.Hour })
	ctx := context.Background()
	_, err := e.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: inventory.DefaultsScope,
		UserData: "#cloud-config\nruncmd: [echo {{ .Node.ID }}]\nwrite_files: [{path: /k, content: {{ secret \"k\" | quote }}}]\n"})
	require.NoError(t, err)
	for _, n := range []string{"n1", "n2", "n3"} {
		_, err := e.store.CreateNode(ctx, inventory.Node{ID: n, Enabled: true})
		require.NoError(t, err)
		e.putSecret(t, inventory.NodeScope(n), "k", secretValue+"-"+n, n == "n1")
	}
	t1 := tunneltest.Open(t, e.store, "n1", gw, nil)
	t2 := tunneltest.Open(t, e.store, "n2", gw, nil)
	c1, c2 := client(t1.AddressV4), client(t2.AddressV4)
	base := "http://" + e.addr

	for range 3 {
		code, body := get(t, c2, base+"/user-data")
		require.Equal(t, 200, code)
		require.Contains(t, body, secretValue+"-n2")
	}
	// tunnelmgr closes n2's tunnel: refused at once.
	_, _, err = e.store.CloseTunnel(ctx, t2.ID, inventory.TunnelClosed, "admin")
	require.NoError(t, err)
	code, _ := get(t, c2, base+"/user-data")
	require.Equal(t, 403, code)
	// n3's tunnel gets the freed address: n3's documents, never n2's.
	t3 := tunneltest.Open(t, e.store, "n3", gw, nil)
	require.Equal(t, t2.AddressV4, t3.AddressV4, "the lowest free address is reused")
	code, body := get(t, c2, base+"/user-data")
	require.Equal(t, 200, code)
	require.Contains(t, body, "echo n3")
	require.Contains(t, body, secretValue+"-n3")
	require.NotContains(t, body, secretValue+"-n2")

	// n1's secret is served until phone-home; another replica records the phone-home.
	code, body = get(t, c1, base+"/user-data")
	require.Equal(t, 200, code)
	require.Contains(t, body, secretValue+"-n1")
	_, err = e.store.MarkPhonedHome(ctx, t1.ID)
	require.NoError(t, err)
	code, body = get(t, c1, base+"/user-data")
	require.Equal(t, 200, code)
	require.NotContains(t, body, secretValue+"-n1")
	require.Contains(t, body, "echo n1")

	// Data written by another process: cached for the lifetime, fresh after InvalidateAll.
	_, err = e.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: inventory.NodeScope("n3"),
		UserData: "#cloud-config\nruncmd: [echo changed]\n"})
	require.NoError(t, err)
	_, body = get(t, c2, base+"/user-data")
	require.NotContains(t, body, "echo changed")
	e.ds.InvalidateAll()
	_, body = get(t, c2, base+"/user-data")
	require.Contains(t, body, "echo changed")
	require.NotContains(t, e.logs.String(), secretValue)
}

// TestCacheLifetime: without any invalidation, data changed by another process is served
// once the cache lifetime has passed.
func TestCacheLifetime(t *testing.T) {
	t.Parallel()
	e := setupWith(t, func(c *datasource.Config) { c.CacheTTL = 100 * time.Millisecond })
	ctx := context.Background()
	t1 := e.node(t, "n1", "h1")
	c := client(t1.AddressV4)
	url := "http://" + e.addr + "/user-data"
	_, body := get(t, c, url)
	require.Empty(t, body)
	_, err := e.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: inventory.NodeScope("n1"), UserData: "#cloud-config\nruncmd: [echo v2]\n"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, body := get(t, c, url)
		return body != "" && body == "#cloud-config\nruncmd:\n  - echo v2\n"
	}, 2*time.Second, 20*time.Millisecond)
}

// TestRepeatedDeliveriesAreBatched: the first delivery of a document's secrets is an event
// before the answer; repeats are counted into batched events, so that every delivery is in
// the event log at a write per interval.
func TestRepeatedDeliveriesAreBatched(t *testing.T) {
	t.Parallel()
	e := setupWith(t, func(c *datasource.Config) { c.AuditInterval = 50 * time.Millisecond })
	ctx := context.Background()
	t1 := e.node(t, "n1", "h1")
	e.putSecret(t, inventory.NodeScope("n1"), "munge.key", secretValue, false)
	_, err := e.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: inventory.NodeScope("n1"),
		UserData: "#cloud-config\nwrite_files: [{path: /k, content: {{ secret \"munge.key\" | quote }}}]\n"})
	require.NoError(t, err)
	c := client(t1.AddressV4)
	code, _ := get(t, c, "http://"+e.addr+"/user-data")
	require.Equal(t, 200, code)
	first := events(t, e.store, datasource.EventSecretsDelivered)
	require.Len(t, first, 1, "the first delivery is recorded before the answer")
	require.EqualValues(t, 1, first[0].Detail["count"])

	const n = 40
	for range n - 1 {
		code, _ := get(t, c, "http://"+e.addr+"/user-data")
		require.Equal(t, 200, code)
	}
	require.Eventually(t, func() bool {
		total := 0.0
		for _, ev := range events(t, e.store, datasource.EventSecretsDelivered) {
			total += ev.Detail["count"].(float64)
		}
		return total == n
	}, 5*time.Second, 20*time.Millisecond)
	evs := events(t, e.store, datasource.EventSecretsDelivered)
	require.Less(t, len(evs), n/2, "repeats are batched")
	for _, ev := range evs {
		require.Equal(t, []any{"munge.key"}, ev.Detail["secrets"])
		require.Equal(t, t1.ID, ev.Detail["tunnel_id"])
		require.NotContains(t, ev.Detail, "value")
	}
	require.NotContains(t, e.logs.String(), secretValue)
}

// TestCacheWatchesChanges: with changes watched, a change made by another process (another
// replica, or attestctl through another service) shows at the first request after its
// notification. The store's clock does not move here, so nothing but a notification can make
// the datasource read again.
func TestCacheWatchesChanges(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Now())
	e := setupStore(t, inventory.Options{Clock: clk}, func(c *datasource.Config) {
		c.WatchChanges = true
		c.CacheTTL = time.Hour
	})
	t1 := e.node(t, "n1", "h1")
	c := client(t1.AddressV4)
	url := "http://" + e.addr + "/user-data"
	set := func(v string) {
		_, err := e.store.SetCloudInitData(context.Background(), inventory.CloudInitData{Scope: inventory.NodeScope("n1"),
			UserData: "#cloud-config\nruncmd: [echo " + v + "]\n"})
		require.NoError(t, err)
	}
	shows := func(v string) func() bool {
		return func() bool { _, body := get(t, c, url); return body == "#cloud-config\nruncmd:\n  - echo "+v+"\n" }
	}
	// The listener may start only now: its start drops every read too.
	for _, v := range []string{"v1", "v2", "v3"} {
		set(v)
		require.Eventually(t, shows(v), 10*time.Second, 20*time.Millisecond, v)
	}
}

// TestCacheUnwatchedLifetime: without change notifications a read is kept at most a second,
// whatever CacheTTL says.
func TestCacheUnwatchedLifetime(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Now())
	e := setupStore(t, inventory.Options{Clock: clk}, func(c *datasource.Config) { c.CacheTTL = time.Hour })
	t1 := e.node(t, "n1", "h1")
	c := client(t1.AddressV4)
	url := "http://" + e.addr + "/user-data"
	_, body := get(t, c, url)
	require.Empty(t, body)
	_, err := e.store.SetCloudInitData(context.Background(), inventory.CloudInitData{Scope: inventory.NodeScope("n1"), UserData: "#cloud-config\nruncmd: [echo v2]\n"})
	require.NoError(t, err)
	_, body = get(t, c, url)
	require.Empty(t, body, "kept: less than a second has passed")
	clk.Advance(time.Second)
	_, body = get(t, c, url)
	require.Equal(t, "#cloud-config\nruncmd:\n  - echo v2\n", body)
}
