// Command attestctl is the admin command line of attestboot: nodes, EK enrollment (one by one,
// from a TPM, or in bulk from CSV), groups, cloud-init data, secrets, tunnels, events and a live
// view of boot storms. `attestctl help` lists the commands and the exit codes.
package main

import (
	"os"

	"github.com/attestboot/attestboot/attestctl"
)

func main() {
	os.Exit(attestctl.Main(os.Args[1:]))
}
