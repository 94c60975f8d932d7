package storm

import (
	"slices"
	"time"

	"github.com/attestboot/attestboot/node-agent/internal/sim"
)

// agentPhases is the order of the agent's boot phases (internal/agent), used to tell which
// milestones a failed node did pass: those of phases before the one it failed in.
var agentPhases = []string{"tpm", "attest", "tunnel", "wireguard", "fetch", "seed", "cloud-init", "phone-home", "teardown"}

// milestones are the chart's lines: a node reaches one when the phase ends (its last run, when
// the agent attested again), "booted" when the whole boot succeeded.
var milestones = []struct{ label, phase string }{
	{"attest done", "attest"},
	{"tunnel done", "tunnel"},
	{"fetch done", "fetch"},
	{"booted", ""},
}

// Series is one chart line: when each node reached a milestone, in seconds from the storm's
// start, sorted.
type Series struct {
	Label string
	Times []float64
}

// milestoneSeries computes the chart's lines from the nodes' arrival times and phase
// durations.
func milestoneSeries(results []sim.NodeResult) []Series {
	out := make([]Series, len(milestones))
	for i, m := range milestones {
		out[i].Label = m.label
	}
	for _, n := range results {
		ends := phaseEnds(n)
		passed := len(agentPhases) // an OK node passed every phase
		if !n.OK {
			passed = failedRank(n.Phases)
		}
		for i, m := range milestones {
			if m.phase == "" {
				if n.OK {
					out[i].Times = append(out[i].Times, time.Duration(n.Started+n.Total).Seconds())
				}
				continue
			}
			end, ran := ends[m.phase]
			if ran && slices.Index(agentPhases, m.phase) < passed {
				out[i].Times = append(out[i].Times, end.Seconds())
			}
		}
	}
	for i := range out {
		slices.Sort(out[i].Times)
	}
	return out
}

// phaseEnds is when each phase of a node last ended: its arrival plus the durations of every
// phase up to that one.
func phaseEnds(n sim.NodeResult) map[string]time.Duration {
	ends := map[string]time.Duration{}
	at := time.Duration(n.Started)
	for _, p := range n.Phases {
		at += time.Duration(p.Duration)
		ends[p.Name] = at
	}
	return ends
}

// failedRank is the position in agentPhases of the phase a failed boot failed in: its last
// phase other than the teardown the agent runs on its way out. A phase the chart does not know
// counts as failing first, so that no milestone is claimed for it.
func failedRank(phases []sim.Phase) int {
	for i := len(phases) - 1; i >= 0; i-- {
		if phases[i].Name != "teardown" {
			return max(slices.Index(agentPhases, phases[i].Name), 0)
		}
	}
	return 0
}
