package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// PhoneHome says who phones home.
type PhoneHome string

// Phone-home modes.
const (
	// PhoneHomeAuto: cloud-init's phone_home module (the service's vendor-data configures it);
	// the agent phones home itself if the tunnel is still open shortly after cloud-init ran.
	PhoneHomeAuto PhoneHome = "auto"
	// PhoneHomeAgent: the agent always phones home (cloud-init left to the init system).
	PhoneHomeAgent PhoneHome = "agent"
	// PhoneHomeCloudInit: only cloud-init does; the agent just waits for the tunnel to close.
	PhoneHomeCloudInit PhoneHome = "cloud-init"
)

// SeedConfig is how the documents reach cloud-init and what is cleaned up afterwards.
type SeedConfig struct {
	// Dir of the NoCloud seed, on tmpfs in a diskless image; created 0700, files 0600.
	// network-config reaches cloud-init 22.4 only through such a local seed.
	Dir string
	// Command runs the cloud-init stages; "{seed}" in an argument is replaced by Dir. Empty:
	// the init system runs cloud-init from the seed, the agent only writes it.
	Command []string
	// PhoneHome mode; default auto.
	PhoneHome PhoneHome
	// Root is the root of the system cloud-init configures, for SSH host keys and purging
	// (default /).
	Root string
	// Purge removes, after the final stage, cloud-init's own copies of the secret-bearing data
	// (under /var/lib/cloud/instances/) and its logs, and the secret-bearing seed files.
	Purge bool
}

func (c *SeedConfig) validate() error {
	if c.Dir == "" {
		c.Dir = "/var/lib/cloud/seed/nocloud-net"
	}
	if c.Root == "" {
		c.Root = "/"
	}
	switch c.PhoneHome {
	case "":
		c.PhoneHome = PhoneHomeAuto
	case PhoneHomeAuto, PhoneHomeAgent, PhoneHomeCloudInit:
	default:
		return fmt.Errorf("unknown phone-home mode %q", c.PhoneHome)
	}
	return nil
}

type seed struct {
	cfg    SeedConfig
	logger *slog.Logger
}

func newSeed(cfg SeedConfig, logger *slog.Logger) *seed { return &seed{cfg: cfg, logger: logger} }

// write lays out the seed: meta-data, user-data, vendor-data, network-config.
func (s *seed) write(d Documents) error {
	if err := os.MkdirAll(s.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("seed dir: %w", err)
	}
	if err := os.Chmod(s.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("seed dir: %w", err)
	}
	for name, b := range map[string][]byte{
		"meta-data": d.MetaData, "user-data": d.UserData, "vendor-data": d.VendorData, "network-config": d.NetworkConfig,
	} {
		if name == "network-config" && len(b) == 0 {
			continue // an empty network-config would override cloud-init's fallback
		}
		if err := writeFile0600(filepath.Join(s.cfg.Dir, name), b); err != nil {
			return err
		}
	}
	return nil
}

func writeFile0600(path string, b []byte) error {
	// O_EXCL after removal: never write secrets into a file someone else prepared.
	_ = os.Remove(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func (s *seed) runCloudInit(ctx context.Context) error {
	if len(s.cfg.Command) == 0 {
		return nil
	}
	args := make([]string, len(s.cfg.Command))
	for i, a := range s.cfg.Command {
		args[i] = strings.ReplaceAll(a, "{seed}", s.cfg.Dir)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := string(out)
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		return fmt.Errorf("%s: %w\n%s", args[0], err, tail)
	}
	s.logger.Debug("cloud-init finished", "output_bytes", len(out))
	return nil
}

// cleanup removes the secret-bearing seed files and, when configured, cloud-init's copies.
func (s *seed) cleanup() {
	for _, name := range []string{"user-data", "vendor-data"} {
		if err := os.Remove(filepath.Join(s.cfg.Dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.logger.Warn("remove seed file", "file", name, "err", err)
		}
	}
	if !s.cfg.Purge {
		return
	}
	var paths []string
	for _, pattern := range []string{
		"var/lib/cloud/instances/*/user-data.txt*",
		"var/lib/cloud/instances/*/vendor-data*.txt*",
		"var/lib/cloud/instances/*/cloud-config.txt",
		"var/lib/cloud/instances/*/vendor-cloud-config.txt",
		"var/lib/cloud/instances/*/obj.pkl", // the pickled datasource holds the raw user-data
		"var/lib/cloud/instances/*/scripts",
		// A seed placed where cloud-init looks for one, when it is not Dir itself.
		"var/lib/cloud/seed/*/user-data",
		"var/lib/cloud/seed/*/vendor-data",
		"run/cloud-init/instance-data-sensitive.json",
		"var/log/cloud-init.log",
		"var/log/cloud-init-output.log",
	} {
		m, _ := filepath.Glob(filepath.Join(s.cfg.Root, pattern))
		paths = append(paths, m...)
	}
	for _, p := range paths {
		if err := os.RemoveAll(p); err != nil {
			s.logger.Warn("purge cloud-init copy", "path", p, "err", err)
		}
	}
	s.logger.Info("purged cloud-init copies of secret-bearing data", "paths", len(paths))
}
