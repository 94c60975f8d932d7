// Package agent is the whole boot on the node: open the TPM, make a WireGuard key in memory,
// attest, open the tunnel, bring up the local WireGuard end, fetch the cloud-init documents,
// write a NoCloud seed, run cloud-init, wait for the phone-home, and tear everything down —
// interface, keys, secret-bearing files. Each phase is logged with its duration; retryable
// failures back off with full jitter under one deadline; every failure has a class and an exit
// code.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/attestboot/attestboot/node-agent/internal/wglocal"
	attestorv1 "github.com/attestboot/attestboot/proto/attestboot/attestor/v1"
	tunnelmgrv1 "github.com/attestboot/attestboot/proto/attestboot/tunnelmgr/v1"
	"github.com/attestboot/attestboot/services/nodeattest"
	"github.com/attestboot/attestboot/services/tpmconn"
)

// Config of one boot.
type Config struct {
	// NodeID as enrolled.
	NodeID string
	// TPM address: /dev/tpmrm0, swtpm:HOST:PORT or unix:PATH.
	TPM string
	// OpenTPM, when set, opens the TPM instead of TPM: the simulator's in-process TPMs
	// (services/softtpm).
	OpenTPM func() (tpmconn.Channel, error)
	// AKAlgorithm of the attestation key; default ECDSA.
	AKAlgorithm nodeattest.Algorithm
	// Attestor and TunnelManager are host:port of the services.
	Attestor      string
	TunnelManager string
	// TLS verifies the services (the CA bundle in the image).
	TLS *tls.Config
	// WireGuard is the local end's mode; Interface its name (tun, kernel).
	WireGuard wglocal.Mode
	Interface string
	// Seed configures the NoCloud seed, cloud-init and the clean-up of its copies.
	Seed SeedConfig
	// Deadline bounds the whole boot; default 5 min.
	Deadline time.Duration
	// Backoff of retries.
	Backoff Backoff
}

func (c *Config) validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("no node id")
	case c.TPM == "" && c.OpenTPM == nil:
		return errors.New("no TPM address")
	case c.Attestor == "" || c.TunnelManager == "":
		return errors.New("attestor and tunnel manager addresses are required")
	case c.TLS == nil:
		return errors.New("no TLS configuration (CA bundle)")
	}
	if c.WireGuard == "" {
		c.WireGuard = wglocal.TUN
	}
	if c.WireGuard != wglocal.Netstack && c.Interface == "" {
		c.Interface = "attestboot"
	}
	if c.Deadline == 0 {
		c.Deadline = 5 * time.Minute
	}
	return c.Seed.validate()
}

// Phase is one timed step of the boot.
type Phase struct {
	Name     string
	Duration time.Duration
}

// Result of a boot.
type Result struct {
	TunnelID string
	Phases   []Phase
}

type booter struct {
	cfg    Config
	logger *slog.Logger
	res    Result
}

// timed runs one phase and records its duration.
func (b *booter) timed(name string, fn func() error) error {
	start := time.Now()
	err := fn()
	d := time.Since(start)
	b.res.Phases = append(b.res.Phases, Phase{Name: name, Duration: d})
	if err != nil {
		b.logger.Error("phase failed", "phase", name, "duration", d.Round(time.Millisecond), "err", err)
	} else {
		b.logger.Info("phase done", "phase", name, "duration", d.Round(time.Millisecond))
	}
	return err
}

// Boot runs the whole boot once. It is safe to run again after a failure or a reboot: a stale
// interface of the same name is replaced, and a new WireGuard key and AK are made every time.
func Boot(ctx context.Context, cfg Config, logger *slog.Logger) (Result, error) {
	if err := cfg.validate(); err != nil {
		return Result{}, fail(ClassConfig, err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()
	b := &booter{cfg: cfg, logger: logger.With("node", cfg.NodeID)}
	err := b.run(ctx)
	return b.res, err
}

func (b *booter) run(ctx context.Context) error {
	cfg := b.cfg
	// The WireGuard key lives only in this process's memory and is zeroed on the way out.
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return fail(ClassWireGuard, err)
	}
	defer clear(key[:])
	pub := key.PublicKey()

	var tpm *nodeattest.TPM
	if err := b.timed("tpm", func() error {
		open := cfg.OpenTPM
		if open == nil {
			open = func() (tpmconn.Channel, error) { return tpmconn.Open(cfg.TPM) }
		}
		ch, err := open()
		if err != nil {
			return fail(ClassTPM, err)
		}
		if tpm, err = nodeattest.Open(ch, nodeattest.Config{AKAlgorithm: cfg.AKAlgorithm}); err != nil {
			ch.Close()
			return fail(ClassTPM, err)
		}
		return nil
	}); err != nil {
		return err
	}
	defer tpm.Close()

	// A small read buffer: the answers are a few KiB, and nodesim holds thousands of these
	// clients (gRPC's default keeps 32 KiB for the connection's life).
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(cfg.TLS)),
		grpc.WithReadBufferSize(8 << 10),
	}
	attConn, err := grpc.NewClient(cfg.Attestor, opts...)
	if err != nil {
		return fail(ClassConfig, err)
	}
	tmConn, err := grpc.NewClient(cfg.TunnelManager, opts...)
	if err != nil {
		attConn.Close()
		return fail(ClassConfig, err)
	}
	// Once the tunnel is open neither service is asked anything more: their connections go
	// then, not at the end of the boot (during a storm the services would otherwise hold a
	// connection per booting node for nothing).
	closeConns := sync.OnceFunc(func() {
		attConn.Close()
		tmConn.Close()
	})
	defer closeConns()

	// Attestation and tunnel are retried as one when the attestation was spent by an OpenTunnel
	// that failed (the gateway could not add the peer): the node attests again. Other transient
	// OpenTunnel failures are retried with the same attestation (see openTunnel).
	var answer *tunnelmgrv1.OpenTunnelResponse
	attestor := attestorv1.NewAttestorServiceClient(attConn)
	tunnels := tunnelmgrv1.NewTunnelManagerServiceClient(tmConn)
	err = retry(ctx, cfg.Backoff, retryableRPC, func(ctx context.Context) error {
		var att nodeattest.Result
		if err := b.timed("attest", func() error {
			err := retry(ctx, cfg.Backoff, retryableAttestation, func(ctx context.Context) error {
				var err error
				att, err = tpm.Attest(ctx, attestor, cfg.NodeID, pub[:])
				return err
			})
			if err != nil {
				return fail(ClassAttestation, err)
			}
			return nil
		}); err != nil {
			return err
		}
		return b.timed("tunnel", func() error {
			var err error
			answer, err = openTunnel(ctx, cfg.Backoff, tunnels, &tunnelmgrv1.OpenTunnelRequest{AttestationId: att.AttestationID, WireguardPublicKey: pub[:]})
			if err != nil {
				return fail(ClassTunnel, err)
			}
			b.res.TunnelID = answer.GetTunnelId()
			return nil
		})
	})
	if err != nil {
		return err
	}
	closeConns()

	var tun wglocal.Tunnel
	if err := b.timed("wireguard", func() error {
		removeStale(cfg.WireGuard, cfg.Interface)
		var err error
		tun, err = wglocal.Up(ctx, wglocal.Params{Mode: cfg.WireGuard, Interface: cfg.Interface, Key: key, Answer: answer, Logger: b.logger})
		if err != nil {
			return fail(ClassWireGuard, err)
		}
		return nil
	}); err != nil {
		return err
	}
	defer func() {
		if err := b.timed("teardown", func() error { return tun.Close() }); err != nil {
			b.logger.Warn("remove tunnel interface", "err", err)
		}
	}()

	md := newMetadataClient(tun.HTTPClient(), answer.GetMetadataUrl())
	var docs Documents
	if err := b.timed("fetch", func() error {
		var err error
		if docs, err = md.fetchAll(ctx, cfg.Backoff); err != nil {
			return fail(ClassMetadata, err)
		}
		return nil
	}); err != nil {
		return err
	}
	seed := newSeed(cfg.Seed, b.logger)
	defer seed.cleanup()
	if err := b.timed("seed", func() error {
		err := seed.write(docs)
		docs.zero()
		if err != nil {
			return fail(ClassCloudInit, err)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := b.timed("cloud-init", func() error {
		if err := seed.runCloudInit(ctx); err != nil {
			return fail(ClassCloudInit, err)
		}
		return nil
	}); err != nil {
		return err
	}
	return b.timed("phone-home", func() error {
		if err := md.awaitPhoneHome(ctx, cfg.Seed, answer.GetTunnelId()); err != nil {
			return fail(ClassPhoneHome, err)
		}
		return nil
	})
}

// errAttestAgain: the attestation can no longer open the tunnel (it expired, or an attempt that
// failed transiently spent it before failing), so the node attests again.
var errAttestAgain = status.Error(codes.Unavailable, "tunnel: the attestation can no longer be used; attesting again")

// openTunnel asks for the tunnel, retrying transient failures with the same attestation: most
// of them (a connection the busy service closed before the request reached it) leave it
// unspent, and attesting again would cost the node a new place in the attestor's admission
// window. An expired attestation (FailedPrecondition), or one refused after such a failure
// (spent by it), sends the node back to attest, through errAttestAgain; any other refusal is
// the answer.
func openTunnel(ctx context.Context, b Backoff, c tunnelmgrv1.TunnelManagerServiceClient, req *tunnelmgrv1.OpenTunnelRequest) (*tunnelmgrv1.OpenTunnelResponse, error) {
	var (
		answer *tunnelmgrv1.OpenTunnelResponse
		failed bool
	)
	retryable := func(err error) bool { return !errors.Is(err, errAttestAgain) && retryableRPC(err) }
	err := retry(ctx, b, retryable, func(ctx context.Context) error {
		var err error
		answer, err = c.OpenTunnel(ctx, req)
		if code := status.Code(err); code == codes.FailedPrecondition || failed && code == codes.PermissionDenied {
			return errAttestAgain
		}
		failed = err != nil
		return err
	})
	return answer, err
}

// retryableRPC: the service was busy, unreachable or failed inside (a database failover, say);
// a refusal is an answer and ends the boot. Retries stop at the boot's deadline.
func retryableRPC(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded, codes.Aborted, codes.Internal:
		return true
	}
	return false
}

// retryableAttestation adds FailedPrecondition: the session expired or was superseded, and a new
// Begin fixes that. A refused attestation is not retried by the outer attest-and-open loop
// either: its class is attestation, and only a tunnel that failed transiently sends the node back.
func retryableAttestation(err error) bool {
	return retryableRPC(err) || status.Code(err) == codes.FailedPrecondition
}
