// Command node-agent personalizes a diskless node on every boot: TPM attestation, an ephemeral
// WireGuard tunnel, cloud-init data over it, phone-home, and no trace left. Exit codes name the
// failing part (see internal/agent).
package main

import (
	"os"

	nodeagent "github.com/attestboot/attestboot/node-agent"
)

func main() {
	os.Exit(nodeagent.Main(os.Args[1:], os.Stderr))
}
