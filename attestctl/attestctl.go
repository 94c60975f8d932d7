// Package attestctl is attestboot's admin command line: it enrolls nodes and their TPM
// endorsement keys, manages groups, cloud-init data and secrets, and shows tunnels, events and
// the progress of a boot storm, all through the services' admin gRPC APIs over TLS.
//
// Output is an aligned table for people and one JSON document (protojson for API messages)
// with -json; exit codes are stable for scripts (see ExitOK and the rest, and `attestctl help`).
package attestctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/attestboot/attestboot/services/config"
)

// Exit codes scripts can rely on.
const (
	ExitOK          = 0 // success
	ExitError       = 1 // any other error
	ExitUsage       = 2 // bad command line
	ExitNotFound    = 3 // the node, group, scope, secret or tunnel does not exist
	ExitRefused     = 4 // no or wrong admin credential (Unauthenticated, PermissionDenied)
	ExitConflict    = 5 // exists already or in the wrong state (AlreadyExists, FailedPrecondition)
	ExitUnavailable = 6 // a service could not be reached or did not answer in time
)

// EnvPrefix prefixes the environment variables that set global flags (ATTESTCTL_ATTESTOR for
// -attestor). The admin token is read only from TokenEnv.
const EnvPrefix = "ATTESTCTL"

// TokenEnv holds the admin bearer token. There is no flag: a token on the command line is
// visible to every user through ps and lands in shell history.
const TokenEnv = "ATTESTCTL_TOKEN"

// DefaultStateDir is where the services keep their development PKI (`make demo`).
const DefaultStateDir = "/var/lib/attestboot/pki"

// Env is what a run of the command line talks to. Main fills it from the process; tests give
// their own buffers and environment.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// LookupEnv reads the environment (os.LookupEnv in Main).
	LookupEnv func(string) (string, bool)
	// Dial, when set, opens connections to services instead of the default dialer; tests use it
	// to reach services inside network namespaces.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Config is the global configuration: where the services are and how to authenticate.
type Config struct {
	Attestor  string // host:port of the attestor (InventoryService)
	Tunnelmgr string // host:port of tunnelmgr (TunnelAdminService)
	Metadata  string // host:port of metadata (MetadataService)
	StateDir  string // development PKI directory; default for CA, Cert and Key
	CA        string // CA certificates (PEM) that verify the servers
	Cert      string // admin client certificate (PEM)
	Key       string // admin client key (PEM)
	Token     string // admin bearer token, from TokenEnv only
	JSON      bool
	Timeout   time.Duration
}

func defaultConfig() Config {
	return Config{
		Attestor:  "localhost:7443",
		Tunnelmgr: "localhost:7444",
		Metadata:  "localhost:7445",
		StateDir:  DefaultStateDir,
		Timeout:   30 * time.Second,
	}
}

func (c *Config) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Attestor, "attestor", c.Attestor, "attestor address `host:port` (inventory: nodes, groups, enrollments, events)")
	fs.StringVar(&c.Tunnelmgr, "tunnelmgr", c.Tunnelmgr, "tunnelmgr address `host:port` (tunnels, gateway)")
	fs.StringVar(&c.Metadata, "metadata", c.Metadata, "metadata address `host:port` (cloud-init, secrets, render, known-hosts)")
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "development PKI `dir`: default for -ca, -cert and -key (ca.pem, admin.pem, admin-key.pem)")
	fs.StringVar(&c.CA, "ca", c.CA, "CA certificates `file` (PEM) of the servers (default <state-dir>/ca.pem)")
	fs.StringVar(&c.Cert, "cert", c.Cert, "admin client certificate `file` (PEM) (default <state-dir>/admin.pem when it exists)")
	fs.StringVar(&c.Key, "key", c.Key, "admin client key `file` (PEM) (default <state-dir>/admin-key.pem)")
	fs.BoolVar(&c.JSON, "json", c.JSON, "print one JSON document instead of a table")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "`timeout` of each call")
}

func (c Config) validate() error {
	switch {
	case c.Attestor == "" || c.Tunnelmgr == "" || c.Metadata == "":
		return errors.New("service addresses must not be empty")
	case c.Timeout <= 0:
		return errors.New("-timeout must be positive")
	case (c.Cert == "") != (c.Key == ""):
		return errors.New("-cert and -key go together")
	}
	return nil
}

// Main runs the command line with the process's arguments (without the program name),
// standard streams and environment, and returns the exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, LookupEnv: os.LookupEnv})
}

// Run runs one command and returns its exit code. Errors go to env.Stderr with what to do
// about them.
func Run(ctx context.Context, args []string, env Env) int {
	if env.LookupEnv == nil {
		env.LookupEnv = func(string) (string, bool) { return "", false }
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	a := &app{ctx: ctx, env: env, cfg: defaultConfig(), conns: map[string]*grpc.ClientConn{}}
	defer a.close()
	err := a.run(args)
	if errors.Is(err, errHelpShown) {
		return ExitOK
	}
	return a.report(err)
}

// app is one run: the configuration, the streams and the connections opened so far.
type app struct {
	ctx   context.Context
	env   Env
	cfg   Config
	conns map[string]*grpc.ClientConn
	creds *credentials
}

func (a *app) run(args []string) error {
	fs := flag.NewFlagSet("attestctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	a.cfg.registerFlags(fs)
	for _, arg := range args {
		if arg == "--" {
			break
		}
		if name := strings.TrimLeft(arg, "-"); strings.HasPrefix(arg, "-") && (name == "token" || strings.HasPrefix(name, "token=")) {
			return usagef("there is no -token flag: a token on the command line is visible to every user; set %s", TokenEnv)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.help(nil)
			return nil
		}
		return usagef("%v (see `attestctl help`)", err)
	}
	if err := config.ApplyEnv(fs, EnvPrefix, a.env.LookupEnv); err != nil {
		return usagef("%v", err)
	}
	a.cfg.Token, _ = a.env.LookupEnv(TokenEnv)
	if err := a.cfg.validate(); err != nil {
		return usagef("%v", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		a.help(nil)
		return usagef("no command given")
	}
	name, rest := rest[0], rest[1:]
	for _, c := range commandList() {
		if c.name == name {
			return c.run(a, rest)
		}
	}
	if name == "help" {
		a.help(rest)
		return nil
	}
	return usagef("unknown command %q (see `attestctl help`)", name)
}

// command is one top-level command; groups dispatch their own subcommands.
type command struct {
	name    string
	usage   string
	summary string
	run     func(a *app, args []string) error
}

// commandList returns the top-level commands (a function, not a variable, so nothing is shared
// between runs).
func commandList() []command {
	return []command{
		{"nodes", "nodes list|get|create|update|disable|enable|delete ...", "the inventory's nodes", runNodes},
		{"enroll", "enroll NODE (--ek-cert FILE | --ek-pub FILE | --ek-sha256 HEX | --tpm ADDR) | enroll --csv FILE", "bind nodes to their TPM's endorsement key", runEnroll},
		{"ek", "ek read [--tpm ADDR] [--pem]", "read a local TPM's endorsement key", runEK},
		{"enrollment", "enrollment get NODE | enrollment delete NODE --reason TEXT", "a node's EK binding", runEnrollment},
		{"groups", "groups list|get|create|update|delete|add|remove|pcr-policy set ...", "groups, membership and PCR policies", runGroups},
		{"cloud-init", "cloud-init get|set|delete SCOPE [--user-data F --vendor-data F --network-config F --meta-data F]", "cloud-init data of a scope (defaults | group:NAME | node:ID)", runCloudInit},
		{"secrets", "secrets put SCOPE NAME [--from-file F] | secrets list [SCOPE] | secrets delete SCOPE NAME", "secrets rendered into cloud-init (values from stdin or a file only)", runSecrets},
		{"render", "render NODE", "preview a node's cloud-init documents, secrets redacted", runRender},
		{"tunnels", "tunnels list [--node ID --state S] | tunnels close (--node ID | --id ID) --reason R", "WireGuard tunnels", runTunnels},
		{"gateway", "gateway status [--gateway NAME]", "the WireGuard gateway and its peers", runGateway},
		{"events", "events [--node ID --kind K --since T --until T] [--follow]", "the event log", runEvents},
		{"known-hosts", "known-hosts [--node ID]", "ssh known_hosts lines of the host keys nodes reported", runKnownHosts},
		{"watch", "watch [--since D] [--interval D] [--once]", "live counts of nodes by boot state", runWatch},
	}
}

const helpFooter = `
Global flags (before the command; each also settable as ATTESTCTL_<FLAG>, e.g. ATTESTCTL_ATTESTOR):
%s
The admin credential is the client certificate (-cert/-key, by default admin.pem and
admin-key.pem in -state-dir) or a bearer token in the environment variable ATTESTCTL_TOKEN.
There is no token flag, and secret values are read only from stdin or a file.

Most commands also take -json after the command name. -json prints one JSON document (API
messages in protojson); events --follow and watch print one JSON document per line.

Exit codes:
  0  ok
  1  error
  2  usage: bad command line
  3  not found
  4  refused: no or wrong admin credential (Unauthenticated, PermissionDenied)
  5  conflict: exists already or wrong state (AlreadyExists, FailedPrecondition)
  6  unavailable: a service could not be reached or timed out
`

func (a *app) help(topic []string) {
	w := a.env.Stdout
	fmt.Fprintf(w, "attestctl — the admin command line of attestboot\n\nusage: attestctl [global flags] <command> ...\n\nCommands:\n")
	for _, c := range commandList() {
		if len(topic) > 0 && topic[0] != c.name {
			continue
		}
		fmt.Fprintf(w, "  %-12s %s\n      %s\n", c.name, c.summary, c.usage)
	}
	var flags strings.Builder
	fs := flag.NewFlagSet("attestctl", flag.ContinueOnError)
	cfg := defaultConfig()
	cfg.registerFlags(fs)
	fs.SetOutput(&flags)
	fs.PrintDefaults()
	fmt.Fprintf(w, helpFooter, flags.String())
}

func (a *app) close() {
	for _, c := range a.conns {
		c.Close()
	}
}

// callCtx bounds one call by -timeout.
func (a *app) callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(a.ctx, a.cfg.Timeout)
}
