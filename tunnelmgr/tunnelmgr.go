// Package tunnelmgr is the tunnel manager service: it owns one WireGuard gateway device, gives
// attested nodes a peer on it (TunnelManagerService.OpenTunnel), closes and lists tunnels for
// admins and the metadata service (TunnelAdminService), and keeps the device equal to the
// inventory.
package tunnelmgr

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/attestboot/attestboot/services/cli"
	"github.com/attestboot/attestboot/services/daemon"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/metrics"
	"github.com/attestboot/attestboot/services/wgdevice"
	"github.com/attestboot/attestboot/tunnelmgr/internal/gateway"
	"github.com/attestboot/attestboot/tunnelmgr/internal/tunnel"
)

// Config of the tunnelmgr process.
type Config struct {
	daemon.Base

	// Gateway is this gateway's name in the inventory.
	Gateway string
	// Interface is the WireGuard interface; Embedded creates it in-process with wireguard-go.
	Interface string
	Embedded  bool
	// KeyFile keeps the gateway's private key (0600); default <state-dir>/wg-<gateway>.key.
	KeyFile string
	// ListenPort is WireGuard's UDP port; Endpoint is the host:port nodes dial.
	ListenPort int
	Endpoint   string
	// IPv4Pool and IPv6Pool are the node address pools; the gateway takes the first host of each.
	IPv4Pool string
	IPv6Pool string
	// MetadataURL nodes fetch cloud-init data from; default http://<gateway IPv4 address>/.
	MetadataURL string
	// Keepalive is WireGuard's persistent keepalive for nodes; 0 disables it.
	Keepalive time.Duration
	// TunnelTTL closes tunnels that were not closed by phone-home.
	TunnelTTL time.Duration
	// ReconcileInterval between reconciliations without a notification.
	ReconcileInterval time.Duration
}

// DefaultConfig is what the flags start from.
func DefaultConfig() Config {
	return Config{
		Base: daemon.Base{
			Migrate:       true,
			GRPC:          grpcserver.Config{Listen: ":7444", StateDir: "/var/lib/attestboot/pki"},
			MetricsListen: "127.0.0.1:9102",
		},
		Gateway:           "gw0",
		Interface:         "attestboot0",
		Embedded:          true,
		ListenPort:        51820,
		IPv4Pool:          "100.64.0.0/16",
		Keepalive:         25 * time.Second,
		TunnelTTL:         10 * time.Minute,
		ReconcileInterval: 5 * time.Second,
	}
}

// RegisterFlags registers every setting on fs with the current values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Base.RegisterFlags(fs)
	fs.StringVar(&c.Gateway, "gateway", c.Gateway, "name of this gateway in the inventory")
	fs.StringVar(&c.Interface, "wg-interface", c.Interface, "WireGuard interface of the gateway")
	fs.BoolVar(&c.Embedded, "wg-embedded", c.Embedded, "create the interface in-process with wireguard-go (false: use an existing kernel or wireguard-go interface)")
	fs.StringVar(&c.KeyFile, "wg-key-file", c.KeyFile, "file keeping the gateway's private key, created on first start (default <state-dir>/wg-<gateway>.key)")
	fs.IntVar(&c.ListenPort, "wg-port", c.ListenPort, "WireGuard UDP listen port")
	fs.StringVar(&c.Endpoint, "endpoint", c.Endpoint, "host:port nodes dial to reach the gateway (required)")
	fs.StringVar(&c.IPv4Pool, "pool-v4", c.IPv4Pool, "IPv4 pool of node tunnel addresses (empty: none)")
	fs.StringVar(&c.IPv6Pool, "pool-v6", c.IPv6Pool, "IPv6 pool of node tunnel addresses (empty: none)")
	fs.StringVar(&c.MetadataURL, "metadata-url", c.MetadataURL, "metadata datasource URL over the tunnel (default http://<gateway address>/)")
	fs.DurationVar(&c.Keepalive, "keepalive", c.Keepalive, "persistent keepalive nodes use (0: off)")
	fs.DurationVar(&c.TunnelTTL, "tunnel-ttl", c.TunnelTTL, "how long a tunnel lives without phone-home")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", c.ReconcileInterval, "time between reconciliations without a notification")
}

// info turns the configuration into the gateway's inventory row (without the public key).
func (c *Config) info() (inventory.Gateway, []netip.Prefix, error) {
	g := inventory.Gateway{Name: c.Gateway, Endpoint: c.Endpoint, MetadataURL: c.MetadataURL, KeepaliveSeconds: int(c.Keepalive / time.Second)}
	if c.Endpoint == "" {
		return g, nil, errors.New("no -endpoint: nodes need the gateway's host:port")
	}
	var ifAddrs []netip.Prefix
	for _, p := range []struct {
		s    string
		pool *netip.Prefix
		addr *netip.Addr
		v4   bool
	}{{c.IPv4Pool, &g.IPv4Pool, &g.AddressV4, true}, {c.IPv6Pool, &g.IPv6Pool, &g.AddressV6, false}} {
		if p.s == "" {
			continue
		}
		pool, err := netip.ParsePrefix(p.s)
		if err != nil || pool.Addr().Is4() != p.v4 || pool.Bits() > pool.Addr().BitLen()-2 {
			return g, nil, fmt.Errorf("pool %q: want an IPv%d prefix with room for nodes", p.s, map[bool]int{true: 4, false: 6}[p.v4])
		}
		*p.pool = pool.Masked()
		*p.addr = pool.Masked().Addr().Next()
		ifAddrs = append(ifAddrs, netip.PrefixFrom(*p.addr, pool.Bits()))
	}
	if len(ifAddrs) == 0 {
		return g, nil, errors.New("no address pool (-pool-v4 or -pool-v6)")
	}
	if g.MetadataURL == "" {
		host := g.AddressV4.String()
		if !g.AddressV4.IsValid() {
			host = "[" + g.AddressV6.String() + "]"
		}
		g.MetadataURL = "http://" + host + "/"
	}
	return g, ifAddrs, nil
}

// Command is the tunnelmgr binary; cmd/tunnelmgr runs it with the process arguments.
func Command() cli.Service {
	cfg := DefaultConfig()
	return cli.Service{
		Name:        "tunnelmgr",
		EnvPrefix:   "TUNNELMGR",
		Flags:       cfg.RegisterFlags,
		DatabaseURL: func() string { return cfg.DatabaseURL },
		Run:         func(ctx context.Context, l *slog.Logger) error { return Run(ctx, cfg, l) },
	}
}

var nodeFacing = []string{"attestboot.tunnelmgr.v1.TunnelManagerService"}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	info, ifAddrs, err := cfg.info()
	if err != nil {
		return fmt.Errorf("tunnelmgr: %w", err)
	}
	keyFile := cfg.KeyFile
	if keyFile == "" {
		if cfg.GRPC.StateDir == "" {
			return errors.New("tunnelmgr: no -wg-key-file and no -state-dir to keep the gateway key in")
		}
		keyFile = filepath.Join(cfg.GRPC.StateDir, "wg-"+cfg.Gateway+".key")
	}
	key, err := wgdevice.LoadOrCreateKey(keyFile)
	if err != nil {
		return fmt.Errorf("tunnelmgr: %w", err)
	}
	pub := key.PublicKey()
	info.PublicKey = pub[:]

	store, closeDB, err := cfg.Store(ctx)
	if err != nil {
		return fmt.Errorf("tunnelmgr: %w", err)
	}
	defer closeDB()
	if info, err = store.UpsertGateway(ctx, info); err != nil {
		return fmt.Errorf("tunnelmgr: %w", err)
	}

	dev, err := wgdevice.Open(wgdevice.Config{
		Name: cfg.Interface, Embedded: cfg.Embedded, Addresses: ifAddrs, ListenPort: cfg.ListenPort, PrivateKey: key,
	}, logger)
	if err != nil {
		return fmt.Errorf("tunnelmgr: %w", err)
	}
	defer dev.Close()

	reg := metrics.NewRegistry()
	gw, err := gateway.New(gateway.Config{Name: cfg.Gateway, Interface: cfg.Interface, Interval: cfg.ReconcileInterval},
		dev.Client(), store, logger, reg)
	if err != nil {
		return fmt.Errorf("tunnelmgr: %w", err)
	}
	// The device must equal the inventory before the first node is served.
	if _, err := gw.Reconcile(ctx); err != nil {
		return fmt.Errorf("tunnelmgr: first reconciliation: %w", err)
	}
	svc, err := tunnel.New(tunnel.Config{Gateway: gw, Info: info, TTL: cfg.TunnelTTL}, store, logger, reg)
	if err != nil {
		return fmt.Errorf("tunnelmgr: %w", err)
	}
	srv, err := cfg.Server(logger, reg, nodeFacing...)
	if err != nil {
		return fmt.Errorf("tunnelmgr: %w", err)
	}
	svc.Register(srv)
	logger.Info("tunnelmgr starting", "listen", cfg.GRPC.Listen, "gateway", cfg.Gateway, "interface", cfg.Interface,
		"embedded", cfg.Embedded, "endpoint", cfg.Endpoint, "public_key", key.PublicKey().String())
	return cfg.Serve(ctx, logger, reg, srv, gw.Run)
}
