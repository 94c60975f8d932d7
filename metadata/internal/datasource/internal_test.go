package datasource

import (
	"github.com/attestboot/attestboot/metadata/internal/closertest"
	"github.com/attestboot/attestboot/metadata/internal/tunnelclient"
)

var (
	_ tunnelCloser = (*closertest.Fake)(nil)
	_ tunnelCloser = (*tunnelclient.Client)(nil)
)
