package inventory_test

import (
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attestboot/attestboot/services/clock"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// bundle is what setup gives a test: the store under test on its own migrated database, the
// pool beneath it (for raw SQL the store does not offer) and the store's fake clock.
type bundle struct {
	store *inventory.Store
	pool  *pgxpool.Pool
	clock *clock.Fake
}

var t0 = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func setup(t *testing.T) bundle {
	t.Helper()
	pool := pgtest.NewPool(t)
	fake := clock.NewFake(t0)
	return bundle{
		store: inventory.New(pool, inventory.Options{Clock: fake}),
		pool:  pool,
		clock: fake,
	}
}

func ptr[T any](v T) *T { return &v }
