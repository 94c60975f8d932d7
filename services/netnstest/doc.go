// Package netnstest makes test hosts out of Linux network namespaces: namespaces joined by
// veth pairs, functions and programs run inside them, and userspace WireGuard (wireguard-go)
// devices configured through wgctrl, so that tests pass real traffic between a gateway and a
// node without touching the machine's own network.
//
// Every namespace, interface and WireGuard socket gets a name unique to the run (Prefix and
// random digits, at most 15 bytes) registered to the creating process, so Sweep can remove
// the leftovers of crashed runs without disturbing test binaries running in parallel.
// Everything here needs root and ip(8).
package netnstest
