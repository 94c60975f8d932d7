package sim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/attestboot/attestboot/node-agent/internal/agent"
	"github.com/attestboot/attestboot/node-agent/internal/wglocal"
	"github.com/attestboot/attestboot/services/nodeattest"
	"github.com/attestboot/attestboot/services/softtpm"
	"github.com/attestboot/attestboot/services/tpmtest"
)

// Config of a simulation.
type Config struct {
	// Nodes is how many nodes boot.
	Nodes int
	// Prefix and First name the nodes: Prefix followed by the five-digit number First+i
	// (sim00001, sim00002, ...). Defaults "sim" and 1.
	Prefix string
	First  int
	// Rate is the arrival rate in nodes per second; 0 starts every node at once.
	Rate float64

	// Attestor and TunnelManager are host:port of the services; TLS verifies them.
	Attestor      string
	TunnelManager string
	TLS           *tls.Config
	// AKAlgorithm of the nodes' attestation keys; default ECDSA.
	AKAlgorithm nodeattest.Algorithm
	// Deadline bounds each node's boot, as node-agent's -deadline; default 5 min.
	Deadline time.Duration
	// Backoff of the nodes' retries (the agent's defaults when zero).
	Backoff agent.Backoff

	// TPMKind is what the nodes' TPMs are: TPMSwtpm, TPMSoft or TPMAuto (the default: swtpm
	// up to AutoSoftAbove nodes, software TPMs beyond).
	TPMKind string
	// TPMCache is the cache directory of the TPMs (tpmtest.Pool's for swtpm, softtpm.Pool's
	// for software TPMs); default DefaultTPMCache(kind).
	TPMCache string
	// TPMFirst is the cache index of the first node's TPM: node i always runs TPM TPMFirst+i,
	// so a node keeps its EK from run to run and one enrollment serves every later run.
	TPMFirst int
	// WorkDir is where the nodes' seed directories go (a temporary directory inside it,
	// removed at the end); default os.TempDir().
	WorkDir string

	// Enroll, when set, creates and enrolls the nodes before they boot.
	Enroll *Enroll

	// Logger receives the simulation's progress (default: discarded); NodeLogger the agents'
	// logs, each tagged with its node (default: discarded).
	Logger     *slog.Logger
	NodeLogger *slog.Logger

	// OnStorm, if set, is called right before the first node starts booting: the TPMs are
	// running and the nodes enrolled. OnDone, if set, is called right after the last node
	// finished, before the TPMs are stopped; it is called whenever OnStorm was, whatever the
	// nodes' outcome. The simulation waits for them, and their time counts in no figure of
	// the report: a measurement (internal/storm) takes its readings there so that the TPMs'
	// start, the enrollment and the teardown do not count as the storm's.
	OnStorm func()
	OnDone  func()
}

// TPM kinds of the simulated nodes.
const (
	// TPMSwtpm runs one swtpm process per node (services/tpmtest): the real TPM 2.0 code
	// (libtpms), at about 15 ms of CPU per boot and a process per node.
	TPMSwtpm = "swtpm"
	// TPMSoft runs in-process software TPMs (services/softtpm): exactly the commands the
	// flow uses, at about 2 ms per boot and no process, for storms beyond a thousand nodes.
	TPMSoft = "soft"
	// TPMAuto is swtpm up to AutoSoftAbove nodes and software TPMs beyond.
	TPMAuto = "auto"
)

// AutoSoftAbove is the storm size beyond which TPMAuto chooses software TPMs: a swtpm process
// per node stops being practical (and their CPU would be most of what is measured).
const AutoSoftAbove = 1000

// DefaultTPMCache is nodesim's default cache of a TPM kind: separate from the tests' caches,
// whose TPMs the tests start by any free index, so that nodesim's fixed node-to-TPM mapping
// never finds its index taken by a test.
func DefaultTPMCache(kind string) string {
	if kind == TPMSoft {
		return filepath.Join(os.TempDir(), "attestboot-nodesim-softtpm")
	}
	return filepath.Join(os.TempDir(), "attestboot-nodesim-swtpm")
}

func (c *Config) validate() error {
	if c.Prefix == "" {
		c.Prefix = "sim"
	}
	if c.First == 0 {
		c.First = 1
	}
	if c.AKAlgorithm == "" {
		c.AKAlgorithm = nodeattest.ECDSA
	}
	if c.Deadline == 0 {
		c.Deadline = 5 * time.Minute
	}
	if c.TPMKind == "" {
		c.TPMKind = TPMAuto
	}
	if c.TPMKind == TPMAuto {
		c.TPMKind = TPMSwtpm
		if c.Nodes > AutoSoftAbove {
			c.TPMKind = TPMSoft
		}
	}
	if c.TPMCache == "" {
		c.TPMCache = DefaultTPMCache(c.TPMKind)
	}
	if c.WorkDir == "" {
		c.WorkDir = os.TempDir()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.NodeLogger == nil {
		c.NodeLogger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.Nodes < 1:
		return errors.New("sim: at least one node")
	case c.TPMKind != TPMSwtpm && c.TPMKind != TPMSoft:
		return fmt.Errorf("sim: unknown TPM kind %q (want %s, %s or %s)", c.TPMKind, TPMSwtpm, TPMSoft, TPMAuto)
	case c.Rate < 0:
		return errors.New("sim: negative rate")
	case c.First < 0 || c.TPMFirst < 0:
		return errors.New("sim: negative node number or TPM index")
	case c.Attestor == "" || c.TunnelManager == "":
		return errors.New("sim: attestor and tunnel manager addresses are required")
	case c.TLS == nil:
		return errors.New("sim: no TLS configuration (CA bundle)")
	case c.Deadline < 0:
		return errors.New("sim: negative deadline")
	}
	if c.Enroll != nil {
		return c.Enroll.validate(c)
	}
	return nil
}

// NodeID is the id of the node numbered n.
func (c *Config) NodeID(n int) string { return fmt.Sprintf("%s%05d", c.Prefix, n) }

// node is one simulated machine.
type node struct {
	id  string
	tpm nodeTPM
	dir string
}

// nodeTPM is a node's TPM, of either kind.
type nodeTPM interface {
	Index() int
	EKSHA256() [32]byte
}

// swtpm is a node's swtpm process, reached by its address.
type swtpm struct{ *tpmtest.TPM }

// softTPM is a node's in-process TPM, opened through OpenTPM.
type softTPM struct{ *softtpm.TPM }

// Run makes the nodes' TPMs ready (see startTPMs; missing ones are made into the cache),
// enrolls the nodes if asked, lets them arrive at the configured rate, runs the agent's boot for
// each with a netstack WireGuard end, and returns what it measured. The report is complete
// whatever the nodes' outcome; the error is for a simulation that could not run.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.validate(); err != nil {
		return Report{}, err
	}
	rep := Report{TPMKind: cfg.TPMKind, Rate: cfg.Rate}
	work, err := os.MkdirTemp(cfg.WorkDir, "nodesim-")
	if err != nil {
		return rep, fmt.Errorf("sim: %w", err)
	}
	defer os.RemoveAll(work)

	start := time.Now()
	nodes, stop, err := startTPMs(ctx, &cfg, work)
	defer stop()
	if err != nil {
		return rep, err
	}
	rep.Prepare = Duration(time.Since(start))
	cfg.Logger.Info("TPMs running", "nodes", cfg.Nodes, "took", time.Duration(rep.Prepare).Round(time.Millisecond))

	if cfg.Enroll != nil {
		start = time.Now()
		if err := enroll(ctx, &cfg, nodes); err != nil {
			return rep, err
		}
		rep.Enroll = Duration(time.Since(start))
		cfg.Logger.Info("nodes enrolled", "nodes", cfg.Nodes, "took", time.Duration(rep.Enroll).Round(time.Millisecond))
	}

	rep.Results = storm(ctx, &cfg, nodes, &rep.Wall)
	rep.summarize()
	cfg.Logger.Info("boot storm done", "succeeded", rep.Succeeded, "failed", rep.Failed,
		"wall", time.Duration(rep.Wall).Round(time.Millisecond), "nodes_per_second", rep.Throughput)
	return rep, nil
}

// startTPMs makes the nodes' TPMs ready: software TPMs loaded (made into the cache first if
// missing), or swtpm processes started. stop stops those that started, whatever happened.
func startTPMs(ctx context.Context, cfg *Config, work string) ([]*node, func(), error) {
	if cfg.TPMKind == TPMSoft {
		nodes, err := loadSoftTPMs(ctx, cfg, work)
		return nodes, func() {}, err
	}
	return startSwtpms(ctx, cfg, work)
}

// loadSoftTPMs loads the nodes' software TPMs, making the missing ones (an RSA key each, about
// 70 ms) in parallel first.
func loadSoftTPMs(ctx context.Context, cfg *Config, work string) ([]*node, error) {
	pool, err := softtpm.NewPool(softtpm.Config{CacheDir: cfg.TPMCache, Logger: cfg.Logger.With("part", "softtpm")})
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	if err := pool.Prepare(ctx, cfg.TPMFirst+cfg.Nodes); err != nil {
		return nil, fmt.Errorf("sim: make software TPMs: %w", err)
	}
	nodes := make([]*node, cfg.Nodes)
	for i := range nodes {
		id := cfg.NodeID(cfg.First + i)
		t, err := pool.TPM(cfg.TPMFirst + i)
		if err != nil {
			return nil, fmt.Errorf("sim: TPM of node %s: %w", id, err)
		}
		nodes[i] = &node{id: id, tpm: softTPM{t}, dir: filepath.Join(work, id)}
	}
	return nodes, nil
}

// startSwtpms starts one swtpm per node, a few at a time (each start copies a state and
// spawns a process).
func startSwtpms(ctx context.Context, cfg *Config, work string) ([]*node, func(), error) {
	nodes := make([]*node, cfg.Nodes)
	stop := func() {
		for _, n := range nodes {
			if t, ok := n.swtpm(); ok {
				if err := t.Stop(); err != nil {
					cfg.Logger.Warn("stop swtpm", "node", n.id, "err", err)
				}
			}
		}
	}
	pool, err := tpmtest.NewPool(tpmtest.Config{CacheDir: cfg.TPMCache, Logger: cfg.Logger.With("part", "swtpm")})
	if err != nil {
		return nodes, stop, fmt.Errorf("sim: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range nodes {
		id := cfg.NodeID(cfg.First + i)
		g.Go(func() error {
			tpm, err := pool.Start(gctx, cfg.TPMFirst+i)
			if errors.Is(err, tpmtest.ErrBusy) {
				return fmt.Errorf("sim: TPM %d of node %s is running in another process (another nodesim on this cache? use -tpm-first): %w", cfg.TPMFirst+i, id, err)
			}
			if err != nil {
				return fmt.Errorf("sim: TPM of node %s: %w", id, err)
			}
			nodes[i] = &node{id: id, tpm: swtpm{tpm}, dir: filepath.Join(work, id)}
			return nil
		})
	}
	return nodes, stop, g.Wait()
}

// storm boots the nodes as they arrive and waits for all of them. wall is set to the time
// from the first arrival to the last node's end.
func storm(ctx context.Context, cfg *Config, nodes []*node, wall *Duration) []NodeResult {
	results := make([]NodeResult, len(nodes))
	var wg sync.WaitGroup
	if cfg.OnStorm != nil {
		cfg.OnStorm()
	}
	start := time.Now()
	for i, n := range nodes {
		if cfg.Rate > 0 {
			at := start.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))
			select {
			case <-ctx.Done():
			case <-time.After(time.Until(at)):
			}
		}
		if err := ctx.Err(); err != nil {
			results[i] = NodeResult{ID: n.id, TPMIndex: n.tpm.Index(), Started: Duration(time.Since(start))}
			failedResult(&results[i], fmt.Errorf("not started: %w", err))
			continue
		}
		wg.Go(func() { results[i] = bootOne(ctx, cfg, n, time.Since(start)) })
	}
	wg.Wait()
	*wall = Duration(time.Since(start))
	if cfg.OnDone != nil {
		cfg.OnDone()
	}
	return results
}

// bootOne is one node's boot through the agent's own code: netstack WireGuard, no cloud-init
// run, the agent phoning home itself, and a seed directory of its own.
func bootOne(ctx context.Context, cfg *Config, n *node, arrived time.Duration) NodeResult {
	r := NodeResult{ID: n.id, TPMIndex: n.tpm.Index(), Started: Duration(arrived)}
	acfg := agent.Config{
		NodeID:        n.id,
		AKAlgorithm:   cfg.AKAlgorithm,
		Attestor:      cfg.Attestor,
		TunnelManager: cfg.TunnelManager,
		TLS:           cfg.TLS,
		WireGuard:     wglocal.Netstack,
		Seed: agent.SeedConfig{
			Dir:       filepath.Join(n.dir, "seed"),
			Root:      filepath.Join(n.dir, "root"),
			PhoneHome: agent.PhoneHomeAgent,
			Purge:     false, // nothing of cloud-init's runs here
		},
		Deadline: cfg.Deadline,
		Backoff:  cfg.Backoff,
	}
	switch t := n.tpm.(type) {
	case swtpm:
		acfg.TPM = t.Addr()
	case softTPM:
		acfg.OpenTPM = t.Open
	}
	start := time.Now()
	res, err := agent.Boot(ctx, acfg, cfg.NodeLogger)
	r.Total = Duration(time.Since(start))
	r.TunnelID = res.TunnelID
	for _, p := range res.Phases {
		r.Phases = append(r.Phases, Phase{Name: p.Name, Duration: Duration(p.Duration)})
	}
	if err != nil {
		failedResult(&r, err)
	} else {
		r.OK = true
	}
	// The seed files are of no use once the node is through; thousands of nodes need not
	// keep theirs until the end.
	if err := os.RemoveAll(n.dir); err != nil {
		cfg.Logger.Warn("remove node directory", "node", n.id, "err", err)
	}
	return r
}

// swtpm returns the node's swtpm process, if it has one.
func (n *node) swtpm() (swtpm, bool) {
	if n == nil {
		return swtpm{}, false
	}
	t, ok := n.tpm.(swtpm)
	return t, ok && t.TPM != nil
}
