package inventory_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/pgtest"
)

func TestOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := inventory.Open(ctx, pgtest.NewDB(t))
	require.NoError(t, err)
	defer pool.Close()
	var app string
	require.NoError(t, pool.QueryRow(ctx, `SELECT current_setting('application_name')`).Scan(&app))
	require.Equal(t, "attestboot", app)
	require.GreaterOrEqual(t, pool.Config().MaxConns, int32(8))

	// What the URL says wins over the defaults.
	cfg, err := inventory.PoolConfig("postgres://u@localhost/db?pool_max_conns=3&application_name=attestor")
	require.NoError(t, err)
	require.EqualValues(t, 3, cfg.MaxConns)
	require.Equal(t, "attestor", cfg.ConnConfig.RuntimeParams["application_name"])

	_, err = inventory.PoolConfig("postgres://u:hunter2@localhost:notaport/db")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "hunter2", "a malformed URL must not leak its password")

	u, err := url.Parse(pgtest.NewDB(t))
	require.NoError(t, err)
	u.Path += "_missing"
	_, err = inventory.Open(ctx, u.String())
	require.ErrorContains(t, err, "does not exist", "Open checks that the database answers")
}
