package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
)

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC(s)
	require.NoError(t, err)
	return mac
}

func TestNodeCRUD(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	created, err := b.store.CreateNode(ctx, inventory.Node{
		ID: "x1000c0s0b0n0", MAC: mustMAC(t, "02:00:00:00:00:01"), Hostname: "nid000001",
		Enabled: true, Description: "rack 1",
	})
	require.NoError(t, err)
	require.Equal(t, inventory.Node{
		ID: "x1000c0s0b0n0", MAC: mustMAC(t, "02:00:00:00:00:01"), Hostname: "nid000001",
		Enabled: true, Description: "rack 1", CreatedAt: created.CreatedAt, UpdatedAt: created.UpdatedAt,
	}, created)
	require.True(t, created.CreatedAt.Equal(t0), "timestamps come from the injected clock")
	require.True(t, created.LastBootAt.IsZero())

	got, err := b.store.GetNode(ctx, "x1000c0s0b0n0")
	require.NoError(t, err)
	require.Equal(t, created, got)

	// A node without MAC or hostname stores NULLs and reads back as empty.
	bare, err := b.store.CreateNode(ctx, inventory.Node{ID: "x1000c0s0b0n1"})
	require.NoError(t, err)
	require.Nil(t, bare.MAC)
	require.Empty(t, bare.Hostname)
	require.False(t, bare.Enabled, "Enabled is what the caller says")
	var nullMAC, nullHost bool
	require.NoError(t, b.pool.QueryRow(ctx,
		`SELECT mac IS NULL, hostname IS NULL FROM nodes WHERE id = 'x1000c0s0b0n1'`).Scan(&nullMAC, &nullHost))
	require.True(t, nullMAC)
	require.True(t, nullHost)

	// Partial update: only the fields given change.
	b.clock.Advance(time.Minute)
	updated, err := b.store.UpdateNode(ctx, "x1000c0s0b0n0", inventory.NodeUpdate{Description: ptr("rack 2")})
	require.NoError(t, err)
	require.Equal(t, "rack 2", updated.Description)
	require.Equal(t, "nid000001", updated.Hostname)
	require.Equal(t, created.MAC, updated.MAC)
	require.True(t, updated.Enabled)
	require.True(t, updated.UpdatedAt.Equal(t0.Add(time.Minute)))
	require.True(t, updated.CreatedAt.Equal(t0))

	updated, err = b.store.UpdateNode(ctx, "x1000c0s0b0n0", inventory.NodeUpdate{
		Hostname: ptr(""), MAC: &net.HardwareAddr{}, Enabled: ptr(false),
	})
	require.NoError(t, err)
	require.Empty(t, updated.Hostname, "an empty hostname clears it")
	require.Nil(t, updated.MAC, "an empty MAC clears it")
	require.False(t, updated.Enabled)
	require.Equal(t, "rack 2", updated.Description)

	updated, err = b.store.UpdateNode(ctx, "x1000c0s0b0n0", inventory.NodeUpdate{
		Hostname: ptr("nid000001.hsn.example"), MAC: ptr(mustMAC(t, "02:00:00:00:00:02")), Enabled: ptr(true),
	})
	require.NoError(t, err)
	require.Equal(t, "nid000001.hsn.example", updated.Hostname)
	require.Equal(t, mustMAC(t, "02:00:00:00:00:02"), updated.MAC)

	disabled, err := b.store.DisableNode(ctx, "x1000c0s0b0n0")
	require.NoError(t, err)
	require.False(t, disabled.Enabled)

	require.NoError(t, b.store.DeleteNode(ctx, "x1000c0s0b0n0"))
	_, err = b.store.GetNode(ctx, "x1000c0s0b0n0")
	require.ErrorIs(t, err, inventory.ErrNotFound)
}

func TestNodeErrorsAreTyped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n1", MAC: mustMAC(t, "02:00:00:00:00:01")})
	require.NoError(t, err)

	for name, tc := range map[string]struct {
		err        func() error
		want       error
		constraint string
	}{
		"get missing": {func() error { _, err := b.store.GetNode(ctx, "nope"); return err }, inventory.ErrNotFound, ""},
		"update missing": {func() error {
			_, err := b.store.UpdateNode(ctx, "nope", inventory.NodeUpdate{Enabled: ptr(true)})
			return err
		}, inventory.ErrNotFound, ""},
		"disable missing": {func() error { _, err := b.store.DisableNode(ctx, "nope"); return err }, inventory.ErrNotFound, ""},
		"delete missing":  {func() error { return b.store.DeleteNode(ctx, "nope") }, inventory.ErrNotFound, ""},
		"duplicate id": {func() error {
			_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n1"})
			return err
		}, inventory.ErrConflict, "nodes_pkey"},
		"duplicate mac": {func() error {
			_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n2", MAC: mustMAC(t, "02:00:00:00:00:01")})
			return err
		}, inventory.ErrConflict, "nodes_mac_key"},
		"bad id": {func() error {
			_, err := b.store.CreateNode(ctx, inventory.Node{ID: "../etc/passwd"})
			return err
		}, inventory.ErrInvalid, "nodes_id_format"},
		"empty id": {func() error {
			_, err := b.store.CreateNode(ctx, inventory.Node{})
			return err
		}, inventory.ErrInvalid, "nodes_id_format"},
		"bad hostname": {func() error {
			_, err := b.store.CreateNode(ctx, inventory.Node{ID: "n3", Hostname: "-bad_host-"})
			return err
		}, inventory.ErrInvalid, "nodes_hostname_format"},
		"bad hostname update": {func() error {
			_, err := b.store.UpdateNode(ctx, "n1", inventory.NodeUpdate{Hostname: ptr("a..b")})
			return err
		}, inventory.ErrInvalid, "nodes_hostname_format"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.err()
			require.ErrorIs(t, err, tc.want)
			for _, other := range []error{inventory.ErrNotFound, inventory.ErrConflict, inventory.ErrInvalid} {
				if other != tc.want {
					require.NotErrorIs(t, err, other)
				}
			}
			if tc.constraint != "" {
				require.ErrorContains(t, err, tc.constraint, "the message names the constraint")
				var pgErr *pgconn.PgError
				require.True(t, errors.As(err, &pgErr), "the driver error stays reachable")
				require.Equal(t, tc.constraint, pgErr.ConstraintName)
			}
		})
	}
}

func TestListNodesPagingAndFilters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.store.CreateGroup(ctx, inventory.Group{Name: "compute"})
	require.NoError(t, err)
	var all []string
	for i := range 25 {
		id := fmt.Sprintf("x1000c0s%02db0n0", i)
		all = append(all, id)
		_, err := b.store.CreateNode(ctx, inventory.Node{ID: id, Enabled: i%3 != 0})
		require.NoError(t, err)
		if i%2 == 0 {
			require.NoError(t, b.store.AddGroupMember(ctx, "compute", id))
		}
	}
	_, err = b.store.CreateNode(ctx, inventory.Node{ID: "x2000c0s0b0n0", Enabled: true})
	require.NoError(t, err)

	list := func(f inventory.NodeFilter) []string {
		t.Helper()
		var ids []string
		for pages := 0; ; pages++ {
			require.Less(t, pages, 100, "paging must end")
			nodes, next, err := b.store.ListNodes(ctx, f)
			require.NoError(t, err)
			require.LessOrEqual(t, len(nodes), max(f.Limit, 1))
			for _, n := range nodes {
				ids = append(ids, n.ID)
			}
			if next == "" {
				return ids
			}
			require.Equal(t, nodes[len(nodes)-1].ID, next)
			f.After = next
		}
	}

	// Pages of 7 over 25 matching nodes: 7+7+7+4, in id order, nothing missed or repeated.
	require.Equal(t, all, list(inventory.NodeFilter{IDPrefix: "x1000", Limit: 7}))
	// A page size that divides the total exactly still ends.
	require.Equal(t, all, list(inventory.NodeFilter{IDPrefix: "x1000c0s", Limit: 5}))
	require.Len(t, list(inventory.NodeFilter{Limit: 13}), 26)

	var enabled, disabled, members []string
	for i, id := range all {
		if i%3 != 0 {
			enabled = append(enabled, id)
		} else {
			disabled = append(disabled, id)
		}
	}
	for i := 0; i < len(all); i += 2 {
		members = append(members, all[i])
	}
	require.Equal(t, enabled, list(inventory.NodeFilter{IDPrefix: "x1000", Enabled: ptr(true), Limit: 4}))
	require.Equal(t, disabled, list(inventory.NodeFilter{Enabled: ptr(false), Limit: 4}))
	require.Equal(t, members, list(inventory.NodeFilter{Group: "compute", Limit: 4}))
	require.Empty(t, list(inventory.NodeFilter{Group: "no-such-group"}))
	// "_" and "%" are not wildcards in a prefix.
	require.Empty(t, list(inventory.NodeFilter{IDPrefix: "x1000_"}))
	require.Empty(t, list(inventory.NodeFilter{IDPrefix: "%"}))

	var both []string
	for i, id := range all {
		if i%2 == 0 && i%3 != 0 {
			both = append(both, id)
		}
	}
	require.Equal(t, both, list(inventory.NodeFilter{Group: "compute", Enabled: ptr(true), Limit: 2}))

	// Default page size applies when Limit is 0.
	nodes, next, err := b.store.ListNodes(ctx, inventory.NodeFilter{})
	require.NoError(t, err)
	require.Len(t, nodes, 26)
	require.Empty(t, next)
}

func TestDeleteNodeCascades(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	fx := newTunnelFixture(t, b, "n1")
	_, err := b.store.AppendEvent(ctx, inventory.Event{NodeID: "n1", Kind: "node.booted", Service: "metadata"})
	require.NoError(t, err)
	fx.openTunnel(t, "10.100.0.2")

	require.NoError(t, b.store.DeleteNode(ctx, "n1"))
	for _, table := range []string{"group_members", "ek_enrollments", "attestation_sessions", "attestations", "tunnels"} {
		var n int
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n))
		require.Zero(t, n, "%s rows of a deleted node must go with it", table)
	}
	events, err := b.store.QueryEvents(ctx, inventory.EventQuery{NodeID: "n1"})
	require.NoError(t, err)
	require.Len(t, events, 1, "events outlive their node")
}
