package netnstest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Prefix starts every name this package makes: namespaces, links and WireGuard interfaces.
const Prefix = "ab"

// MaxNameLen is the longest Linux interface name (IFNAMSIZ - 1).
const MaxNameLen = 15

// RegistryDir records which process owns each name, so that Sweep removes only what a dead
// process left behind and never the namespaces of another test binary running right now.
const RegistryDir = "/run/attestboot-netnstest"

// WireGuardSocketDir is where wireguard-go and wgctrl put and find UAPI sockets.
const WireGuardSocketDir = "/var/run/wireguard"

// nameRE matches only names made by NewName: Prefix, 8 random hex digits, a short label.
var nameRE = regexp.MustCompile(`^` + Prefix + `[0-9a-f]{8}[a-z0-9]{0,5}$`)

// NewName returns a name unique to this run, usable as a namespace and an interface name
// (at most 15 bytes): Prefix, 8 random hex digits, then label lower-cased, stripped to
// [a-z0-9] and cut to 5 characters. The name is registered to this process (see Sweep);
// Release it once whatever carries it is gone.
func NewName(label string) (string, error) {
	var clean strings.Builder
	for _, r := range strings.ToLower(label) {
		if clean.Len() == MaxNameLen-len(Prefix)-8 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			clean.WriteRune(r)
		}
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("netnstest: %w", err)
	}
	name := Prefix + hex.EncodeToString(rnd[:]) + clean.String()
	if err := register(name); err != nil {
		return "", err
	}
	return name, nil
}

// Release forgets the registration of name.
func Release(name string) {
	if nameRE.MatchString(name) {
		_ = os.Remove(filepath.Join(RegistryDir, name))
	}
}

// owner identifies a process across pid reuse: its pid and its start time in clock ticks
// since boot (/proc/PID/stat field 22).
type owner struct {
	pid   int
	start uint64
}

func self() (owner, error) {
	pid := os.Getpid()
	start, err := startTime(pid)
	if err != nil {
		return owner{}, err
	}
	return owner{pid: pid, start: start}, nil
}

func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses; fields after it may not.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("netnstest: malformed /proc stat")
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0, errors.New("netnstest: short /proc stat")
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

func register(name string) error {
	o, err := self()
	if err != nil {
		return fmt.Errorf("netnstest: identify this process: %w", err)
	}
	if err := os.MkdirAll(RegistryDir, 0o755); err != nil {
		return fmt.Errorf("netnstest: %w", err)
	}
	content := fmt.Sprintf("%d %d\n", o.pid, o.start)
	if err := os.WriteFile(filepath.Join(RegistryDir, name), []byte(content), 0o644); err != nil {
		return fmt.Errorf("netnstest: register %s: %w", name, err)
	}
	return nil
}

// ownerAlive reports whether the process that registered name still runs. A name of our
// pattern without registration is a leftover (its owner died before registering, which it
// does before creating anything, or its registration was removed).
func ownerAlive(name string) bool {
	b, err := os.ReadFile(filepath.Join(RegistryDir, name))
	if err != nil {
		return false
	}
	var o owner
	if _, err := fmt.Sscanf(string(b), "%d %d", &o.pid, &o.start); err != nil {
		return false
	}
	start, err := startTime(o.pid)
	return err == nil && start == o.start
}

// registered lists the names in the registry.
func registered() ([]string, error) {
	entries, err := os.ReadDir(RegistryDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if nameRE.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
