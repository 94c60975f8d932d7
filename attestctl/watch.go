package attestctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
)

// bootState is how far a node got in its current boot, as the event log tells.
type bootState int

const (
	stateWaiting bootState = iota // no boot event in the window
	stateAttesting
	stateAttested
	stateTunnel
	stateFetched
	stateBooted
	stateRefused
	numStates
)

func (s bootState) String() string {
	switch s {
	case stateWaiting:
		return "waiting"
	case stateAttesting:
		return "attesting"
	case stateAttested:
		return "attested"
	case stateTunnel:
		return "tunnel open"
	case stateFetched:
		return "fetched"
	case stateBooted:
		return "booted"
	case stateRefused:
		return "refused/failed"
	}
	return "unknown"
}

// key is the state's name in JSON and plain lines.
func (s bootState) key() string {
	return strings.NewReplacer(" open", "", "/failed", "").Replace(s.String())
}

// classify maps an event kind to the boot state it proves, if any.
func classify(kind string) (bootState, bool) {
	switch {
	case kind == "attestation.begun":
		return stateAttesting, true
	case kind == "attestation.passed":
		return stateAttested, true
	case kind == "tunnel.opened":
		return stateTunnel, true
	case kind == "metadata.fetched" || kind == "metadata.secrets_delivered":
		return stateFetched, true
	case kind == "boot.completed" || kind == "node.booted":
		return stateBooted, true
	case strings.HasSuffix(kind, ".refused") || kind == "tunnel.failed" || kind == "tunnel.expired":
		return stateRefused, true
	}
	return 0, false
}

// rateWindow is how far back rates look.
const rateWindow = 5 * time.Second

type transition struct {
	at    time.Time
	state bootState
}

// tracker folds events into per-node boot states.
type tracker struct {
	known    map[string]bool // node ids of the inventory
	state    map[string]bootState
	recent   []transition // within rateWindow, for rates
	events   []time.Time  // arrival of every event within rateWindow
	refusals []*inventoryv1.Event
	total    int64
}

func newTracker() *tracker {
	return &tracker{known: map[string]bool{}, state: map[string]bootState{}}
}

// apply moves a node forward in its boot. Only a new attempt (attestation.begun) moves it
// back, so a late audit event cannot undo "booted".
func (t *tracker) apply(e *inventoryv1.Event, now time.Time) {
	t.total++
	t.events = append(t.events, now)
	next, ok := classify(e.GetKind())
	if !ok || e.GetNodeId() == "" {
		return
	}
	if next == stateRefused {
		t.refusals = append(t.refusals, e)
		if len(t.refusals) > 5 {
			t.refusals = t.refusals[1:]
		}
	}
	cur, seen := t.state[e.GetNodeId()]
	switch {
	case !seen, next == stateAttesting, next > cur && cur != stateRefused:
	case next == stateRefused && cur != stateBooted:
	default:
		return
	}
	t.state[e.GetNodeId()] = next
	t.recent = append(t.recent, transition{at: now, state: next})
}

// snapshot counts nodes by state and transitions per second into each state.
type snapshot struct {
	Time      time.Time          `json:"time"`
	Nodes     int                `json:"nodes"`
	Counts    map[string]int     `json:"states"`
	Rates     map[string]float64 `json:"rates_per_second"`
	EventRate float64            `json:"events_per_second"`
	Events    int64              `json:"events"`
	counts    [numStates]int
	rates     [numStates]float64
}

func (t *tracker) snapshot(now time.Time) snapshot {
	cut := now.Add(-rateWindow)
	for len(t.recent) > 0 && t.recent[0].at.Before(cut) {
		t.recent = t.recent[1:]
	}
	for len(t.events) > 0 && t.events[0].Before(cut) {
		t.events = t.events[1:]
	}
	s := snapshot{Time: now, Nodes: len(t.known), Counts: map[string]int{}, Rates: map[string]float64{}, Events: t.total,
		EventRate: float64(len(t.events)) / rateWindow.Seconds()}
	active := 0
	for id, st := range t.state {
		s.counts[st]++
		if t.known[id] {
			active++
		}
	}
	s.counts[stateWaiting] = max(0, len(t.known)-active)
	for _, tr := range t.recent {
		s.rates[tr.state] += 1 / rateWindow.Seconds()
	}
	for st := range numStates {
		s.Counts[st.key()] = s.counts[st]
		s.Rates[st.key()] = s.rates[st]
	}
	return s
}

func runWatch(a *app, args []string) error {
	fs := a.flags("watch", "watch [--since D] [--interval D] [--node-prefix P] [--once]")
	since := fs.Duration("since", 10*time.Minute, "count boot events of this long ago on (a storm's start)")
	interval := fs.Duration("interval", time.Second, "refresh `interval`")
	prefix := fs.String("node-prefix", "", "only nodes whose id starts with `prefix`")
	once := fs.Bool("once", false, "print the current counts once and exit")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *interval < 100*time.Millisecond {
		return usagef("watch: --interval must be at least 100ms")
	}
	t := newTracker()
	refreshNodes := func() error {
		nodes, err := a.listNodes(&inventoryv1.ListNodesRequest{PageSize: 1000, IdPrefix: *prefix})
		if err != nil {
			return err
		}
		known := make(map[string]bool, len(nodes))
		for _, n := range nodes {
			known[n.GetId()] = true
		}
		t.known = known
		return nil
	}
	if err := refreshNodes(); err != nil {
		return err
	}
	start := time.Now()
	filter := &inventoryv1.EventFilter{Since: timestamppb.New(start.Add(-*since))}
	last, err := a.listEvents(filter, func(e *inventoryv1.Event) error {
		if strings.HasPrefix(e.GetNodeId(), *prefix) {
			t.apply(e, e.GetTime().AsTime())
		}
		return nil
	})
	if err != nil {
		return err
	}
	tty := isTerminal(a.env.Stdout) && !a.cfg.JSON
	if *once {
		return a.drawWatch(t.snapshot(start), t, false)
	}

	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	evc := make(chan *inventoryv1.Event, 1024)
	errc := make(chan error, 1)
	filter.Since = nil
	go func() {
		errc <- a.followEvents(ctx, filter, last, func(e *inventoryv1.Event) error {
			select {
			case evc <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	refresh := time.NewTicker(10 * time.Second)
	defer refresh.Stop()
	if tty {
		fmt.Fprint(a.env.Stdout, "\x1b[2J")
	}
	for {
		select {
		case <-a.ctx.Done():
			return nil
		case err := <-errc:
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		case e := <-evc:
			if strings.HasPrefix(e.GetNodeId(), *prefix) {
				t.apply(e, time.Now())
			}
		case <-refresh.C:
			if err := refreshNodes(); err != nil {
				return err
			}
		case now := <-tick.C:
			if err := a.drawWatch(t.snapshot(now), t, tty); err != nil {
				return err
			}
		}
	}
}

// drawWatch prints one refresh: a redrawn screen on a terminal, one line otherwise.
func (a *app) drawWatch(s snapshot, t *tracker, tty bool) error {
	w := a.env.Stdout
	if a.cfg.JSON {
		return a.printJSONLine(s)
	}
	if !tty {
		var b strings.Builder
		fmt.Fprintf(&b, "%s nodes=%d", s.Time.Local().Format(time.RFC3339), s.Nodes)
		for st := range numStates {
			fmt.Fprintf(&b, " %s=%d", st.key(), s.counts[st])
			if s.rates[st] > 0 {
				fmt.Fprintf(&b, "(+%.1f/s)", s.rates[st])
			}
		}
		fmt.Fprintf(&b, " events/s=%.1f", s.EventRate)
		_, err := fmt.Fprintln(w, b.String())
		return err
	}
	var b strings.Builder
	b.WriteString("\x1b[H")
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\x1b[K\n", args...) }
	line("attestctl watch   %s   nodes %d   events %d (%.1f/s)   Ctrl-C quits", s.Time.Local().Format("15:04:05"), s.Nodes, s.Events, s.EventRate)
	line("")
	line("%-16s %7s %10s  %s", "STATE", "NODES", "RATE", "")
	for st := range numStates {
		rate := ""
		if s.rates[st] > 0 {
			rate = fmt.Sprintf("+%.1f/s", s.rates[st])
		}
		line("%-16s %7d %10s  %s", st.String(), s.counts[st], rate, bar(s.counts[st], s.Nodes, 40))
	}
	line("")
	if len(t.refusals) > 0 {
		line("latest refusals and failures:")
		for i := len(t.refusals) - 1; i >= 0; i-- {
			e := t.refusals[i]
			line("  %s  %-16s  %-22s %s", e.GetTime().AsTime().Local().Format("15:04:05"), e.GetNodeId(), e.GetKind(), e.GetReason())
		}
		line("see `attestctl events --node NODE` for the whole story")
	}
	b.WriteString("\x1b[J")
	_, err := io.WriteString(w, b.String())
	return err
}

func bar(n, total, width int) string {
	if total <= 0 || n <= 0 {
		return ""
	}
	return strings.Repeat("█", max(1, min(width, width*n/total)))
}
