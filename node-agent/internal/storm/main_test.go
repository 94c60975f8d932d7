package storm

import (
	"os"
	"testing"

	"github.com/attestboot/attestboot/services/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
