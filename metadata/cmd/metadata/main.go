// Command metadata serves the cloud-init datasource over WireGuard tunnels and the admin
// MetadataService. Run `metadata -h` for its flags; `metadata migrate` applies the inventory
// migrations.
package main

import (
	"os"

	"github.com/attestboot/attestboot/metadata"
	"github.com/attestboot/attestboot/services/cli"
)

func main() {
	os.Exit(cli.Main(metadata.Command(), os.Args[1:], os.Stderr))
}
