package metadata_test

import (
	"context"
	"io"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	metadatav1 "github.com/attestboot/attestboot/proto/attestboot/metadata/v1"
)

// BenchmarkDatasource fetches meta-data and user-data (with one secret, so every fetch is
// audited) from a metadata process in a gateway namespace with 1,000 concurrent clients in a
// node namespace, over the node's WireGuard tunnel (wireguard-go on both ends). Every request
// re-checks its tunnel with one indexed query; the tunnel's data and rendered documents come
// from the datasource's cache, and repeated deliveries are audited in batches. It reports
// requests per second and p50/p99 latency. With 1,000 clients that never pause, latency is
// queueing: p50 is about 1,000 / (requests per second).
//
//	go test -run '^$' -bench Datasource -benchtime 20000x ./
func BenchmarkDatasource(b *testing.B) {
	ctx := context.Background()
	tb := newTestbedB(b)
	n1 := tb.addNodeB(b, "bench-n1")
	s := tb.startMetadata(b)
	_, err := s.admin.PutSecret(ctx, &metadatav1.PutSecretRequest{Scope: nodeScope(n1.id), Name: "munge.key", Value: []byte(secretValue)})
	require.NoError(b, err)
	_, err = s.admin.SetCloudInitData(ctx, &metadatav1.SetCloudInitDataRequest{Data: &metadatav1.CloudInitData{Scope: defaultsScope,
		UserData: "#cloud-config\npackages: [munge]\nruncmd: [\"echo {{ .Node.ID }}\"]\n"}})
	require.NoError(b, err)
	_, err = s.admin.SetCloudInitData(ctx, &metadatav1.SetCloudInitDataRequest{Data: &metadatav1.CloudInitData{Scope: nodeScope(n1.id),
		UserData: "#cloud-config\nwrite_files: [{path: /etc/munge/munge.key, content: {{ secret \"munge.key\" | base64 }}, encoding: b64}]\n"}})
	require.NoError(b, err)

	const clients = 1000
	for _, doc := range []string{"meta-data", "user-data"} {
		b.Run(doc, func(b *testing.B) {
			var (
				next  atomic.Int64
				mu    sync.Mutex
				lat   = make([]time.Duration, 0, b.N)
				wg    sync.WaitGroup
				fails atomic.Int64
			)
			b.ResetTimer()
			start := time.Now()
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var mine []time.Duration
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						res, err := n1.http.Get("http://" + gatewayAddr + "/" + doc)
						if err != nil {
							fails.Add(1)
							continue
						}
						_, _ = io.Copy(io.Discard, res.Body)
						res.Body.Close()
						if res.StatusCode != 200 {
							fails.Add(1)
						}
						mine = append(mine, time.Since(t0))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			require.Zero(b, fails.Load(), "failed requests")
			slices.Sort(lat)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

func newTestbedB(b *testing.B) *testbed {
	return newTestbedTB(b)
}

func (tb *testbed) addNodeB(b *testing.B, id string) *node {
	return tb.addNodeTB(b, id, true, netip.Addr{})
}
