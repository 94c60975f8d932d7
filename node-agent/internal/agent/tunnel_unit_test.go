package agent

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
)

// scriptedTunnels answers OpenTunnel with its errors in turn, then with a tunnel.
type scriptedTunnels struct {
	tunnelmgrv1.TunnelManagerServiceClient
	errs  []error
	calls []*tunnelmgrv1.OpenTunnelRequest
}

func (s *scriptedTunnels) OpenTunnel(_ context.Context, req *tunnelmgrv1.OpenTunnelRequest, _ ...grpc.CallOption) (*tunnelmgrv1.OpenTunnelResponse, error) {
	s.calls = append(s.calls, req)
	if i := len(s.calls) - 1; i < len(s.errs) {
		return nil, s.errs[i]
	}
	return &tunnelmgrv1.OpenTunnelResponse{TunnelId: "t1"}, nil
}

// TestOpenTunnelKeepsTheAttestation: a transient failure is retried with the same attestation;
// an expired attestation, or a refusal after a failure, sends the node back to attest; another
// refusal at once is the answer.
func TestOpenTunnelKeepsTheAttestation(t *testing.T) {
	t.Parallel()
	b := Backoff{Initial: time.Millisecond, Max: time.Millisecond}
	req := &tunnelmgrv1.OpenTunnelRequest{AttestationId: "a1"}
	unavailable := status.Error(codes.Unavailable, "connection error: broken pipe")
	spent := status.Error(codes.PermissionDenied, "attestation already consumed")

	c := &scriptedTunnels{errs: []error{unavailable, unavailable}}
	answer, err := openTunnel(context.Background(), b, c, req)
	require.NoError(t, err)
	require.Equal(t, "t1", answer.GetTunnelId())
	require.Len(t, c.calls, 3)
	for _, r := range c.calls {
		require.Equal(t, "a1", r.GetAttestationId(), "the same attestation each time")
	}

	c = &scriptedTunnels{errs: []error{unavailable, spent}}
	_, err = openTunnel(context.Background(), b, c, req)
	require.ErrorIs(t, err, errAttestAgain)
	require.True(t, retryableRPC(err), "the attest-and-open loop attests again")
	require.Len(t, c.calls, 2)

	expired := status.Error(codes.FailedPrecondition, "tunnel refused")
	c = &scriptedTunnels{errs: []error{expired}}
	_, err = openTunnel(context.Background(), b, c, req)
	require.ErrorIs(t, err, errAttestAgain, "an expired attestation: attest again, even at the first attempt")
	require.Len(t, c.calls, 1)

	c = &scriptedTunnels{errs: []error{spent}}
	_, err = openTunnel(context.Background(), b, c, req)
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.False(t, retryableRPC(err), "a refusal is the answer")
	require.Len(t, c.calls, 1)
}
