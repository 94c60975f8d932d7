package tunnelmgr_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/procstat"
)

// BenchmarkOpenClose opens and closes tunnels through the gRPC API of a tunnelmgr process with
// an embedded wireguard-go gateway, from 64 concurrent callers, and reports opens+closes per
// second and the tunnelmgr's CPU per open+close.
//
//	go test -run '^$' -bench OpenClose -benchtime 2000x ./
func BenchmarkOpenClose(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b)
	tm := e.start(b, instanceOpts{})
	type req struct {
		id  string
		pub wgtypes.Key
	}
	reqs := make([]req, b.N)
	for i := range reqs {
		id, key := e.attestation(b, fmt.Sprintf("n%06d", i))
		reqs[i] = req{id, key.PublicKey()}
	}
	work := make(chan req)
	var wg sync.WaitGroup
	cpu0, err := procstat.Read(tm.proc.Pid())
	require.NoError(b, err)
	start := time.Now()
	b.ResetTimer()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				resp, err := tm.node.OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: r.id, WireguardPublicKey: r.pub[:]})
				if err != nil {
					b.Error(err)
					return
				}
				if _, err := tm.admin.CloseTunnel(ctx, &tunnelmgrv1.CloseTunnelRequest{
					Target: &tunnelmgrv1.CloseTunnelRequest_TunnelId{TunnelId: resp.GetTunnelId()}, Reason: "bench"}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for _, r := range reqs {
		work <- r
	}
	close(work)
	wg.Wait()
	b.StopTimer()
	cpu1, err := procstat.Read(tm.proc.Pid())
	require.NoError(b, err)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "open+close/s")
	b.ReportMetric(float64((cpu1.CPU-cpu0.CPU).Microseconds())/1000/float64(b.N), "tunnelmgr-cpu-ms/op")
}

// BenchmarkReconcile10k starts a tunnelmgr whose embedded device is empty while the inventory
// holds 10,000 open tunnels, and reports how long it takes until the device holds them all and
// the service answers, and its resident memory then.
//
//	go test -run '^$' -bench Reconcile10k -benchtime 1x ./
func BenchmarkReconcile10k(b *testing.B) {
	const peerCount = 10000
	ctx := context.Background()
	e := newEnv(b)
	// Register the gateway (one short run), then fill the inventory in bulk.
	e.start(b, instanceOpts{}).proc.Stop()
	_, err := e.store.Pool().Exec(ctx, fmt.Sprintf(`
		INSERT INTO nodes (id) SELECT 'n' || g FROM generate_series(1, %[1]d) g;
		INSERT INTO attestation_sessions (node_id, ek_sha256, ak_public, ak_sha256, wireguard_public_key, nonce,
			secret_sha256, state, expires_at, ended_at)
		SELECT 'n' || g, sha256(('ek' || g)::bytea), '\x01', sha256('ak'), sha256(('wg' || g)::bytea), sha256('n'),
			sha256('s'), 'consumed', now() + interval '1 hour', now()
		FROM generate_series(1, %[1]d) g;
		INSERT INTO attestations (session_id, node_id, ek_sha256, ak_sha256, wireguard_public_key, expires_at, consumed_at)
		SELECT id, node_id, ek_sha256, ak_sha256, wireguard_public_key, now() + interval '1 hour', now()
		FROM attestation_sessions;
		INSERT INTO tunnels (gateway, node_id, attestation_id, wireguard_public_key, address_v4, state, expires_at)
		SELECT 'gw1', a.node_id, a.id, a.wireguard_public_key,
			'100.64.0.0'::inet + (1 + row_number() OVER (ORDER BY a.node_id)), 'open', now() + interval '1 hour'
		FROM attestations a;`, peerCount))
	require.NoError(b, err)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		tm := e.start(b, instanceOpts{extra: []string{"-reconcile-interval", "1h"}})
		elapsed := time.Since(start)
		b.StopTimer()
		require.Len(b, peers(b, tm.iface), peerCount)
		st, err := procstat.Read(tm.proc.Pid())
		require.NoError(b, err)
		b.ReportMetric(elapsed.Seconds(), "start+reconcile-s")
		b.ReportMetric(float64(st.RSS)/(1<<20), "tunnelmgr-rss-MiB")
		tm.proc.Stop()
		b.StartTimer()
	}
}
