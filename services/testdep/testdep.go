// Package testdep decides what a test does when a real dependency (a binary, root, a kernel
// feature) is missing: under CI=true the test fails, elsewhere it skips and says why.
package testdep

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// InCI reports whether the tests run in CI, where a missing dependency is a failure.
func InCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// Missing stops the test because a dependency is absent: Fatal in CI, Skip elsewhere.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("missing test dependency (CI=true makes this a failure): "+format, args...)
	}
	t.Skipf("missing test dependency: "+format, args...)
}

// Binaries stops the test unless every named program is on PATH.
func Binaries(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			Missing(t, "%s not on PATH (run `make deps`)", n)
		}
	}
}

// Root stops the test unless it runs as root (network namespaces, TUN devices).
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root")
	}
}
