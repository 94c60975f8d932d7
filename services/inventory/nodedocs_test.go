package inventory_test

import (
	"bytes"
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

// TestNodeDocsSourceByAddress checks that the one-round-trip read returns what the separate
// queries do for the node owning the address, and nothing once its tunnel is closed.
func TestNodeDocsSourceByAddress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	gateway(t, b, "gw", "100.64.0.0/24", "fd00::/64")
	t1, err := open(t, b, attested(t, b, "n1", "gw"))
	require.NoError(t, err)
	t2, err := open(t, b, attested(t, b, "n2", "gw"))
	require.NoError(t, err)
	for _, g := range []inventory.Group{{Name: "hi", Priority: 20}, {Name: "lo", Priority: 10}} {
		_, err := b.store.CreateGroup(ctx, g)
		require.NoError(t, err)
		require.NoError(t, b.store.AddGroupMember(ctx, g.Name, "n1"))
	}
	for _, s := range []inventory.Scope{inventory.DefaultsScope, inventory.GroupScope("lo"), inventory.NodeScope("n1"), inventory.NodeScope("n2")} {
		_, err := b.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: s, UserData: "#cloud-config\n# " + s.String() + "\n"})
		require.NoError(t, err)
		_, err = b.store.PutSecret(ctx, inventory.Secret{Scope: s, Name: "k", Ciphertext: []byte(s.String()), Nonce: bytes.Repeat([]byte{1}, 12), KeyID: "k1"})
		require.NoError(t, err)
	}

	for _, addr := range []netip.Addr{t1.AddressV4, t1.AddressV6, netip.AddrFrom16(t1.AddressV4.As16())} {
		src, err := b.store.NodeDocsSourceByAddress(ctx, "gw", addr)
		require.NoError(t, err, addr)
		require.Equal(t, t1, src.Tunnel)
		node, err := b.store.GetNode(ctx, "n1")
		require.NoError(t, err)
		require.Equal(t, node, src.Node)
		groups, err := b.store.GroupsOfNode(ctx, "n1")
		require.NoError(t, err)
		require.Equal(t, groups, src.Groups)
		layers, err := b.store.CloudInitLayers(ctx, "n1")
		require.NoError(t, err)
		require.Equal(t, layers, src.Layers)
		require.Len(t, src.Layers, 3, "defaults, lo, n1; never n2's")
		secrets, err := b.store.SecretsOfNode(ctx, "n1")
		require.NoError(t, err)
		require.Equal(t, secrets, src.Secrets)
		require.Len(t, src.Secrets, 3)
	}
	src, err := b.store.NodeDocsSourceByAddress(ctx, "gw", t2.AddressV4)
	require.NoError(t, err)
	require.Equal(t, "n2", src.Node.ID)
	require.Empty(t, src.Groups)
	for _, s := range src.Secrets {
		require.NotEqual(t, "node:n1", s.Scope.String())
	}

	_, err = b.store.NodeDocsSourceByAddress(ctx, "other-gw", t1.AddressV4)
	require.ErrorIs(t, err, inventory.ErrNotFound)
	_, err = b.store.NodeDocsSourceByAddress(ctx, "gw", netip.MustParseAddr("100.64.0.200"))
	require.ErrorIs(t, err, inventory.ErrNotFound)
	_, _, err = b.store.CloseTunnel(ctx, t1.ID, inventory.TunnelClosed, "phone_home")
	require.NoError(t, err)
	_, err = b.store.NodeDocsSourceByAddress(ctx, "gw", t1.AddressV4)
	require.ErrorIs(t, err, inventory.ErrNotFound)

	// The batch's transaction ended with it: the connection is usable for writes again.
	for range 3 {
		_, err = b.store.NodeDocsSourceByAddress(ctx, "gw", t2.AddressV4)
		require.NoError(t, err)
		_, err = b.store.SetCloudInitData(ctx, inventory.CloudInitData{Scope: inventory.NodeScope("n2"), UserData: "#cloud-config\n"})
		require.NoError(t, err)
	}
}

// TestOpenTunnelRefsByAddress: one call answers for IPv4, IPv6 and IPv4-mapped addresses of
// open tunnels with their phone-home state, and leaves out addresses no open tunnel owns (an
// unused one, a closed tunnel's, another gateway's, the zero Addr).
func TestOpenTunnelRefsByAddress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	gateway(t, b, "gw", "100.64.0.0/24", "fd00::/64")
	t1, err := open(t, b, attested(t, b, "n1", "gw"))
	require.NoError(t, err)
	t2, err := open(t, b, attested(t, b, "n2", "gw"))
	require.NoError(t, err)
	t3, err := open(t, b, attested(t, b, "n3", "gw"))
	require.NoError(t, err)
	phoned, err := b.store.MarkPhonedHome(ctx, t2.ID)
	require.NoError(t, err)
	_, _, err = b.store.CloseTunnel(ctx, t3.ID, inventory.TunnelClosed, "phone_home")
	require.NoError(t, err)

	unused := netip.MustParseAddr("100.64.0.200")
	refs, err := b.store.OpenTunnelRefsByAddress(ctx, "gw", []netip.Addr{
		t1.AddressV4, t1.AddressV6, netip.AddrFrom16(t2.AddressV4.As16()), t1.AddressV4, unused, t3.AddressV4, {}})
	require.NoError(t, err)
	require.Equal(t, map[netip.Addr]inventory.TunnelRef{
		t1.AddressV4: {ID: t1.ID},
		t1.AddressV6: {ID: t1.ID},
		t2.AddressV4: {ID: t2.ID, PhonedHomeAt: phoned.PhonedHomeAt},
	}, refs)

	refs, err = b.store.OpenTunnelRefsByAddress(ctx, "other-gw", []netip.Addr{t1.AddressV4, t1.AddressV6})
	require.NoError(t, err)
	require.Empty(t, refs)
	refs, err = b.store.OpenTunnelRefsByAddress(ctx, "gw", nil)
	require.NoError(t, err)
	require.Empty(t, refs)
}
