package grpcserver

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPolicyClassification(t *testing.T) {
	t.Parallel()
	p, err := newPolicy(Config{
		NodeFacing: []string{"attestboot.attestor.v1.Attestor", "attestboot.tunnelmgr.v1.TunnelManager/OpenTunnel", "attestboot.tunnelmgr.v1.TunnelManager/CloseTunnel"},
		Admin:      []string{"/attestboot.attestor.v1.Attestor/Debug", "attestboot.tunnelmgr.v1.TunnelManager"},
	}.withDefaults(), "")
	require.NoError(t, err)
	for method, admin := range map[string]bool{
		"/attestboot.attestor.v1.Attestor/BeginAttestation":         false, // node-facing service
		"/attestboot.attestor.v1.Attestor/Debug":                    true,  // method entry beats service entry
		"/attestboot.tunnelmgr.v1.TunnelManager/OpenTunnel":         false, // method entry beats service entry
		"/attestboot.tunnelmgr.v1.TunnelManager/ListTunnels":        true,
		"/attestboot.attestor.v1.Inventory/CreateNode":              true, // unlisted: fail closed
		"/attestboot.metadata.v1.Metadata/PutSecret":                true,
		"/grpc.health.v1.Health/Check":                              false, // built-in
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": true,
		"/attestboot.attestor.v1.AttestorX/BeginAttestation":        true, // no prefix matching
		"garbage": true,
	} {
		require.Equal(t, admin, p.isAdmin(method), method)
	}

	// An operator may make health checks admin-only too.
	p, err = newPolicy(Config{Admin: []string{"grpc.health.v1.Health"}}.withDefaults(), "")
	require.NoError(t, err)
	require.True(t, p.isAdmin("/grpc.health.v1.Health/Check"))
}

func TestParseEntry(t *testing.T) {
	t.Parallel()
	for entry, want := range map[string][2]string{
		"pkg.Svc":         {"pkg.Svc", ""},
		"/pkg.Svc":        {"pkg.Svc", ""},
		"pkg.v1.Svc/Get":  {"pkg.v1.Svc", "Get"},
		"/pkg.v1.Svc/Get": {"pkg.v1.Svc", "Get"},
	} {
		svc, m, err := parseEntry(entry)
		require.NoError(t, err, entry)
		require.Equal(t, want, [2]string{svc, m}, entry)
	}
	for _, bad := range []string{"", "Svc", "pkg.Svc/", "pkg.Svc/a/b", "pkg Svc", "/"} {
		_, _, err := parseEntry(bad)
		require.Error(t, err, bad)
	}
}
