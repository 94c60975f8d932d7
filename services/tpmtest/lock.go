package tpmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Locks are flock(2) locks on files in the cache: the kernel drops them when the holder
// dies, so a crashed test binary never leaves the cache locked. flock locks belong to the
// open file, so two opens in one process exclude each other just like two processes.

// tryLockFile takes an exclusive lock on path without waiting. It returns nil, nil when
// someone else holds it.
func tryLockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("tpmtest: open lock: %w", err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		f.Close()
		return nil, nil
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tpmtest: lock %s: %w", path, err)
	}
	return f, nil
}

// lockFile takes an exclusive lock on path, waiting for it as long as ctx allows. It polls
// because a blocking flock cannot be cancelled.
func lockFile(ctx context.Context, path string) (*os.File, error) {
	wait := 5 * time.Millisecond
	for {
		f, err := tryLockFile(path)
		if err != nil || f != nil {
			return f, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("tpmtest: waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}
