// Command attestor serves the node-facing AttestorService and the admin InventoryService.
// Run `attestor -h` for its flags; `attestor migrate` applies the inventory migrations.
package main

import (
	"os"

	"github.com/attestboot/attestboot/attestor"
	"github.com/attestboot/attestboot/services/cli"
)

func main() {
	os.Exit(cli.Main(attestor.Command(), os.Args[1:], os.Stderr))
}
