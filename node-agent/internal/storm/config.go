package storm

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/attestboot/attestboot/node-agent/internal/sim"
)

// Postgres names the postmaster in Config.PIDs: its CPU is that of its whole process family.
const Postgres = "postgres"

// Config of a measured storm.
type Config struct {
	// Sim is the simulation to run (nodes, rate, services, TPM cache, enrollment). Its OnStorm
	// and OnDone hooks take the readings; hooks already set there are called first.
	Sim sim.Config
	// PIDs names the server processes to measure: service name to pid, and Postgres (the
	// postmaster) for the database cluster.
	PIDs map[string]int
	// DatabaseURL is the inventory database, for pg_stat_database; empty skips the Postgres
	// figures.
	DatabaseURL string
	// AdminTLS is the admin credential for the tunnel manager's GetGatewayStatus (peak peers);
	// nil skips the peer count. AdminToken is a bearer token instead of a client certificate.
	AdminTLS   *tls.Config
	AdminToken string
	// SampleEvery is the sampling period of peers and memory; default 250 ms.
	SampleEvery time.Duration
	// StatsSettle is how long to wait before reading pg_stat_database, before and after the
	// storm: a Postgres 15 backend flushes its statistics at most once a second while busy and
	// ten seconds after going idle, so an earlier reading misses transactions. Default 11 s.
	StatsSettle time.Duration
	// CPUProfile, if set, is where the simulator's own CPU profile of the storm goes (from the
	// first arrival to the last node's end): what the simulated nodes cost, to tell it apart from
	// the servers' (whose profiles their /debug/pprof gives).
	CPUProfile string
	// Command is the command line, recorded in the report.
	Command []string
	// Logger receives progress (default: discarded).
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.SampleEvery == 0 {
		c.SampleEvery = 250 * time.Millisecond
	}
	if c.StatsSettle == 0 {
		c.StatsSettle = 11 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.SampleEvery < 0 || c.StatsSettle < 0:
		return errors.New("storm: negative sampling period or settle time")
	case c.Sim.Nodes < 1:
		return errors.New("storm: at least one node")
	}
	for name, pid := range c.PIDs {
		if pid <= 0 {
			return fmt.Errorf("storm: bad pid %d for %s", pid, name)
		}
	}
	return nil
}

// ParsePIDs reads "attestor=12,tunnelmgr=13,metadata=14,postgres=9".
func ParsePIDs(s string) (map[string]int, error) {
	out := map[string]int{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		name, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		pid, err := strconv.Atoi(v)
		if !ok || name == "" || err != nil || pid <= 0 {
			return nil, fmt.Errorf("storm: bad -pids entry %q (want name=pid)", kv)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("storm: %s given twice in -pids", name)
		}
		out[name] = pid
	}
	return out, nil
}

// names returns the measured processes in report order: the services by name, Postgres last.
func names(pids map[string]int) []string {
	var out []string
	for n := range pids {
		if n != Postgres {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	if _, ok := pids[Postgres]; ok {
		out = append(out, Postgres)
	}
	return out
}
