// Package procstat reads what benchmarks report about processes from /proc: CPU time and
// resident memory, by pid or by command name.
package procstat

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every Linux architecture Go
// supports.
const clockTicks = 100

// Stat is one reading of a process.
type Stat struct {
	Comm string
	PPid int
	CPU  time.Duration // user + system
	RSS  int64         // bytes resident now
}

// Read returns the reading of pid.
func Read(pid int) (Stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, err
	}
	return parse(string(b))
}

func parse(s string) (Stat, error) {
	// The command name is in parentheses and may itself hold spaces or parentheses.
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || end+2 > len(s) {
		return Stat{}, fmt.Errorf("procstat: malformed stat line")
	}
	f := strings.Fields(s[end+2:])
	if len(f) < 22 {
		return Stat{}, fmt.Errorf("procstat: short stat line")
	}
	// Fields after the name start at field 3 (state): utime is field 14, stime 15, rss 24.
	ppid, err0 := strconv.Atoi(f[1])
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	rss, err3 := strconv.ParseInt(f[21], 10, 64)
	if err0 != nil || err1 != nil || err2 != nil || err3 != nil {
		return Stat{}, fmt.Errorf("procstat: malformed numbers")
	}
	return Stat{
		Comm: s[open+1 : end],
		PPid: ppid,
		CPU:  time.Duration(utime+stime) * time.Second / clockTicks,
		RSS:  rss * int64(os.Getpagesize()),
	}, nil
}

// CPUOf sums the CPU time of the live processes named comm (for example "postgres", whose
// backends come and go; a backend that exited no longer counts).
func CPUOf(comm string) time.Duration {
	var total time.Duration
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if st, err := parse(string(b)); err == nil && st.Comm == comm {
			total += st.CPU
		}
	}
	return total
}

// CPUOfFamily sums the CPU time of pid and its live children: a Postgres cluster is its
// postmaster and the backends and workers it forked.
func CPUOfFamily(pid int) time.Duration {
	var total time.Duration
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		st, err := parse(string(b))
		if err != nil {
			continue
		}
		if st.PPid == pid || p == fmt.Sprintf("/proc/%d/stat", pid) {
			total += st.CPU
		}
	}
	return total
}
