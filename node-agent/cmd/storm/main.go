// Command storm is the boot-storm measurement of make bench: a nodesim run (same flags) that
// also measures what the servers paid per node — CPU, Postgres transactions and rows, peak
// peers and memory — and charts nodes completed over time per phase (see internal/storm). Run it
// inside the nodes' network namespace, as nodesim.
package main

import (
	"os"

	"github.com/attestboot/attestboot/node-agent/internal/storm"
)

func main() {
	os.Exit(storm.Main(os.Args[1:], os.Stdout, os.Stderr))
}
