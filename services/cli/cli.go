// Package cli is the shared shape of attestboot's service binaries: flags with environment
// overrides, a logger, a context cancelled by SIGINT/SIGTERM, and two commands — serve (the
// default) and migrate (apply the inventory migrations and exit) — so each cmd/<binary>/main.go
// stays a few lines.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/attestboot/attestboot/services/config"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/logging"
)

// Exit codes of service binaries.
const (
	ExitOK    = 0
	ExitError = 1 // the service failed
	ExitUsage = 2 // bad flags or environment
)

// Service describes one binary.
type Service struct {
	// Name of the binary, e.g. "attestor".
	Name string
	// EnvPrefix of environment overrides, e.g. "ATTESTOR" (ATTESTOR_LISTEN for -listen).
	EnvPrefix string
	// Flags registers the service's flags, including -database-url.
	Flags func(fs *flag.FlagSet)
	// DatabaseURL returns the configured inventory URL (after parsing), for migrate.
	DatabaseURL func() string
	// Run serves until ctx ends; a nil error after ctx ended is a clean shutdown.
	Run func(ctx context.Context, logger *slog.Logger) error
}

// Main runs the binary with args (without the program name) and returns its exit code.
func Main(s Service, args []string, stderr io.Writer) int {
	command := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "migrate") {
		command, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet(s.Name+" "+command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s [serve|migrate] [flags]\n\n"+
			"  serve    run the service (default)\n  migrate  apply the inventory migrations and exit\n\n"+
			"Every flag can also be set as %s_<FLAG> in the environment (dashes become underscores);\n"+
			"the command line wins.\n\nflags:\n", s.Name, s.EnvPrefix)
		fs.PrintDefaults()
	}
	var logCfg logging.Config
	logCfg.RegisterFlags(fs)
	s.Flags(fs)
	if err := config.Parse(fs, s.EnvPrefix, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stderr, "%s: %v\n", s.Name, err)
		return ExitUsage
	}
	logger, err := logging.New(stderr, logCfg.Level, logCfg.Format)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", s.Name, err)
		return ExitUsage
	}
	logger = logger.With("service", s.Name)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if command == "migrate" {
		err = migrate(ctx, s.DatabaseURL(), logger)
	} else {
		err = s.Run(ctx, logger)
	}
	if err != nil && ctx.Err() == nil {
		logger.Error("exiting", "command", command, "err", err)
		return ExitError
	}
	return ExitOK
}

func migrate(ctx context.Context, url string, logger *slog.Logger) error {
	if url == "" {
		return errors.New("no database URL (-database-url)")
	}
	pool, err := inventory.Open(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	n, err := inventory.Migrate(ctx, pool)
	if err != nil {
		return err
	}
	logger.Info("migrations applied", "count", n)
	return nil
}
