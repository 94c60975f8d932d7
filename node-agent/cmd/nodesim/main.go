// Command nodesim boots many simulated nodes at once against the real attestboot services —
// each with its own swtpm and its own netstack WireGuard end, through the node-agent's own
// code — and reports per-phase latency percentiles, throughput and failures (see internal/sim).
package main

import (
	"os"

	"github.com/attestboot/attestboot/node-agent/internal/sim"
)

func main() {
	os.Exit(sim.Main(os.Args[1:], os.Stdout, os.Stderr))
}
