package tunnel_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/pgtest"
	"github.com/attestboot/attestboot/tunnelmgr/internal/gateway"
	"github.com/attestboot/attestboot/tunnelmgr/internal/gateway/gatewaytest"
	"github.com/attestboot/attestboot/tunnelmgr/internal/tunnel"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// When the device refuses the peer, the tunnel is marked failed, its address goes back to the
// pool and nothing stays on the device.
func TestDeviceFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := inventory.New(pgtest.NewPool(t), inventory.Options{})
	info, err := store.UpsertGateway(ctx, inventory.Gateway{
		Name: "gw1", PublicKey: bytes.Repeat([]byte{7}, 32), Endpoint: "10.99.0.1:51820",
		IPv4Pool: netip.MustParsePrefix("100.64.0.0/24"), AddressV4: netip.MustParseAddr("100.64.0.1"),
	})
	require.NoError(t, err)
	dev := gatewaytest.NewDevice()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	gw, err := gateway.New(gateway.Config{Name: "gw1", Interface: "wg-test"}, dev, store, logger, nil)
	require.NoError(t, err)
	svc, err := tunnel.New(tunnel.Config{Gateway: gw, Info: info}, store, logger, nil)
	require.NoError(t, err)

	_, err = store.CreateNode(ctx, inventory.Node{ID: "n1", Enabled: true})
	require.NoError(t, err)
	key := bytes.Repeat([]byte{3}, 32)
	one := bytes.Repeat([]byte{1}, 32)
	sess, err := store.CreateSession(ctx, inventory.Session{NodeID: "n1", EKSHA256: one, AKPublic: one, AKSHA256: one,
		WireGuardPublicKey: key, Nonce: one, SecretSHA256: one}, time.Minute)
	require.NoError(t, err)
	a, err := store.CreateAttestation(ctx, inventory.Attestation{SessionID: sess.ID, NodeID: "n1", EKSHA256: one,
		AKSHA256: one, WireGuardPublicKey: key}, time.Minute)
	require.NoError(t, err)

	dev.Fail = gatewaytest.ErrInjected
	_, err = svc.Node().OpenTunnel(ctx, &tunnelmgrv1.OpenTunnelRequest{AttestationId: a.ID, WireguardPublicKey: key})
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Zero(t, dev.Len(), "no peer on the device")
	tun, err := store.TunnelOfAttestation(ctx, a.ID)
	require.NoError(t, err)
	require.Equal(t, inventory.TunnelFailed, tun.State)
	require.Equal(t, tunnel.ReasonDeviceError, tun.CloseReason)
	open, err := store.OpenTunnels(ctx, "gw1")
	require.NoError(t, err)
	require.Empty(t, open, "the address is back in the pool")
	evs, err := store.QueryEvents(ctx, inventory.EventQuery{NodeID: "n1", Kinds: []string{tunnel.KindFailed}})
	require.NoError(t, err)
	require.Len(t, evs, 1)
}
