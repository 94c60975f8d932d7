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

// Flags are the simulation's command-line flags, shared by nodesim and storm (a storm is a
// nodesim run that is also measured): RegisterFlags declares them, Config reads them once the
// flag set is parsed.
type Flags struct {
	cfg                        Config
	log                        logging.Config
	nodeLogLevel               string
	caFile, serverName, ak     string
	enroll                     bool
	enrollCfg                  Enroll
	adminCert, adminKey        string
	adminToken, adminTokenFile string
}

// RegisterFlags declares the simulation's flags on fs: the nodes, the services and their CA,
// the TPM cache, enrollment with its admin credentials, and the log levels. The caller adds
// its own flags (nodesim its report files) and parses fs.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	c := &f.cfg
	f.log.RegisterFlags(fs)
	fs.StringVar(&f.nodeLogLevel, "node-log-level", "error", "log level of the simulated agents: debug, info, warn or error")
	fs.IntVar(&c.Nodes, "nodes", 10, "number of simulated nodes")
	fs.Float64Var(&c.Rate, "rate", 0, "arrivals per second (0: all at once)")
	fs.StringVar(&c.Prefix, "prefix", "sim", "node id prefix; ids are the prefix and a five-digit number (sim00001)")
	fs.IntVar(&c.First, "first", 1, "number of the first node")
	fs.StringVar(&c.Attestor, "attestor", "", "attestor host:port")
	fs.StringVar(&c.TunnelManager, "tunnelmgr", "", "tunnel manager host:port")
	fs.StringVar(&f.caFile, "ca", "/etc/attestboot/ca.pem", "CA bundle the services' certificates chain to")
	fs.StringVar(&f.serverName, "server-name", "", "name to verify in the services' certificates (default: the host of each address)")
	fs.StringVar(&f.ak, "ak", string(nodeattest.ECDSA), "attestation key algorithm: ecdsa or rsa")
	fs.DurationVar(&c.Deadline, "deadline", 5*time.Minute, "deadline of each node's boot")
	fs.StringVar(&c.TPMKind, "tpm", TPMAuto, fmt.Sprintf("the nodes' TPMs: %s (a process each), %s (in-process software TPMs) or %s (swtpm up to %d nodes)", TPMSwtpm, TPMSoft, TPMAuto, AutoSoftAbove))
	fs.StringVar(&c.TPMCache, "tpm-cache", "", fmt.Sprintf("TPM cache: TPMs are made once into it and reused by later runs (default %s or %s)", DefaultTPMCache(TPMSwtpm), DefaultTPMCache(TPMSoft)))
	fs.IntVar(&c.TPMFirst, "tpm-first", 0, "cache index of the first node's TPM (node i runs TPM tpm-first+i)")
	fs.StringVar(&c.WorkDir, "work-dir", os.TempDir(), "where the nodes' temporary seed directories go")
	fs.BoolVar(&f.enroll, "enroll", false, "create and enroll the nodes (by EK hash) through the InventoryService first")
	fs.StringVar(&f.enrollCfg.Addr, "inventory", "", "InventoryService host:port (default: the attestor's)")
	fs.StringVar(&f.enrollCfg.Group, "group", "", "with -enroll: put the nodes in this group (created if missing)")
	fs.StringVar(&f.adminCert, "admin-cert", "", "with -enroll: admin client certificate")
	fs.StringVar(&f.adminKey, "admin-key", "", "with -enroll: admin client key")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", "", "with -enroll: file holding the admin bearer token")
	config.SecretVar(fs, &f.adminToken, "admin-token", "with -enroll: admin bearer token")
	return f
}

// Config builds the simulation's Config from the parsed flags: progress logged to w at
// -log-level, the agents' logs to w at -node-log-level, the services' TLS and, with -enroll,
// the enrollment with the admin credentials. The hooks are left unset.
func (f *Flags) Config(w io.Writer) (Config, error) {
	cfg := f.cfg
	var err error
	if cfg.Logger, err = logging.New(w, f.log.Level, f.log.Format); err != nil {
		return Config{}, err
	}
	if cfg.NodeLogger, err = logging.New(w, f.nodeLogLevel, f.log.Format); err != nil {
		return Config{}, err
	}
	cfg.AKAlgorithm = nodeattest.Algorithm(f.ak)
	if cfg.TLS, err = pki.NodeClientTLS(f.caFile); err != nil {
		return Config{}, err
	}
	cfg.TLS.ServerName = f.serverName
	if f.enroll {
		e := f.enrollCfg
		if e.TLS, e.Token, err = f.admin(); err != nil {
			return Config{}, err
		}
		cfg.Enroll = &e
	}
	return cfg, nil
}

// Admin returns the admin credentials given by -admin-cert and -admin-key, -admin-token or
// -admin-token-file: the TLS configuration (with the client certificate, if one was given)
// and the bearer token. It returns a nil configuration when no credential was given.
func (f *Flags) Admin() (*tls.Config, string, error) {
	if f.adminCert == "" && f.adminKey == "" && f.adminToken == "" && f.adminTokenFile == "" {
		return nil, "", nil
	}
	return f.admin()
}

func (f *Flags) admin() (*tls.Config, string, error) {
	token := f.adminToken
	if f.adminTokenFile != "" {
		var err error
		if token, err = config.ReadSecretFile(f.adminTokenFile); err != nil {
			return nil, "", err
		}
	}
	var (
		tlsCfg *tls.Config
		err    error
	)
	if f.adminCert == "" && f.adminKey == "" {
		tlsCfg, err = pki.NodeClientTLS(f.caFile) // the token authenticates
	} else {
		tlsCfg, err = pki.AdminClientTLS(f.caFile, f.adminCert, f.adminKey)
	}
	if err != nil {
		return nil, "", err
	}
	tlsCfg.ServerName = f.serverName
	return tlsCfg, token, nil
}

// Main is the nodesim command: flags (or NODESIM_* environment variables) into a Config, Run,
// the report as text on stdout and, with -json, as JSON in a file. args exclude the program
// name. Run it inside a network namespace or host that reaches the services and the gateway's
// WireGuard endpoint: the netstack ends' UDP sockets are this process's.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nodesim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	flags := RegisterFlags(fs)
	var (
		jsonFile string
		table    bool
	)
	// The report's outputs are nodesim's own: storm writes a report of its own.
	fs.StringVar(&jsonFile, "json", "", "also write the report as JSON to this file")
	fs.BoolVar(&table, "table", false, "also print one row per node (state, attest, tunnel, fetch and total ms)")
	if err := config.Parse(fs, "NODESIM", args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stderr, "nodesim: %v\n", err)
		return ExitError
	}
	cfg, err := flags.Config(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "nodesim: bad configuration: %v\n", err)
		return ExitError
	}
	logger := cfg.Logger

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
