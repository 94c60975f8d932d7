package storm

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/attestboot/attestboot/node-agent/internal/sim"
)

// Report is what a storm measured: the simulator's figures and what the servers paid.
type Report struct {
	Command string    `json:"command"`
	Date    time.Time `json:"date"`
	Machine Machine   `json:"machine"`

	TPMKind   string  `json:"tpm_kind"`
	Nodes     int     `json:"nodes"`
	Rate      float64 `json:"rate_per_second"`
	Succeeded int     `json:"succeeded"`
	Failed    int     `json:"failed"`
	// WallSeconds runs from the first arrival to the last node's end; NodesPerSecond is the
	// succeeded nodes over it.
	WallSeconds    float64 `json:"wall_s"`
	NodesPerSecond float64 `json:"nodes_per_second"`
	// Phases are the latency percentiles per phase, "total" being end to end.
	Phases   []sim.PhaseStats `json:"phases"`
	Failures []sim.Failure    `json:"failures"`

	// CPU is the server CPU each process spent during the storm.
	CPU []ProcessCPU `json:"cpu"`
	// DB is what the inventory database did during the storm (absent without -database-url).
	DB *DBFigures `json:"postgres,omitempty"`
	// PeakPeers and PeakOpenTunnels are the gateway's highest counts over the samples;
	// PeerPolls is how many GetGatewayStatus calls the sampler made (each reads the open
	// tunnels from Postgres, so they are part of the load measured).
	PeakPeers       int64        `json:"peak_peers"`
	PeakOpenTunnels int64        `json:"peak_open_tunnels"`
	PeerPolls       int          `json:"peer_polls"`
	PeerPollErrors  int          `json:"peer_poll_errors"`
	PeerSamples     []PeerSample `json:"peer_samples"`
	Memory          []ProcessMem `json:"memory"`

	// Sim is the simulator's whole report, nodes included, from which the chart is drawn.
	Sim sim.Report `json:"sim"`
}

// Machine is where the storm ran.
type Machine struct {
	NProc    int    `json:"nproc"`
	Kernel   string `json:"kernel"`
	Hostname string `json:"hostname"`
	// CPU is how the machine's processors were used during the storm.
	CPU MachineCPU `json:"cpu"`
}

// MachineCPU splits the machine's CPU during the storm: the servers share it with the
// simulated nodes (this process and its swtpm children) and with whatever else runs on the
// machine, so a throughput limited by the machine shows here.
type MachineCPU struct {
	// Capacity is processors × storm duration; Busy what all of them spent working.
	CapacitySeconds float64 `json:"capacity_s"`
	BusySeconds     float64 `json:"busy_s"`
	// Servers are the measured processes; Simulator this process (agents' TLS, WireGuard,
	// HTTP), SWTPM its swtpm children; Other the rest of the machine's busy time.
	ServersSeconds   float64 `json:"servers_s"`
	SimulatorSeconds float64 `json:"simulator_s"`
	SWTPMSeconds     float64 `json:"swtpm_s"`
	OtherSeconds     float64 `json:"other_s"`
	// Per node, client side: the simulated node's cost, excluded from the servers' figures.
	SimulatorMSPerNode float64 `json:"simulator_ms_per_node"`
	SWTPMMSPerNode     float64 `json:"swtpm_ms_per_node"`
}

// ProcessCPU is one process's CPU over the storm.
type ProcessCPU struct {
	Name      string  `json:"name"`
	Seconds   float64 `json:"cpu_s"`
	MSPerNode float64 `json:"cpu_ms_per_node"`
}

// ProcessMem is one service's memory: the highest RSS sampled and the kernel's own high-water
// mark (VmHWM, since the process started) read at the end.
type ProcessMem struct {
	Name         string `json:"name"`
	PeakRSSBytes int64  `json:"peak_rss_bytes"`
	VmHWMBytes   int64  `json:"vm_hwm_bytes"`
}

// DBFigures are the database's counters over the storm, and per node.
type DBFigures struct {
	Delta DBStats `json:"delta"`
	// Per node: all transactions (committed and rolled back, reads included), write
	// transactions (commit records in the WAL; without pg_walinspect, transaction ids, which
	// count writing savepoints too), and rows inserted, updated or deleted.
	XactsPerNode      float64 `json:"transactions_per_node"`
	WriteXactsPerNode float64 `json:"write_transactions_per_node"`
	RowsPerNode       float64 `json:"rows_written_per_node"`
	// From pg_stat_statements, when it is loaded: the statements run per node (BEGIN, COMMIT
	// and savepoints included; each statement of a pipelined batch counts) and their time
	// executing per node, over every statement; the costliest statements themselves, at most
	// statementLimit of them.
	StatementsPerNode  float64     `json:"statements_per_node,omitempty"`
	StatementMSPerNode float64     `json:"statement_exec_ms_per_node,omitempty"`
	Statements         []Statement `json:"pg_stat_statements,omitempty"`
	StatementsNote     string      `json:"pg_stat_statements_note,omitempty"`
}

// setStatements records the statements a storm ran, the costliest first: all of them in the
// per-node figures, the first statementLimit in the list.
func (d *DBFigures) setStatements(all []Statement, nodes int) {
	var calls int64
	var ms float64
	for _, s := range all {
		calls += s.Calls
		ms += s.TotalMS
	}
	d.StatementsPerNode = perNode(float64(calls), nodes)
	d.StatementMSPerNode = perNode(ms, nodes)
	d.Statements = all[:min(statementLimit, len(all))]
}

// perNode divides a total over the storm's nodes.
func perNode(total float64, nodes int) float64 {
	if nodes <= 0 {
		return 0
	}
	return total / float64(nodes)
}

// cpuFigures turns before and after readings into per-process CPU, in the order of names.
func cpuFigures(order []string, before, after map[string]time.Duration, nodes int) []ProcessCPU {
	out := make([]ProcessCPU, 0, len(order))
	for _, name := range order {
		d := after[name] - before[name]
		out = append(out, ProcessCPU{Name: name, Seconds: d.Seconds(), MSPerNode: perNode(float64(d)/float64(time.Millisecond), nodes)})
	}
	return out
}

func machineFigures(servers []ProcessCPU, before, after readings, nodes int) MachineCPU {
	m := MachineCPU{
		CapacitySeconds:  (after.total - before.total).Seconds(),
		BusySeconds:      (after.busy - before.busy).Seconds(),
		SimulatorSeconds: (after.self - before.self).Seconds(),
		SWTPMSeconds:     (after.tpms - before.tpms).Seconds(),
	}
	for _, c := range servers {
		m.ServersSeconds += c.Seconds
	}
	m.OtherSeconds = max(0, m.BusySeconds-m.ServersSeconds-m.SimulatorSeconds-m.SWTPMSeconds)
	m.SimulatorMSPerNode = perNode(m.SimulatorSeconds*1000, nodes)
	m.SWTPMMSPerNode = perNode(m.SWTPMSeconds*1000, nodes)
	return m
}

func dbFigures(delta DBStats, nodes int) *DBFigures {
	writes := delta.WriteXacts
	if writes < 0 {
		writes = delta.XIDs
	}
	return &DBFigures{
		Delta:             delta,
		XactsPerNode:      perNode(float64(delta.XactCommit+delta.XactRollback), nodes),
		WriteXactsPerNode: perNode(float64(writes), nodes),
		RowsPerNode:       perNode(float64(delta.RowsWritten()), nodes),
	}
}

// WriteText prints the report for a person.
func (r *Report) WriteText(w io.Writer) error {
	arrival := "all at once"
	if r.Rate > 0 {
		arrival = fmt.Sprintf("%g/s", r.Rate)
	}
	fmt.Fprintf(w, "storm: %d nodes (TPM: %s), arrival %s, %s, %d CPUs, Linux %s\n", r.Nodes, r.TPMKind, arrival,
		r.Date.Format(time.RFC3339), r.Machine.NProc, r.Machine.Kernel)
	fmt.Fprintf(w, "%d succeeded, %d failed in %.2f s: %.1f nodes/s\n\n", r.Succeeded, r.Failed, r.WallSeconds, r.NodesPerSecond)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tn\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
	for _, p := range r.Phases {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t\n", p.Name, p.Count, ms(p.P50), ms(p.P90), ms(p.P99), ms(p.Max))
	}
	fmt.Fprintln(tw, "\t\t\t\t\t\t")
	fmt.Fprintln(tw, "server\tCPU s\tCPU ms/node\tpeak RSS MB\tVmHWM MB\t\t")
	for _, c := range r.CPU {
		rss, hwm := "-", "-"
		if i := slices.IndexFunc(r.Memory, func(m ProcessMem) bool { return m.Name == c.Name }); i >= 0 {
			rss, hwm = mb(r.Memory[i].PeakRSSBytes), mb(r.Memory[i].VmHWMBytes)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%s\t%s\t\t\n", c.Name, c.Seconds, c.MSPerNode, rss, hwm)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var total float64
	for _, c := range r.CPU {
		total += c.MSPerNode
	}
	fmt.Fprintf(w, "all servers: %.2f ms CPU per node\n", total)
	c := r.Machine.CPU
	// Software TPMs run inside the simulator: their CPU is the simulator's.
	tpms := fmt.Sprintf("swtpm %.1f (%.2f ms/node)", c.SWTPMSeconds, c.SWTPMMSPerNode)
	if r.TPMKind != "swtpm" {
		tpms = r.TPMKind + " TPMs: in the simulator's"
	}
	fmt.Fprintf(w, "machine: %.1f of %.1f CPU s busy: servers %.1f, simulator %.1f (%.2f ms/node), %s, other %.1f\n",
		c.BusySeconds, c.CapacitySeconds, c.ServersSeconds, c.SimulatorSeconds, c.SimulatorMSPerNode, tpms, c.OtherSeconds)
	if d := r.DB; d != nil {
		writes := "commits in the WAL"
		if d.Delta.WriteXacts < 0 {
			writes = "transaction ids: no pg_walinspect"
		}
		fmt.Fprintf(w, "postgres: %.2f transactions/node (%.2f writing, %s), %.2f rows written/node (%d ins, %d upd, %d del)\n",
			d.XactsPerNode, d.WriteXactsPerNode, writes, d.RowsPerNode, d.Delta.TupInserted, d.Delta.TupUpdated, d.Delta.TupDeleted)
		if d.StatementsNote != "" {
			fmt.Fprintf(w, "pg_stat_statements: %s\n", d.StatementsNote)
		}
		if len(d.Statements) > 0 {
			fmt.Fprintf(w, "pg_stat_statements: %.1f statements/node, %.2f ms executing/node; the costliest:\n",
				d.StatementsPerNode, d.StatementMSPerNode)
		}
		for _, s := range d.Statements[:min(8, len(d.Statements))] {
			fmt.Fprintf(w, "  %8.1f ms %6d calls %6d rows  %s\n", s.TotalMS, s.Calls, s.Rows, oneLine(s.Query, 90))
		}
	}
	fmt.Fprintf(w, "gateway: peak %d peers, peak %d open tunnels (%d status polls, %d failed)\n",
		r.PeakPeers, r.PeakOpenTunnels, r.PeerPolls, r.PeerPollErrors)
	if len(r.Failures) == 0 {
		_, err := fmt.Fprintln(w, "failures: none")
		return err
	}
	fmt.Fprintln(w, "failures:")
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  %5d  %s: %s (e.g. %s: %s)\n", f.Count, f.Class, f.Reason, f.ExampleNode, oneLine(f.Example, 160))
	}
	return nil
}

func ms(d sim.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func mb(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n-3] + "..."
	}
	return s
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
