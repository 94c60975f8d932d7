package storm

import (
	"context"
	"crypto/tls"
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
	"github.com/attestboot/attestboot/services/logging"
	"github.com/attestboot/attestboot/services/nodeattest"
	"github.com/attestboot/attestboot/services/pki"
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
		cfg                        Config
		logCfg                     logging.Config
		nodeLogLevel               string
		caFile, serverName, ak     string
		jsonFile, svgFile, pids    string
		doEnroll                   bool
		enrollCfg                  sim.Enroll
		adminCert, adminKey        string
		adminToken, adminTokenFile string
	)
	// nodesim's flags (internal/sim/cli.go) with the same names and defaults: a storm is a
	// nodesim run that is also measured. sim registers its flags inside Main, so they are
	// repeated here.
	fs := flag.NewFlagSet("storm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	logCfg.RegisterFlags(fs)
	s := &cfg.Sim
	fs.StringVar(&nodeLogLevel, "node-log-level", "error", "log level of the simulated agents: debug, info, warn or error")
	fs.IntVar(&s.Nodes, "nodes", 10, "number of simulated nodes")
	fs.Float64Var(&s.Rate, "rate", 0, "arrivals per second (0: all at once)")
	fs.StringVar(&s.Prefix, "prefix", "sim", "node id prefix; ids are the prefix and a five-digit number (sim00001)")
	fs.IntVar(&s.First, "first", 1, "number of the first node")
	fs.StringVar(&s.Attestor, "attestor", "", "attestor host:port")
	fs.StringVar(&s.TunnelManager, "tunnelmgr", "", "tunnel manager host:port (also asked for the gateway's peers)")
	fs.StringVar(&caFile, "ca", "/etc/attestboot/ca.pem", "CA bundle the services' certificates chain to")
	fs.StringVar(&serverName, "server-name", "", "name to verify in the services' certificates (default: the host of each address)")
	fs.StringVar(&ak, "ak", string(nodeattest.ECDSA), "attestation key algorithm: ecdsa or rsa")
	fs.DurationVar(&s.Deadline, "deadline", 5*time.Minute, "deadline of each node's boot")
	fs.StringVar(&s.TPMCache, "tpm-cache", sim.DefaultTPMCache(), "swtpm cache: TPMs are manufactured once into it and reused by later runs")
	fs.IntVar(&s.TPMFirst, "tpm-first", 0, "cache index of the first node's TPM (node i runs TPM tpm-first+i)")
	fs.StringVar(&s.WorkDir, "work-dir", os.TempDir(), "where the nodes' temporary seed directories go")
	fs.BoolVar(&doEnroll, "enroll", false, "create and enroll the nodes (by EK hash) through the InventoryService first")
	fs.StringVar(&enrollCfg.Addr, "inventory", "", "InventoryService host:port (default: the attestor's)")
	fs.StringVar(&enrollCfg.Group, "group", "", "with -enroll: put the nodes in this group (created if missing)")
	fs.StringVar(&adminCert, "admin-cert", "", "admin client certificate: for -enroll and the gateway's peer count")
	fs.StringVar(&adminKey, "admin-key", "", "admin client key")
	fs.StringVar(&adminTokenFile, "admin-token-file", "", "file holding an admin bearer token")
	config.SecretVar(fs, &adminToken, "admin-token", "admin bearer token")
	// The measurement's own flags.
	fs.StringVar(&pids, "pids", "", "server processes to measure: attestor=PID,tunnelmgr=PID,metadata=PID,postgres=PID (the postmaster)")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "inventory database, for pg_stat_database and pg_stat_statements")
	fs.StringVar(&jsonFile, "json", "", "write the report as JSON to this file")
	fs.StringVar(&svgFile, "svg", "", "draw nodes completed over time per phase as SVG into this file")
	fs.DurationVar(&cfg.SampleEvery, "sample-every", 250*time.Millisecond, "sampling period of the gateway's peers and the services' memory")
	fs.DurationVar(&cfg.StatsSettle, "stats-settle", 11*time.Second, "wait before reading pg_stat_database (Postgres flushes idle backends' statistics after 10 s)")
	if err := config.Parse(fs, "STORM", args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stderr, "storm: %v\n", err)
		return ExitError
	}
	logger, err := logging.New(stderr, logCfg.Level, logCfg.Format)
	if err == nil {
		s.NodeLogger, err = logging.New(stderr, nodeLogLevel, logCfg.Format)
	}
	if err != nil {
		fmt.Fprintf(stderr, "storm: %v\n", err)
		return ExitError
	}
	cfg.Logger, s.Logger = logger, logger
	cfg.Command = append([]string{"storm"}, args...)
	bad := func(err error) int {
		logger.Error("bad configuration", "err", err)
		return ExitError
	}
	if cfg.PIDs, err = ParsePIDs(pids); err != nil {
		return bad(err)
	}
	s.AKAlgorithm = nodeattest.Algorithm(ak)
	if s.TLS, err = pki.NodeClientTLS(caFile); err != nil {
		return bad(err)
	}
	s.TLS.ServerName = serverName
	if adminTokenFile != "" {
		if adminToken, err = config.ReadSecretFile(adminTokenFile); err != nil {
			return bad(err)
		}
	}
	if adminCert != "" || adminKey != "" || adminToken != "" {
		if cfg.AdminTLS, err = adminTLS(caFile, adminCert, adminKey); err != nil {
			return bad(err)
		}
		cfg.AdminTLS.ServerName = serverName
		cfg.AdminToken = adminToken
	}
	if doEnroll {
		if cfg.AdminTLS == nil {
			return bad(errors.New("-enroll needs -admin-cert and -admin-key, or an admin token"))
		}
		enrollCfg.TLS, enrollCfg.Token = cfg.AdminTLS, adminToken
		s.Enroll = &enrollCfg
	}

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

func adminTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return pki.NodeClientTLS(caFile) // a token authenticates
	}
	return pki.AdminClientTLS(caFile, certFile, keyFile)
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
