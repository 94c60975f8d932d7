// Package reuseport lets several processes listen on one TCP address (SO_REUSEPORT), the kernel
// spreading new connections among them: replicas of a service on one host behind one address,
// with no load balancer in front. It is opt-in per listener, because a second process taking
// half of a port's connections by accident is worse than one that fails to start.
package reuseport

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Control sets SO_REUSEPORT on a socket before it is bound; it is a net.ListenConfig.Control.
func Control(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("reuseport: set SO_REUSEPORT: %w", serr)
	}
	return nil
}
