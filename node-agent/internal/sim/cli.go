package sim

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

	"github.com/attestboot/attestboot/services/config"
	"github.com/attestboot/attestboot/services/logging"
	"github.com/attestboot/attestboot/services/nodeattest"
	"github.com/attestboot/attestboot/services/pki"
)

// Exit codes of the nodesim command.
const (
	ExitOK          = 0 // every node booted
	ExitNodesFailed = 1 // the simulation ran and some nodes failed (see the report)
	ExitError       = 2 // bad configuration, or the simulation could not run
)

// Main is the nodesim command: flags (or NODESIM_* environment variables) into a Config, Run,
// the report as text on stdout and, with -json, as JSON in a file. args exclude the program
// name. Run it inside a network namespace or host that reaches the services and the gateway's
// WireGuard endpoint: the netstack ends' UDP sockets are this process's.
func Main(args []string, stdout, stderr io.Writer) int {
	var (
		cfg                        Config
		logCfg                     logging.Config
		nodeLogLevel               string
		caFile, serverName, ak     string
		jsonFile                   string
		table                      bool
		doEnroll                   bool
		enrollCfg                  Enroll
		adminCert, adminKey        string
		adminToken, adminTokenFile string
	)
	fs := flag.NewFlagSet("nodesim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	logCfg.RegisterFlags(fs)
	fs.StringVar(&nodeLogLevel, "node-log-level", "error", "log level of the simulated agents: debug, info, warn or error")
	fs.IntVar(&cfg.Nodes, "nodes", 10, "number of simulated nodes")
	fs.Float64Var(&cfg.Rate, "rate", 0, "arrivals per second (0: all at once)")
	fs.StringVar(&cfg.Prefix, "prefix", "sim", "node id prefix; ids are the prefix and a five-digit number (sim00001)")
	fs.IntVar(&cfg.First, "first", 1, "number of the first node")
	fs.StringVar(&cfg.Attestor, "attestor", "", "attestor host:port")
	fs.StringVar(&cfg.TunnelManager, "tunnelmgr", "", "tunnel manager host:port")
	fs.StringVar(&caFile, "ca", "/etc/attestboot/ca.pem", "CA bundle the services' certificates chain to")
	fs.StringVar(&serverName, "server-name", "", "name to verify in the services' certificates (default: the host of each address)")
	fs.StringVar(&ak, "ak", string(nodeattest.ECDSA), "attestation key algorithm: ecdsa or rsa")
	fs.DurationVar(&cfg.Deadline, "deadline", 5*time.Minute, "deadline of each node's boot")
	fs.StringVar(&cfg.TPMCache, "tpm-cache", DefaultTPMCache(), "swtpm cache: TPMs are manufactured once into it and reused by later runs")
	fs.IntVar(&cfg.TPMFirst, "tpm-first", 0, "cache index of the first node's TPM (node i runs TPM tpm-first+i)")
	fs.StringVar(&cfg.WorkDir, "work-dir", os.TempDir(), "where the nodes' temporary seed directories go")
	fs.StringVar(&jsonFile, "json", "", "also write the report as JSON to this file")
	fs.BoolVar(&table, "table", false, "also print one row per node (state, attest, tunnel, fetch and total ms)")
	fs.BoolVar(&doEnroll, "enroll", false, "create and enroll the nodes (by EK hash) through the InventoryService first")
	fs.StringVar(&enrollCfg.Addr, "inventory", "", "InventoryService host:port (default: the attestor's)")
	fs.StringVar(&enrollCfg.Group, "group", "", "with -enroll: put the nodes in this group (created if missing)")
	fs.StringVar(&adminCert, "admin-cert", "", "with -enroll: admin client certificate")
	fs.StringVar(&adminKey, "admin-key", "", "with -enroll: admin client key")
	fs.StringVar(&adminTokenFile, "admin-token-file", "", "with -enroll: file holding the admin bearer token")
	config.SecretVar(fs, &adminToken, "admin-token", "with -enroll: admin bearer token")
	if err := config.Parse(fs, "NODESIM", args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stderr, "nodesim: %v\n", err)
		return ExitError
	}
	logger, err := logging.New(stderr, logCfg.Level, logCfg.Format)
	if err == nil {
		cfg.NodeLogger, err = logging.New(stderr, nodeLogLevel, logCfg.Format)
	}
	if err != nil {
		fmt.Fprintf(stderr, "nodesim: %v\n", err)
		return ExitError
	}
	cfg.Logger = logger
	cfg.AKAlgorithm = nodeattest.Algorithm(ak)
	if cfg.TLS, err = pki.NodeClientTLS(caFile); err != nil {
		logger.Error("bad configuration", "err", err)
		return ExitError
	}
	cfg.TLS.ServerName = serverName
	if doEnroll {
		if enrollCfg.TLS, err = adminTLS(caFile, adminCert, adminKey); err != nil {
			logger.Error("bad configuration", "err", err)
			return ExitError
		}
		enrollCfg.TLS.ServerName = serverName
		if adminTokenFile != "" {
			if adminToken, err = config.ReadSecretFile(adminTokenFile); err != nil {
				logger.Error("bad configuration", "err", err)
				return ExitError
			}
		}
		enrollCfg.Token = adminToken
		cfg.Enroll = &enrollCfg
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg)
	if err != nil {
		logger.Error("simulation failed", "err", err)
		return ExitError
	}
	if table {
		if err := rep.WriteTable(stdout); err != nil {
			fmt.Fprintf(stderr, "nodesim: %v\n", err)
			return ExitError
		}
		fmt.Fprintln(stdout)
	}
	if err := rep.WriteText(stdout); err != nil {
		logger.Error("write report", "err", err)
		return ExitError
	}
	if jsonFile != "" {
		if err := writeJSONFile(jsonFile, &rep); err != nil {
			logger.Error("write JSON report", "err", err)
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
		return pki.NodeClientTLS(caFile) // the token authenticates
	}
	return pki.AdminClientTLS(caFile, certFile, keyFile)
}

func writeJSONFile(path string, rep *Report) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".nodesim-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := rep.WriteJSON(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// The report holds no secret; CreateTemp's 0600 would keep it from whoever compares runs.
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
