package sim

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attestboot/attestboot/node-agent/internal/agent"
)

// Duration is a time.Duration that reads and writes JSON as (fractional) milliseconds, the unit
// people compare boot phases in.
type Duration time.Duration

// MarshalJSON writes milliseconds with microsecond precision.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(math.Round(float64(d)/float64(time.Microsecond)) / 1000)
}

// UnmarshalJSON reads milliseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var ms float64
	if err := json.Unmarshal(b, &ms); err != nil {
		return err
	}
	*d = Duration(ms * float64(time.Millisecond))
	return nil
}

func (d Duration) String() string { return time.Duration(d).String() }

// PhaseStats are the latencies of one phase over the nodes that got through it.
type PhaseStats struct {
	Name  string   `json:"name"`
	Count int      `json:"count"`
	P50   Duration `json:"p50_ms"`
	P90   Duration `json:"p90_ms"`
	P99   Duration `json:"p99_ms"`
	Max   Duration `json:"max_ms"`
	Mean  Duration `json:"mean_ms"`
}

// Failure counts the nodes that failed with one class and reason.
type Failure struct {
	Class    string `json:"class"`
	ExitCode int    `json:"exit_code"`
	// Reason is short and shared by like failures: a gRPC code, "deadline exceeded", or the
	// innermost error message.
	Reason string `json:"reason"`
	Count  int    `json:"count"`
	// Example is the whole error of the first node that failed so.
	Example     string `json:"example"`
	ExampleNode string `json:"example_node"`
}

// NodeResult is one simulated node's boot.
type NodeResult struct {
	ID       string `json:"id"`
	TPMIndex int    `json:"tpm_index"`
	OK       bool   `json:"ok"`
	TunnelID string `json:"tunnel_id,omitempty"`
	// Class, ExitCode, Reason and Error describe a failure.
	Class    string `json:"class,omitempty"`
	ExitCode int    `json:"exit_code,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Error    string `json:"error,omitempty"`
	// Started is when the node arrived, from the start of the storm.
	Started Duration `json:"started_ms"`
	Total   Duration `json:"total_ms"`
	// Phases in the order the agent ran them (attest and tunnel again when a tunnel could not
	// be opened); in a failed boot, the last one before any teardown is the one that failed.
	Phases []Phase `json:"phases"`
}

// Phase is one timed step of a node's boot.
type Phase struct {
	Name     string   `json:"name"`
	Duration Duration `json:"ms"`
}

// Report is what a simulation measured.
type Report struct {
	Nodes     int    `json:"nodes"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
	TPMKind   string `json:"tpm_kind"`
	// Rate is the configured arrival rate in nodes per second; 0 means all at once.
	Rate float64 `json:"rate_per_second"`
	// Prepare is the time to manufacture (first run only) and start the TPMs; Enroll the time
	// to enroll the nodes. Neither counts in the boot figures.
	Prepare Duration `json:"prepare_ms"`
	Enroll  Duration `json:"enroll_ms"`
	// Wall runs from the first node's arrival to the last node's end.
	Wall Duration `json:"wall_ms"`
	// Throughput is succeeded nodes per second of Wall.
	Throughput float64      `json:"throughput_per_second"`
	Phases     []PhaseStats `json:"phases"`
	Failures   []Failure    `json:"failures"`
	Results    []NodeResult `json:"results"`
}

// phaseOrder is the order of the agent's phases in the report; a phase the agent adds later
// is listed after these, by name, and "total" (the whole boot of a successful node) last.
var phaseOrder = []string{"tpm", "attest", "tunnel", "wireguard", "fetch", "seed", "cloud-init", "phone-home", "teardown"}

// summarize fills the statistics of r from r.Results. A phase the agent ran more than once for
// a node (it attests again when a tunnel could not be opened) counts once, as the node's total
// time in it. Only phases a node got through count in the latencies (a failed phase's duration
// measures the failure, not the phase), and only successful boots count in total.
func (r *Report) summarize() {
	r.Nodes, r.Succeeded, r.Failed = len(r.Results), 0, 0
	samples := map[string][]time.Duration{}
	failures := map[[2]string]*Failure{}
	for _, n := range r.Results {
		failedPhase := ""
		if n.OK {
			r.Succeeded++
			samples["total"] = append(samples["total"], time.Duration(n.Total))
		} else {
			r.Failed++
			failedPhase = lastPhase(n.Phases)
			key := [2]string{n.Class, n.Reason}
			f := failures[key]
			if f == nil {
				f = &Failure{Class: n.Class, ExitCode: n.ExitCode, Reason: n.Reason, Example: n.Error, ExampleNode: n.ID}
				failures[key] = f
			}
			f.Count++
		}
		for _, p := range sumPhases(n.Phases) {
			if p.Name != failedPhase {
				samples[p.Name] = append(samples[p.Name], time.Duration(p.Duration))
			}
		}
	}
	r.Phases = r.Phases[:0]
	names := make([]string, 0, len(samples))
	for name := range samples {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		ia, ib := phaseRank(a), phaseRank(b)
		if ia != ib {
			return cmp.Compare(ia, ib)
		}
		return strings.Compare(a, b)
	})
	for _, name := range names {
		r.Phases = append(r.Phases, phaseStats(name, samples[name]))
	}
	r.Failures = r.Failures[:0]
	for _, f := range failures {
		r.Failures = append(r.Failures, *f)
	}
	slices.SortFunc(r.Failures, func(a, b Failure) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return strings.Compare(a.Class+a.Reason, b.Class+b.Reason)
	})
	r.Throughput = 0
	if r.Wall > 0 {
		r.Throughput = float64(r.Succeeded) / time.Duration(r.Wall).Seconds()
	}
}

// lastPhase names the phase a failed boot failed in: the last one, except for the teardown the
// agent always runs on its way out once the tunnel was up.
func lastPhase(phases []Phase) string {
	for i := len(phases) - 1; i >= 0; i-- {
		if phases[i].Name != "teardown" {
			return phases[i].Name
		}
	}
	return ""
}

// sumPhases adds up the durations of repeated phases, in the order each first ran.
func sumPhases(phases []Phase) []Phase {
	var out []Phase
	for _, p := range phases {
		if i := slices.IndexFunc(out, func(q Phase) bool { return q.Name == p.Name }); i >= 0 {
			out[i].Duration += p.Duration
		} else {
			out = append(out, p)
		}
	}
	return out
}

func phaseRank(name string) int {
	if name == "total" {
		return len(phaseOrder) + 1
	}
	if i := slices.Index(phaseOrder, name); i >= 0 {
		return i
	}
	return len(phaseOrder) // unknown phases go before total, sorted by name
}

func phaseStats(name string, d []time.Duration) PhaseStats {
	s := PhaseStats{Name: name, Count: len(d)}
	if len(d) == 0 {
		return s
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	s.P50 = Duration(percentile(d, 50))
	s.P90 = Duration(percentile(d, 90))
	s.P99 = Duration(percentile(d, 99))
	s.Max = Duration(d[len(d)-1])
	s.Mean = Duration(sum / time.Duration(len(d)))
	return s
}

// percentile is the nearest-rank percentile of sorted samples: the smallest sample that at
// least p percent of the samples do not exceed. No interpolation, so every figure is a latency
// some node really had.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// reasonOf names a failure so that like failures of many nodes are counted together.
func reasonOf(err error) string {
	if s, ok := status.FromError(err); ok && s.Code() != codes.OK && s.Code() != codes.Unknown {
		return s.Code().String()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline exceeded"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			break
		}
		err = u.Unwrap()
	}
	msg := err.Error()
	if len(msg) > 80 {
		msg = msg[:77] + "..."
	}
	return msg
}

// failedResult fills the failure fields of n from a boot error.
func failedResult(n *NodeResult, err error) {
	c := agent.ClassOf(err)
	n.OK = false
	n.Class = c.String()
	n.ExitCode = c.ExitCode()
	n.Reason = reasonOf(err)
	n.Error = err.Error()
}

// WriteText prints the report for a person: a summary line, a table of phase latencies and
// the failures by class and reason.
func (r *Report) WriteText(w io.Writer) error {
	arrival := "all at once"
	if r.Rate > 0 {
		arrival = fmt.Sprintf("%g/s", r.Rate)
	}
	fmt.Fprintf(w, "nodesim: %d nodes (TPM: %s), arrival %s: %d succeeded, %d failed in %s, %.2f nodes/s\n",
		r.Nodes, r.TPMKind, arrival, r.Succeeded, r.Failed, round(r.Wall), r.Throughput)
	fmt.Fprintf(w, "prepare (TPMs) %s, enroll %s\n\n", round(r.Prepare), round(r.Enroll))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tn\tp50\tp90\tp99\tmax\tmean\t")
	for _, p := range r.Phases {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", p.Name, p.Count, round(p.P50), round(p.P90), round(p.P99), round(p.Max), round(p.Mean))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Failures) == 0 {
		_, err := fmt.Fprintln(w, "\nfailures: none")
		return err
	}
	fmt.Fprintln(w, "\nfailures:")
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  %5d  %s (exit %d): %s\n         e.g. %s: %s\n", f.Count, f.Class, f.ExitCode, f.Reason, f.ExampleNode, f.Example)
	}
	return nil
}

// WriteTable writes one row per node: state and the durations of its main phases, the final
// table of make demo.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "node	state	attest ms	tunnel ms	fetch ms	total ms	")
	for _, n := range r.Results {
		sums := map[string]time.Duration{}
		for _, p := range n.Phases {
			sums[p.Name] += time.Duration(p.Duration)
		}
		state := "booted"
		if !n.OK {
			state = "failed: " + n.Class
		}
		ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }
		fmt.Fprintf(tw, "%s	%s	%s	%s	%s	%s	\n", n.ID, state, ms(sums["attest"]), ms(sums["tunnel"]), ms(sums["fetch"]),
			ms(time.Duration(n.Total)))
	}
	return tw.Flush()
}

// round keeps three significant figures or so, enough to compare runs.
func round(d Duration) time.Duration {
	x := time.Duration(d)
	switch {
	case x >= time.Second:
		return x.Round(10 * time.Millisecond)
	case x >= 10*time.Millisecond:
		return x.Round(100 * time.Microsecond)
	default:
		return x.Round(time.Microsecond)
	}
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
