package storm

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/attestboot/attestboot/node-agent/internal/sim"
	"github.com/attestboot/attestboot/services/config"
)

// Exit codes of the storm command, as nodesim's.
const (
	ExitOK          = sim.ExitOK
	ExitNodesFailed = sim.ExitNodesFailed
	ExitError       = sim.ExitError
)

// Main is the storm command: nodesim's flags plus what the measurement needs, the report as
// text on stdout, and with -json and -svg as files. args exclude the program name. Like
// nodesim, it must run inside the network namespace of the nodes.
func Main(args []string, stdout, stderr io.Writer) int {
	var (
		cfg                     Config
		jsonFile, svgFile, pids string
	)
	fs := flag.NewFlagSet("storm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	simFlags := sim.RegisterFlags(fs)
	// Here the admin credentials serve the gateway's peer count too, with or without -enroll.
	for name, usage := range map[string]string{
		"tunnelmgr":        "tunnel manager host:port (also asked for the gateway's peers)",
		"admin-cert":       "admin client certificate: for -enroll and the gateway's peer count",
		"admin-key":        "admin client key",
		"admin-token-file": "file holding an admin bearer token",
		"admin-token":      "admin bearer token (secret: environment only)",
	} {
		fs.Lookup(name).Usage = usage
	}
	fs.StringVar(&pids, "pids", "", "server processes to measure: attestor=PID,tunnelmgr=PID,metadata=PID,postgres=PID (the postmaster)")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "inventory database, for pg_stat_database and pg_stat_statements")
	fs.StringVar(&jsonFile, "json", "", "write the report as JSON to this file")
	fs.StringVar(&svgFile, "svg", "", "draw nodes completed over time per phase as SVG into this file")
	fs.DurationVar(&cfg.SampleEvery, "sample-every", 250*time.Millisecond, "sampling period of the gateway's peers and the services' memory")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write the simulator's CPU profile of the storm (first arrival to last node) to this file")
	fs.DurationVar(&cfg.StatsSettle, "stats-settle", 11*time.Second, "wait before reading pg_stat_database (Postgres flushes idle backends' statistics after 10 s)")
	if err := config.Parse(fs, "STORM", args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stderr, "storm: %v\n", err)
		return ExitError
	}
	if err := configure(&cfg, simFlags, pids, stderr); err != nil {
		fmt.Fprintf(stderr, "storm: bad configuration: %v\n", err)
		return ExitError
	}
	cfg.Command = append([]string{"storm"}, args...)
	logger := cfg.Logger

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg)
	if err != nil {
		logger.Error("storm failed", "err", err)
		return ExitError
	}
	if err := rep.WriteText(stdout); err != nil {
		logger.Error("write report", "err", err)
		return ExitError
	}
	if jsonFile != "" {
		if err := writeFile(jsonFile, rep.WriteJSON); err != nil {
			logger.Error("write JSON report", "err", err)
			return ExitError
		}
	}
	if svgFile != "" {
		if err := writeFile(svgFile, rep.WriteSVG); err != nil {
			logger.Error("write SVG chart", "err", err)
			return ExitError
		}
	}
	if rep.Failed > 0 {
		return ExitNodesFailed
	}
	return ExitOK
}

// configure completes cfg from the parsed flags: the simulation's, the processes to measure,
// and the admin credentials for the gateway's peer count.
func configure(cfg *Config, simFlags *sim.Flags, pids string, logTo io.Writer) error {
	var err error
	if cfg.Sim, err = simFlags.Config(logTo); err != nil {
		return err
	}
	cfg.Logger = cfg.Sim.Logger
	if cfg.PIDs, err = ParsePIDs(pids); err != nil {
		return err
	}
	if cfg.AdminTLS, cfg.AdminToken, err = simFlags.Admin(); err != nil {
		return err
	}
	// sim.Run would refuse too, but only after the database and tunnel manager connections.
	if cfg.Sim.Enroll != nil && cfg.AdminTLS == nil {
		return errors.New("-enroll needs -admin-cert and -admin-key, or an admin token")
	}
	return nil
}

// writeFile writes through a temporary file renamed into place, readable by all: the report
// holds no secret and is meant to be compared by whoever looks.
func writeFile(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".storm-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
