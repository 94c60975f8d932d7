package datasource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/attestboot/attestboot/metadata/internal/nodedocs"
	"github.com/attestboot/attestboot/metadata/internal/render"
	"github.com/attestboot/attestboot/services/inventory"
	"github.com/attestboot/attestboot/services/reuseport"
)

// eventService names this service in the event log.
const eventService = "metadata"

// Event kinds written here.
const (
	EventRefused          = "metadata.refused"
	EventSecretsDelivered = "metadata.secrets_delivered"
	EventBootCompleted    = "boot.completed"
	EventCloseFailed      = "metadata.tunnel_close_failed"
)

// tunnelCloser ends a node's tunnel once it phoned home. Implemented by *tunnelclient.Client
// (tunnelmgr's TunnelAdminService over TLS) and, in tests, by *closertest.Fake.
type tunnelCloser interface {
	CloseTunnel(ctx context.Context, tunnelID, reason string) error
}

// Config of the datasource.
type Config struct {
	// Gateway is the name of the WireGuard gateway whose tunnels this server answers.
	Gateway string
	// Listen is the gateway's tunnel address and port, e.g. "100.64.0.1:80".
	Listen string
	// Interface is the WireGuard interface the listener is bound to (SO_BINDTODEVICE). Empty
	// binds to no device: only for tests and benchmarks over loopback.
	Interface string
	// ReusePort lets replicas on one host share Listen (see services/reuseport).
	ReusePort bool
	// Prefix is a path prefix under which the documents are served too, e.g. "/cloud-init".
	Prefix string
	// BaseURL is what nodes use to reach this server, for the phone_home stanza. Default
	// "http://" + Listen + Prefix.
	BaseURL string
	// PhoneHomeTries is cloud-init's phone_home "tries". Default 10.
	PhoneHomeTries int
	// MaxPhoneHomeBytes bounds a phone-home body. Default 64 KiB.
	MaxPhoneHomeBytes int64
	// CloseDelay is how long after answering a phone-home the tunnel is closed, so that the
	// answer (and a retransmission of it) crosses the tunnel before the peer goes. Default 500 ms.
	CloseDelay time.Duration
	// CloseTimeout bounds the CloseTunnel call. Default 10 s.
	CloseTimeout time.Duration
	// ListenRetry is how often listening is retried while the interface or address is missing.
	// Default 500 ms.
	ListenRetry time.Duration
	// CacheTTL is how long a read of a tunnel's data (node, groups, cloud-init data, secrets)
	// and the documents rendered from it are served again (see cache) while changes are
	// watched; which tunnel owns the source address is checked on every request regardless.
	// Default 1 min; at most 1 s while changes made elsewhere could go unnoticed; negative
	// re-reads on every request (documents are then still rendered only when what was read
	// changed).
	CacheTTL time.Duration
	// WatchChanges listens for the inventory's notifications of changes to what documents
	// are made of (inventory.ChannelNodeDocs: any replica's or tool's change) and drops the
	// cached reads at each one. Without it, reads are kept at most 1 s.
	WatchChanges bool
	// AuditInterval is how often repeated secret deliveries are written as one event per
	// tunnel and document (see audit). Default 1 s.
	AuditInterval time.Duration
}

func (c *Config) setDefaults() {
	c.Prefix = "/" + strings.Trim(c.Prefix, "/")
	if c.Prefix == "/" {
		c.Prefix = ""
	}
	if c.BaseURL == "" {
		c.BaseURL = "http://" + c.Listen + c.Prefix
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.PhoneHomeTries == 0 {
		c.PhoneHomeTries = 10
	}
	if c.MaxPhoneHomeBytes == 0 {
		c.MaxPhoneHomeBytes = 64 << 10
	}
	if c.CloseDelay == 0 {
		c.CloseDelay = 500 * time.Millisecond
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 10 * time.Second
	}
	if c.ListenRetry == 0 {
		c.ListenRetry = 500 * time.Millisecond
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = time.Minute
	}
	if c.AuditInterval == 0 {
		c.AuditInterval = time.Second
	}
}

func (c *Config) validate() error {
	switch {
	case c.Gateway == "":
		return errors.New("datasource: no gateway name")
	case c.Listen == "":
		return errors.New("datasource: no listen address")
	case c.PhoneHomeTries < 1, c.MaxPhoneHomeBytes < 1, c.CloseDelay < 0, c.CloseTimeout < 0, c.ListenRetry < 0, c.AuditInterval < 0:
		return errors.New("datasource: phone-home tries, sizes and durations must be positive")
	case strings.ContainsAny(c.Prefix, "?#"):
		return fmt.Errorf("datasource: prefix %q: a path only", c.Prefix)
	}
	return nil
}

// Server is the datasource.
type Server struct {
	cfg     Config
	store   *inventory.Store
	docs    *nodedocs.Builder
	closer  tunnelCloser
	log     *slog.Logger
	metrics *serverMetrics
	cache   *cache
	audit   *audit
	watch   *inventory.Listener // nil unless cfg.WatchChanges

	// closes tracks CloseTunnel calls started after phone-homes, so Serve returns after them.
	closes sync.WaitGroup
	// base is the context of those calls; it ends when Serve's does.
	baseMu sync.Mutex
	base   context.Context
}

// New returns a datasource. closer may be nil: tunnels then end only when they expire.
func New(cfg Config, store *inventory.Store, docs *nodedocs.Builder, closer tunnelCloser, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if store == nil || docs == nil {
		return nil, errors.New("datasource: nil store or document builder")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, store: store, docs: docs, closer: closer, log: logger, metrics: m, base: context.Background(),
		audit: newAudit(store, logger, store.Clock()),
	}
	var watch changeWatch // nil, not a nil *inventory.Listener
	if cfg.WatchChanges {
		s.watch, err = inventory.NewListener(store.Pool(), inventory.ListenerConfig{
			Channels: []string{inventory.ChannelNodeDocs}, Logger: logger,
		})
		if err != nil {
			return nil, err
		}
		watch = s.watch
	}
	s.cache = newCache(cfg.Gateway, store, docs, cfg.CacheTTL, store.Clock(), watch)
	return s, nil
}

// watchChanges drops every cached read at each change notification, and when the listener
// (re)starts listening, since changes may have gone unnoticed before. It returns when ctx ends.
func (s *Server) watchChanges(ctx context.Context) {
	var run sync.WaitGroup
	defer run.Wait()
	run.Go(func() {
		if err := s.watch.Run(ctx); err != nil {
			s.log.Error("datasource: change listener", "err", err)
		}
	})
	for {
		select {
		case _, ok := <-s.watch.Notifications():
			if !ok {
				return
			}
			s.cache.invalidateAll()
		case <-ctx.Done():
			return
		}
	}
}

// InvalidateAll makes the datasource read every tunnel's data again at its next request: the
// admin API calls it after changing cloud-init data or secrets.
func (s *Server) InvalidateAll() { s.cache.invalidateAll() }

// PhoneHome is the stanza vendor-data carries for cfg.
func PhoneHome(cfg Config) render.PhoneHome {
	cfg.setDefaults()
	return render.PhoneHome{URL: cfg.BaseURL + "/phone-home", Tries: cfg.PhoneHomeTries}
}

// Listen opens the listener on cfg.Listen bound to cfg.Interface, retrying until the interface
// and its address exist or ctx ends.
func (s *Server) Listen(ctx context.Context) (net.Listener, error) {
	lc := net.ListenConfig{}
	if s.cfg.Interface != "" || s.cfg.ReusePort {
		iface := s.cfg.Interface
		lc.Control = func(network, address string, c syscall.RawConn) error {
			if s.cfg.ReusePort {
				if err := reuseport.Control(network, address, c); err != nil {
					return err
				}
			}
			if iface == "" {
				return nil
			}
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), iface) }); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("bind to device %s: %w", iface, serr)
			}
			return nil
		}
	}
	logged := false
	for {
		var err error
		if s.cfg.Interface != "" {
			_, err = net.InterfaceByName(s.cfg.Interface)
		}
		if err == nil {
			var l net.Listener
			if l, err = lc.Listen(ctx, "tcp", s.cfg.Listen); err == nil {
				return l, nil
			}
		}
		if !logged {
			s.log.Info("datasource waiting for its interface", "interface", s.cfg.Interface, "listen", s.cfg.Listen, "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(s.cfg.ListenRetry):
		}
	}
}

// ListenAndServe listens (see Listen) and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	l, err := s.Listen(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("datasource: listen: %w", err)
	}
	return s.Serve(ctx, l)
}

// Serve answers on l until ctx ends, then shuts down gracefully and waits for pending tunnel
// closes.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.baseMu.Lock()
	s.base = ctx
	s.baseMu.Unlock()
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	// Background work ends after the HTTP server, so the last deliveries are flushed.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var bgDone sync.WaitGroup
	bgDone.Go(func() { s.audit.run(bg, s.cfg.AuditInterval) })
	if s.watch != nil {
		bgDone.Go(func() { s.watchChanges(bg) })
	}
	defer func() {
		stopBG()
		bgDone.Wait()
	}()

	s.log.Info("datasource serving", "listen", l.Addr().String(), "interface", s.cfg.Interface, "gateway", s.cfg.Gateway,
		"prefix", s.cfg.Prefix, "cache_ttl", s.cfg.CacheTTL)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		s.closes.Wait()
		return fmt.Errorf("datasource: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	s.closes.Wait()
	if err != nil {
		return fmt.Errorf("datasource: shutdown: %w", err)
	}
	return nil
}

// Handler is the HTTP handler, usable on any listener whose connections carry the node's
// tunnel address as remote address.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// route maps a request path to a document or "phone-home"; ok is false for any other path.
func (s *Server) route(path string) (doc string, ok bool) {
	if s.cfg.Prefix != "" {
		if rest, found := strings.CutPrefix(path, s.cfg.Prefix); found && strings.HasPrefix(rest, "/") {
			path = rest
		}
	}
	name := strings.TrimPrefix(path, "/")
	if head, _, found := strings.Cut(name, "/"); found && head == "phone-home" {
		return "phone-home", true
	}
	name = strings.TrimSuffix(name, "/")
	switch name {
	case string(render.MetaData), string(render.UserData), string(render.VendorData), string(render.NetworkConfig), "phone-home":
		return name, true
	}
	return "", false
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	doc, ok := s.route(r.URL.Path)
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	defer func() { s.metrics.observe(doc, rec.code, time.Since(start)) }()
	if !ok {
		doc = "unknown"
		http.NotFound(rec, r)
		return
	}
	switch {
	case doc == "phone-home" && r.Method != http.MethodPost:
		rec.Header().Set("Allow", http.MethodPost)
		http.Error(rec, "method not allowed", http.StatusMethodNotAllowed)
		return
	case doc != "phone-home" && r.Method != http.MethodGet && r.Method != http.MethodHead:
		rec.Header().Set("Allow", "GET, HEAD")
		http.Error(rec, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ctx := r.Context()
	src, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		s.log.ErrorContext(ctx, "datasource: unparsable remote address", "remote", r.RemoteAddr)
		http.Error(rec, "forbidden", http.StatusForbidden)
		return
	}
	addr := src.Addr().Unmap()
	v, err := s.cache.lookup(ctx, addr)
	if errors.Is(err, inventory.ErrNotFound) {
		s.refuse(ctx, rec, http.StatusForbidden, "", "no_open_tunnel", map[string]any{"source": addr.String(), "path": r.URL.Path})
		return
	}
	if err != nil {
		s.unavailable(ctx, rec, doc, "", err)
		return
	}
	node, tun := v.src.Node, v.src.Tunnel
	if doc == "phone-home" {
		s.phoneHome(rec, r, node, tun, addr)
		return
	}
	d := s.cache.document(v, render.Kind(doc))
	if d.err != nil {
		s.unavailable(ctx, rec, doc, node.ID, d.err)
		return
	}
	res := d.res
	if len(res.Secrets) > 0 {
		if err := s.recordDelivery(ctx, d, doc, node.ID, tun.ID, addr.String()); err != nil {
			s.unavailable(ctx, rec, doc, node.ID, err)
			return
		}
	}
	h := rec.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	if r.Method == http.MethodHead {
		rec.WriteHeader(http.StatusOK)
		return
	}
	_, _ = rec.Write(res.Body)
}

// recordDelivery puts the delivery of d's secrets in the event log. The first delivery of a
// rendered document to a tunnel is written before the answer leaves (no delivery without its
// audit record); the same document delivered again is counted and written in batches (audit).
func (s *Server) recordDelivery(ctx context.Context, d *document, doc, nodeID, tunnelID, source string) error {
	delivered := make([]string, 0, len(d.res.Secrets))
	for _, n := range d.res.Secrets {
		if !contains(d.res.Withheld, n) {
			delivered = append(delivered, n)
		}
	}
	if !d.recorded.Load() {
		d.recordMu.Lock()
		defer d.recordMu.Unlock()
		if !d.recorded.Load() {
			detail := map[string]any{"document": doc, "secrets": delivered, "tunnel_id": tunnelID, "source": source, "count": 1}
			if len(d.res.Withheld) > 0 {
				detail["withheld_after_phone_home"] = d.res.Withheld
			}
			if err := s.store.AppendEventGrouped(ctx, inventory.Event{NodeID: nodeID, Kind: EventSecretsDelivered, Service: eventService, Detail: detail}); err != nil {
				return err
			}
			d.recorded.Store(true)
			s.log.InfoContext(ctx, "secrets delivered", "node", nodeID, "document", doc, "secrets", delivered, "withheld", d.res.Withheld)
			return nil
		}
	}
	s.audit.add(nodeID, tunnelID, doc, source, delivered, d.res.Withheld)
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// refuse answers code and records why, never telling the caller more than the code.
func (s *Server) refuse(ctx context.Context, w http.ResponseWriter, code int, nodeID, reason string, detail map[string]any) {
	s.log.WarnContext(ctx, "datasource refused a request", "code", code, "node", nodeID, "reason", reason, "detail", detail)
	if err := s.store.AppendEventGrouped(context.WithoutCancel(ctx), inventory.Event{
		NodeID: nodeID, Kind: EventRefused, Service: eventService, Reason: reason, Detail: detail,
	}); err != nil {
		s.log.ErrorContext(ctx, "datasource: record refusal", "err", err)
	}
	http.Error(w, http.StatusText(code), code)
}

// unavailable answers 503 for an error of the inventory or of rendering; the detail goes to the
// log only (render errors never quote secret values).
func (s *Server) unavailable(ctx context.Context, w http.ResponseWriter, doc, nodeID string, err error) {
	if ctx.Err() != nil {
		return // the node went away
	}
	s.log.ErrorContext(ctx, "datasource cannot answer", "document", doc, "node", nodeID, "err", err)
	w.Header().Set("Retry-After", "2")
	http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
}

// statusRecorder remembers the status code for metrics.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection's Flush.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

type serverMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	m := &serverMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestboot_metadata_http_requests_total", Help: "Datasource requests by document and status code.",
		}, []string{"document", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "attestboot_metadata_http_request_duration_seconds", Help: "Datasource request latency by document.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"document"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.latency} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("datasource: metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *serverMetrics) observe(doc string, code int, d time.Duration) {
	m.requests.WithLabelValues(doc, fmt.Sprint(code)).Inc()
	m.latency.WithLabelValues(doc).Observe(d.Seconds())
}
