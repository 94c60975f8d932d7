package storm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/attestboot/attestboot/node-agent/internal/sim"
	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
)

// statementLimit bounds the pg_stat_statements rows kept in the report.
const statementLimit = 25

// readings are the counters read at one end of the storm.
type readings struct {
	at  time.Time
	cpu map[string]time.Duration
	// The simulated side and the whole machine, to see what was left to the servers.
	self, tpms, busy, total time.Duration
	db                      DBStats
	stmts                   map[int64]Statement
}

// Run runs the simulation and measures the servers around its storm: the baseline is read
// after the TPMs are up and the nodes enrolled, the CPU again as soon as the last node is
// through, and the database counters once their statistics have settled.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.validate(); err != nil {
		return Report{}, err
	}
	// Everything that can be wrong with the servers is found now, not after minutes of TPM
	// manufacturing.
	if _, err := readCPU(cfg.PIDs); err != nil {
		return Report{}, err
	}
	var db *pgx.Conn
	if cfg.DatabaseURL != "" {
		var err error
		if db, err = pgx.Connect(ctx, cfg.DatabaseURL); err != nil {
			return Report{}, fmt.Errorf("storm: connect to the database: %w", err)
		}
		defer db.Close(context.Background())
	}
	stmtsOK, stmtsNote, walOK := false, "", false
	if db != nil {
		stmtsOK, stmtsNote = statementsAvailable(ctx, db)
		walOK = walInspectAvailable(ctx, db)
	}
	var gw gatewayStatus
	if cfg.AdminTLS != nil {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg.AdminTLS))}
		if cfg.AdminToken != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(cfg.AdminToken)))
		}
		conn, err := grpc.NewClient(cfg.Sim.TunnelManager, opts...)
		if err != nil {
			return Report{}, fmt.Errorf("storm: tunnel manager admin client: %w", err)
		}
		defer conn.Close()
		gw = tunnelmgrv1.NewTunnelAdminServiceClient(conn)
	}

	readDB := func(r *readings) error {
		if db == nil {
			return nil
		}
		if err := sleep(ctx, cfg.StatsSettle); err != nil {
			return err
		}
		var err error
		if r.db, err = readDBStats(ctx, db); err != nil {
			return err
		}
		if stmtsOK {
			r.stmts, err = readStatements(ctx, db)
		}
		return err
	}
	readClient := func(r *readings) error {
		var err error
		if r.self, r.tpms, err = clientCPU(); err != nil {
			return err
		}
		r.busy, r.total, err = machineCPU()
		return err
	}
	var (
		before, after readings
		smp           *sampler
		hookErr       error
		stopProfile   func() error
	)
	// sim calls these synchronously, so the readings are placed exactly around the storm: the
	// TPMs' start and the enrollment before it, and stopping the swtpm processes after, count
	// in no figure. Hooks the caller set still run, first.
	onStorm, onDone := cfg.Sim.OnStorm, cfg.Sim.OnDone
	cfg.Sim.OnStorm = func() {
		if onStorm != nil {
			onStorm()
		}
		cfg.Logger.Info("storm about to start: reading the baseline", "settle", cfg.StatsSettle)
		if err := readDB(&before); err != nil {
			hookErr = err
			return
		}
		var err error
		if before.cpu, err = readCPU(cfg.PIDs); err != nil {
			hookErr = err
			return
		}
		if err := readClient(&before); err != nil {
			hookErr = err
			return
		}
		if cfg.CPUProfile != "" {
			if stopProfile, err = startCPUProfile(cfg.CPUProfile); err != nil {
				hookErr = err
				return
			}
		}
		before.at = time.Now()
		smp = startSampler(ctx, before.at, cfg.SampleEvery, cfg.PIDs, gw)
	}
	cfg.Sim.OnDone = func() {
		if onDone != nil {
			onDone()
		}
		after.at = time.Now()
		if smp == nil {
			return
		}
		if stopProfile != nil {
			hookErr = errors.Join(hookErr, stopProfile())
			stopProfile = nil
		}
		var err error
		if after.cpu, err = readCPU(cfg.PIDs); err != nil {
			hookErr = errors.Join(hookErr, err)
		}
		hookErr = errors.Join(hookErr, readClient(&after))
		smp.stop()
	}

	simRep, err := sim.Run(ctx, cfg.Sim)
	if smp != nil && after.cpu == nil {
		smp.stop() // OnDone's reading failed
	}
	if stopProfile != nil {
		hookErr = errors.Join(hookErr, stopProfile())
	}
	switch {
	case err != nil:
		return Report{}, err
	case hookErr != nil:
		return Report{}, hookErr
	case smp == nil || after.cpu == nil:
		return Report{}, errors.New("storm: the simulator never called its storm hooks: the readings could not be placed around the storm")
	}
	cfg.Logger.Info("storm done: reading the database's counters once they settle", "settle", cfg.StatsSettle)
	if err := readDB(&after); err != nil {
		return Report{}, err
	}

	rep := Report{
		Command: shellJoin(cfg.Command), Date: before.at.UTC().Truncate(time.Second), Machine: machine(),
		TPMKind: simRep.TPMKind, Nodes: simRep.Nodes, Rate: simRep.Rate, Succeeded: simRep.Succeeded, Failed: simRep.Failed,
		WallSeconds: time.Duration(simRep.Wall).Seconds(), NodesPerSecond: simRep.Throughput,
		Phases: simRep.Phases, Failures: simRep.Failures,
		CPU: cpuFigures(names(cfg.PIDs), before.cpu, after.cpu, simRep.Nodes),
		Sim: simRep,
	}
	rep.Machine.CPU = machineFigures(rep.CPU, before, after, simRep.Nodes)
	if db != nil {
		delta := after.db.Sub(before.db)
		if walOK {
			if delta.WriteXacts, err = walCommits(ctx, db, before.db.WALFlushed, after.db.WALFlushed); err != nil {
				return Report{}, err
			}
		}
		rep.DB = dbFigures(delta, simRep.Nodes)
		rep.DB.StatementsNote = stmtsNote
		if stmtsOK {
			rep.DB.setStatements(statementDelta(before.stmts, after.stmts), simRep.Nodes)
		}
	}
	rep.PeerSamples, rep.PeerPolls, rep.PeerPollErrors = smp.peers, len(smp.peers)+smp.peerErrors, smp.peerErrors
	rep.PeakPeers, rep.PeakOpenTunnels = peak(smp.peers)
	for _, name := range names(cfg.PIDs) {
		if name == Postgres {
			continue
		}
		m := ProcessMem{Name: name, PeakRSSBytes: smp.peakRSS[name]}
		if hwm, err := vmHWM(cfg.PIDs[name]); err == nil {
			m.VmHWMBytes = hwm
		}
		rep.Memory = append(rep.Memory, m)
	}
	return rep, nil
}

// WriteSVG draws the report's chart: nodes completed over time per phase.
func (r *Report) WriteSVG(w io.Writer) error {
	arrival := "all at once"
	if r.Rate > 0 {
		arrival = fmt.Sprintf("arriving at %g/s", r.Rate)
	}
	return WriteSVG(w, Chart{
		Title: fmt.Sprintf("attestboot boot storm: %d nodes %s", r.Nodes, arrival),
		Subtitle: fmt.Sprintf("%d booted, %d failed in %.1f s (%.1f nodes/s); TPM %s; %d CPUs; %s",
			r.Succeeded, r.Failed, r.WallSeconds, r.NodesPerSecond, r.TPMKind, r.Machine.NProc, r.Date.Format("2006-01-02 15:04 UTC")),
		Nodes:  r.Nodes,
		Series: milestoneSeries(r.Sim.Results),
	})
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func machine() Machine {
	m := Machine{NProc: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.Hostname, _ = os.Hostname()
	return m
}

// shellJoin writes a command line that a shell would split back into args.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`&|;<>()*?[]#~!{}") {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}

// bearerToken sends an admin token as the services expect it ("authorization: Bearer ...").
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity keeps the token off connections without TLS.
func (bearerToken) RequireTransportSecurity() bool { return true }

// startCPUProfile profiles this process into path until the returned stop is called.
func startCPUProfile(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("storm: CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("storm: CPU profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}
