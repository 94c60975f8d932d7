// Command tunnelmgr owns a WireGuard gateway and gives attested nodes their tunnels.
// Run `tunnelmgr -h` for its flags; `tunnelmgr migrate` applies the inventory migrations.
package main

import (
	"os"

	"github.com/attestboot/attestboot/services/cli"
	"github.com/attestboot/attestboot/tunnelmgr"
)

func main() {
	os.Exit(cli.Main(tunnelmgr.Command(), os.Args[1:], os.Stderr))
}
