package datasource_test

import (
	"context"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

// BenchmarkLoopback is the datasource alone: 1,000 concurrent clients on loopback, each
// request re-checking its tunnel in Postgres and served from the cache otherwise (no WireGuard
// in the path; see the metadata package's BenchmarkDatasource for the tunnel).
//
//	go test -run '^$' -bench Loopback -benchtime 20000x ./internal/datasource/
func BenchmarkLoopback(b *testing.B) {
	e := setup(b)
	tun := e.node(b, "n1", "c1")
	e.putSecret(b, inventory.NodeScope("n1"), "munge.key", secretValue, false)
	_, err := e.store.SetCloudInitData(context.Background(), inventory.CloudInitData{Scope: inventory.NodeScope("n1"),
		UserData: "#cloud-config\nwrite_files: [{path: /k, content: {{ secret \"munge.key\" | base64 }}, encoding: b64}]\n"})
	require.NoError(b, err)
	c := client(tun.AddressV4)
	for _, doc := range []string{"meta-data", "user-data"} {
		b.Run(doc, func(b *testing.B) {
			var (
				next  atomic.Int64
				mu    sync.Mutex
				lat   []time.Duration
				wg    sync.WaitGroup
				fails atomic.Int64
			)
			b.ResetTimer()
			start := time.Now()
			for range 1000 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var mine []time.Duration
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						res, err := c.Get("http://" + e.addr + "/" + doc)
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
			require.Zero(b, fails.Load())
			slices.Sort(lat)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
