package storm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/attestboot/attestboot/services/procstat"
)

// cpuOf is the CPU time a measured process has used so far. For the postmaster it is that of
// the whole cluster: the live backends and workers (procstat.CPUOfFamily) plus the children it
// has already reaped, which the kernel adds to the postmaster's cutime and cstime — so an
// autovacuum worker or a backend that exits during the storm still counts.
func cpuOf(name string, pid int) (time.Duration, error) {
	if name != Postgres {
		st, err := procstat.Read(pid)
		if err != nil {
			return 0, fmt.Errorf("storm: CPU of %s: %w", name, err)
		}
		return st.CPU, nil
	}
	reaped, err := reapedCPU(pid)
	if err != nil {
		return 0, fmt.Errorf("storm: CPU of %s: %w", name, err)
	}
	return procstat.CPUOfFamily(pid) + reaped, nil
}

// readCPU reads cpuOf for every process.
func readCPU(pids map[string]int) (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(pids))
	for name, pid := range pids {
		d, err := cpuOf(name, pid)
		if err != nil {
			return nil, err
		}
		out[name] = d
	}
	return out, nil
}

// reapedCPU is cutime + cstime of pid: the CPU of its children that exited and were waited for.
func reapedCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseReaped(string(b))
}

func parseReaped(stat string) (time.Duration, error) {
	// As in procstat: the command name may hold spaces and parentheses, so fields are counted
	// from the last ')'. After it, field 3 (state) is f[0]; cutime is field 16, cstime 17.
	end := strings.LastIndexByte(stat, ')')
	if end < 0 || end+2 > len(stat) {
		return 0, fmt.Errorf("malformed stat line")
	}
	f := strings.Fields(stat[end+2:])
	if len(f) < 15 {
		return 0, fmt.Errorf("short stat line")
	}
	cu, err1 := strconv.ParseInt(f[13], 10, 64)
	cs, err2 := strconv.ParseInt(f[14], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed cutime or cstime")
	}
	// USER_HZ is 100 on every Linux architecture Go supports (as procstat assumes).
	return time.Duration(cu+cs) * time.Second / 100, nil
}

// vmHWM is the peak resident set size of pid as the kernel kept it (VmHWM), in bytes: it
// catches a peak between two samples.
func vmHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseVmHWM(f)
}

func parseVmHWM(f io.Reader) (int64, error) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed VmHWM line %q", sc.Text())
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmHWM line")
}

// clientCPU is what the simulated side spent so far: this process (the agents' TLS, WireGuard
// and HTTP) and its live children (the swtpm processes). It shares the machine with the
// servers, so it says how much of the machine was left to them.
func clientCPU() (self, tpms time.Duration, err error) {
	st, err := procstat.Read(os.Getpid())
	if err != nil {
		return 0, 0, fmt.Errorf("storm: CPU of this process: %w", err)
	}
	return st.CPU, procstat.CPUOfFamily(os.Getpid()) - st.CPU, nil
}

// machineCPU reads the first line of /proc/stat: the CPU time all processors spent busy and
// in total (busy plus idle and I/O wait), whatever ran.
func machineCPU() (busy, total time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	return parseMachineCPU(string(b))
}

func parseMachineCPU(stat string) (busy, total time.Duration, err error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("storm: malformed /proc/stat")
	}
	// user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
	var v [8]int64
	for i := range v {
		if i+1 >= len(f) {
			break
		}
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("storm: malformed /proc/stat: %w", err)
		}
	}
	ticks := func(n int64) time.Duration { return time.Duration(n) * time.Second / 100 }
	idle := v[3] + v[4]
	all := v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]
	return ticks(all - idle), ticks(all), nil
}
