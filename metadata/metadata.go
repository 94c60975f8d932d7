// Package metadata is the metadata service: the cloud-init datasource nodes reach only through
// their own WireGuard tunnels (with phone-home, which closes the tunnel through tunnelmgr), and
// the admin MetadataService for cloud-init data and secrets, served from one process against
// the shared Postgres inventory.
package metadata

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/attestboot/attestboot/metadata/internal/admin"
	"github.com/attestboot/attestboot/metadata/internal/datasource"
	"github.com/attestboot/attestboot/metadata/internal/nodedocs"
	"github.com/attestboot/attestboot/metadata/internal/seal"
	"github.com/attestboot/attestboot/metadata/internal/tunnelclient"
	"github.com/attestboot/attestboot/services/cli"
	"github.com/attestboot/attestboot/services/config"
	"github.com/attestboot/attestboot/services/daemon"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/metrics"
)

// Config of the metadata process.
type Config struct {
	// Base holds the inventory, the admin API server and the metrics endpoint.
	daemon.Base

	// Gateway is the WireGuard gateway whose tunnels the datasource serves.
	Gateway string
	// HTTPListen is the datasource address: the gateway's tunnel address and a port.
	HTTPListen string
	// WGInterface is the gateway's WireGuard interface; the datasource binds to it.
	WGInterface string
	// Prefix is an extra path prefix the documents are served under.
	Prefix string
	// BaseURL is how nodes reach the datasource (for phone_home); default from HTTPListen.
	BaseURL string
	// PhoneHomeTries is cloud-init's phone_home tries.
	PhoneHomeTries int
	// CloseDelay is how long after a phone-home answer the tunnel is closed.
	CloseDelay time.Duration
	// CacheTTL bounds how long the datasource serves a tunnel's data without re-reading it;
	// tunnel changes and change notifications (inventory.ChannelNodeDocs) invalidate it at
	// once, and without notifications it is kept at most 1 s. Negative re-reads on every
	// request.
	CacheTTL time.Duration

	// KEKFile holds the key-encryption key of secrets (32 raw bytes or 64 hex characters) and
	// KEKID names it. KEKPrevious ("id=path,...") are older keys that still open secrets.
	KEKFile     string
	KEKID       string
	KEKPrevious []string

	// Tunnelmgr is where phone-homes close tunnels; an empty address leaves tunnels to expire.
	Tunnelmgr tunnelclient.Config
}

// DefaultConfig is what the flags start from.
func DefaultConfig() Config {
	return Config{
		Base: daemon.Base{
			Migrate:       true,
			GRPC:          grpcserver.Config{Listen: ":7445", StateDir: "/var/lib/attestboot/pki"},
			MetricsListen: "127.0.0.1:9103",
		},
		HTTPListen:     "100.64.0.1:80",
		PhoneHomeTries: 10,
		CloseDelay:     500 * time.Millisecond,
		CacheTTL:       time.Minute,
		KEKID:          "kek1",
	}
}

// RegisterFlags registers every setting on fs with the current values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Base.RegisterFlags(fs)
	fs.StringVar(&c.Gateway, "gateway", c.Gateway, "name of the WireGuard gateway whose tunnels are served")
	fs.StringVar(&c.HTTPListen, "http-listen", c.HTTPListen, "datasource address: the gateway's tunnel address and port")
	fs.StringVar(&c.WGInterface, "wg-interface", c.WGInterface, "the gateway's WireGuard interface; the datasource accepts only connections through it")
	fs.StringVar(&c.Prefix, "prefix", c.Prefix, "extra path prefix of the documents, e.g. /cloud-init")
	fs.StringVar(&c.BaseURL, "base-url", c.BaseURL, "URL nodes reach the datasource at, for phone_home (default http://<http-listen><prefix>)")
	fs.IntVar(&c.PhoneHomeTries, "phone-home-tries", c.PhoneHomeTries, "cloud-init phone_home tries")
	fs.DurationVar(&c.CloseDelay, "close-delay", c.CloseDelay, "delay between the phone-home answer and closing the tunnel")
	fs.DurationVar(&c.CacheTTL, "cache-ttl", c.CacheTTL, "how long a tunnel's data is served without re-reading it; tunnel and data changes (notified by the inventory) invalidate it at once, and it is kept at most 1s while notifications are not received (negative: re-read on every request)")
	fs.StringVar(&c.KEKFile, "kek-file", c.KEKFile, "key-encryption key of secrets: 32 raw bytes or 64 hex characters, mode 0600")
	fs.StringVar(&c.KEKID, "kek-id", c.KEKID, "id of the key in -kek-file, recorded with every secret it seals")
	fs.Var((*config.StringList)(&c.KEKPrevious), "kek-previous", "older keys that still open secrets: id=path,...")
	fs.StringVar(&c.Tunnelmgr.Addr, "tunnelmgr-addr", c.Tunnelmgr.Addr, "tunnelmgr admin API host:port (empty: tunnels only expire)")
	fs.StringVar(&c.Tunnelmgr.CAFile, "tunnelmgr-ca", c.Tunnelmgr.CAFile, "CA certificates (PEM) of tunnelmgr's server certificate")
	fs.StringVar(&c.Tunnelmgr.CertFile, "tunnelmgr-cert", c.Tunnelmgr.CertFile, "admin client certificate (PEM) for tunnelmgr")
	fs.StringVar(&c.Tunnelmgr.KeyFile, "tunnelmgr-key", c.Tunnelmgr.KeyFile, "admin client key (PEM) for tunnelmgr")
	config.SecretVar(fs, &c.Tunnelmgr.Token, "tunnelmgr-token", "admin bearer token for tunnelmgr")
}

func (c Config) validate() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("metadata: no database URL (-database-url)")
	case c.Gateway == "":
		return errors.New("metadata: no gateway name (-gateway)")
	case c.WGInterface == "":
		return errors.New("metadata: no WireGuard interface (-wg-interface): the datasource must accept only tunnel traffic")
	}
	return nil
}

// Command is the metadata binary.
func Command() cli.Service {
	cfg := DefaultConfig()
	return cli.Service{
		Name:        "metadata",
		EnvPrefix:   "METADATA",
		Flags:       cfg.RegisterFlags,
		DatabaseURL: func() string { return cfg.DatabaseURL },
		Run:         func(ctx context.Context, l *slog.Logger) error { return Run(ctx, cfg, l) },
	}
}

func loadKeys(cfg Config) (*seal.Keyring, error) {
	if cfg.KEKFile == "" {
		if len(cfg.KEKPrevious) > 0 {
			return nil, errors.New("-kek-previous needs -kek-file")
		}
		return nil, nil
	}
	key, err := seal.LoadKey(cfg.KEKFile)
	if err != nil {
		return nil, err
	}
	k, err := seal.New(cfg.KEKID, key)
	if err != nil {
		return nil, err
	}
	for _, p := range cfg.KEKPrevious {
		id, path, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("-kek-previous %q: want id=path", p)
		}
		old, err := seal.LoadKey(path)
		if err != nil {
			return nil, err
		}
		if err := k.Add(id, old); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	keys, err := loadKeys(cfg)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	if keys == nil {
		logger.Warn("no key-encryption key (-kek-file): secrets can be neither stored nor served")
	}
	store, closeDB, err := cfg.Store(ctx)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	defer closeDB()

	var closer interface {
		CloseTunnel(ctx context.Context, tunnelID, reason string) error
	}
	if cfg.Tunnelmgr.Addr != "" {
		c, err := tunnelclient.Dial(cfg.Tunnelmgr)
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		defer c.Close()
		closer = c
	} else {
		logger.Warn("no tunnelmgr (-tunnelmgr-addr): tunnels stay open after phone-home until they expire")
	}

	reg := metrics.NewRegistry()
	dsCfg := datasource.Config{
		Gateway: cfg.Gateway, Listen: cfg.HTTPListen, ReusePort: cfg.GRPC.ReusePort, Interface: cfg.WGInterface, Prefix: cfg.Prefix,
		BaseURL: cfg.BaseURL, PhoneHomeTries: cfg.PhoneHomeTries, CloseDelay: cfg.CloseDelay, CacheTTL: cfg.CacheTTL,
		WatchChanges: true,
	}
	docs := nodedocs.New(store, keys, datasource.PhoneHome(dsCfg))
	ds, err := datasource.New(dsCfg, store, docs, closer, logger, reg)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	adm, err := admin.New(store, keys, docs, ds.InvalidateAll, logger)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	srv, err := cfg.Server(logger, reg)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	adm.Register(srv)

	logger.Info("metadata starting", "listen", cfg.GRPC.Listen, "http_listen", cfg.HTTPListen, "wg_interface", cfg.WGInterface,
		"gateway", cfg.Gateway, "kek_id", cfg.KEKID, "secrets", keys != nil, "tunnelmgr", cfg.Tunnelmgr.Addr)
	return cfg.Serve(ctx, logger, reg, srv, ds.ListenAndServe)
}
