// Package nodeagent is the node-agent command: `node-agent boot` personalizes a diskless node
// once per boot (see internal/agent), configured by flags or NODE_AGENT_* environment variables
// (a systemd EnvironmentFile is its config file).
package nodeagent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/attestboot/attestboot/node-agent/internal/agent"
	"github.com/attestboot/attestboot/node-agent/internal/wglocal"
	"github.com/attestboot/attestboot/services/config"
	"github.com/attestboot/attestboot/services/logging"
	"github.com/attestboot/attestboot/services/nodeattest"
	"github.com/attestboot/attestboot/services/pki"
)

// Main runs the command with args (without the program name) and returns its exit code.
func Main(args []string, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "boot" {
		fmt.Fprintln(stderr, "usage: node-agent boot [flags]   (node-agent boot -h lists them)")
		return int(agent.ClassConfig)
	}
	var (
		cfg                               agent.Config
		logCfg                            logging.Config
		caFile, serverName, mode, command string
		ak, phoneHome                     string
	)
	fs := flag.NewFlagSet("node-agent boot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	logCfg.RegisterFlags(fs)
	fs.StringVar(&cfg.NodeID, "node-id", "", "node id as enrolled (default: attestboot.node= on the kernel command line)")
	fs.StringVar(&cfg.TPM, "tpm", "/dev/tpmrm0", "TPM: /dev/tpmrm0, swtpm:HOST:PORT or unix:PATH")
	fs.StringVar(&ak, "ak", string(nodeattest.ECDSA), "attestation key algorithm: ecdsa or rsa")
	fs.StringVar(&cfg.Attestor, "attestor", "", "attestor host:port")
	fs.StringVar(&cfg.TunnelManager, "tunnelmgr", "", "tunnel manager host:port")
	fs.StringVar(&caFile, "ca", "/etc/attestboot/ca.pem", "CA bundle the services' certificates chain to (in the image)")
	fs.StringVar(&serverName, "server-name", "", "name to verify in the services' certificates (default: the host of each address)")
	fs.StringVar(&mode, "wireguard", string(wglocal.TUN), "local WireGuard end: tun (embedded wireguard-go), kernel, or netstack")
	fs.StringVar(&cfg.Interface, "interface", "attestboot", "WireGuard interface name (tun, kernel)")
	fs.StringVar(&cfg.Seed.Dir, "seed-dir", "/var/lib/cloud/seed/nocloud-net", "NoCloud seed directory (tmpfs)")
	fs.StringVar(&command, "cloud-init", "", "command running the cloud-init stages, {seed} is the seed dir (empty: left to the init system)")
	fs.StringVar(&phoneHome, "phone-home", string(agent.PhoneHomeAuto), "who phones home: auto, agent or cloud-init")
	fs.StringVar(&cfg.Seed.Root, "root", "/", "root of the configured system (SSH host keys, purge)")
	fs.BoolVar(&cfg.Seed.Purge, "purge", true, "after the final stage, remove cloud-init's copies of secret-bearing data and its logs")
	fs.DurationVar(&cfg.Deadline, "deadline", 5*time.Minute, "deadline of the whole boot")
	if err := config.Parse(fs, "NODE_AGENT", args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "node-agent: %v\n", err)
		return int(agent.ClassConfig)
	}
	logger, err := logging.New(stderr, logCfg.Level, logCfg.Format)
	if err != nil {
		fmt.Fprintf(stderr, "node-agent: %v\n", err)
		return int(agent.ClassConfig)
	}
	if cfg.NodeID == "" {
		cfg.NodeID = nodeIDFromCmdline("/proc/cmdline")
	}
	cfg.AKAlgorithm = nodeattest.Algorithm(ak)
	cfg.Seed.PhoneHome = agent.PhoneHome(phoneHome)
	if command != "" {
		cfg.Seed.Command = strings.Fields(command)
	}
	if cfg.WireGuard, err = wglocal.ParseMode(mode); err != nil {
		logger.Error("bad configuration", "err", err)
		return int(agent.ClassConfig)
	}
	if cfg.TLS, err = pki.NodeClientTLS(caFile); err != nil {
		logger.Error("bad configuration", "err", err)
		return int(agent.ClassConfig)
	}
	cfg.TLS.ServerName = serverName

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	res, err := agent.Boot(ctx, cfg, logger)
	if err != nil {
		c := agent.ClassOf(err)
		logger.Error("boot failed", "class", c.String(), "exit_code", c.ExitCode(), "err", err)
		return c.ExitCode()
	}
	logger.Info("boot complete", "tunnel", res.TunnelID, "duration", time.Since(start).Round(time.Millisecond))
	return 0
}

// nodeIDFromCmdline reads attestboot.node=ID from the kernel command line, the usual way to
// tell a diskless node which node it is meant to be (the TPM then proves it).
func nodeIDFromCmdline(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, f := range strings.Fields(string(b)) {
		if id, ok := strings.CutPrefix(f, "attestboot.node="); ok {
			return id
		}
	}
	return ""
}
