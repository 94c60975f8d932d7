package agent

import (
	"github.com/vishvananda/netlink"

	"github.com/attestboot/attestboot/node-agent/internal/wglocal"
)

// removeStale deletes an interface left by an earlier boot attempt, so running the agent again
// is safe.
func removeStale(mode wglocal.Mode, name string) {
	if mode == wglocal.Netstack || name == "" {
		return
	}
	if link, err := netlink.LinkByName(name); err == nil {
		_ = netlink.LinkDel(link)
	}
}
