// Command attestor serves the node-facing AttestorService and the admin InventoryService.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/attestboot/attestboot/attestor"
	"github.com/attestboot/attestboot/services/cli"
)

func main() {
	cfg := attestor.DefaultConfig()
	os.Exit(cli.Main(cli.Service{
		Name:        "attestor",
		EnvPrefix:   "ATTESTOR",
		Flags:       cfg.RegisterFlags,
		DatabaseURL: func() string { return cfg.DatabaseURL },
		Run:         func(ctx context.Context, l *slog.Logger) error { return attestor.Run(ctx, cfg, l) },
	}, os.Args[1:], os.Stderr))
}
