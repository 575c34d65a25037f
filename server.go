// Package veneur is a DogStatsD aggregation daemon: it receives metrics,
// aggregates them per interval in a fixed pool of workers and flushes them
// to Datadog (or prints them), forwarding histograms and sets to a global
// instance for fleet-wide percentiles and unique counts.
package veneur

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/getsentry/sentry-go"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/internal/yield"
	"github.com/veneur/veneur/listen"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// VERSION is the build's version: the value set at link time with
// -ldflags "-X github.com/veneur/veneur.VERSION=...", or else the git
// commit the Go toolchain recorded in the binary ("-dirty" when the tree had
// uncommitted changes), or "unknown".
var VERSION = ""

func init() {
	info, ok := debug.ReadBuildInfo()
	VERSION = resolveVersion(VERSION, info, ok)
}

func resolveVersion(linked string, info *debug.BuildInfo, ok bool) string {
	if linked != "" {
		return linked
	}
	if !ok {
		return "unknown"
	}
	var rev string
	var modified bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if modified {
		rev += "-dirty"
	}
	return rev
}

// Server is one veneur instance: it wires the parts (listeners, workers,
// flusher, sinks, the HTTP server) and runs them. NewFromConfig builds the
// parts without starting anything; Start starts them; Shutdown stops them
// in order, flushing what they hold.
type Server struct {
	cfg    Config
	log    *logrus.Logger
	stats  statsd.ClientInterface
	sentry *sentry.Hub // nil without sentry_dsn
	// bind binds every listener's address; it holds the inherited
	// sockets.
	bind   *listen.Binder
	pool   *workerPool
	ingest *ingest
	// listeners in the order Shutdown stops them: the DogStatsD and SSF
	// listeners first, the HTTP server (which takes imports) last.
	listeners []namedListener
	flusher   *flusher
	// tier is the instance's part in a tier of several globals, or nil.
	tier   *tier
	cancel context.CancelFunc
	loop   sync.WaitGroup
	// flushed is the boundary of the flush loop's last flush, in Unix
	// nanoseconds.
	flushed atomic.Int64
	// gate holds imports that arrive once a boundary is due and before
	// its flush has collected the workers.
	gate  boundaryGate
	mu    sync.Mutex // guards state
	state serverState
}

type serverState int

const (
	built serverState = iota
	started
	stopped
)

// namedListener is a listener and the config key of its address.
type namedListener struct {
	key string
	listen.Listener
}

// Options are the parts of a Server that are not in its Config.
type Options struct {
	// Log receives the server's logs; nil means a new logrus logger.
	Log *logrus.Logger
	// Stdout receives printed flushes when api_hostname is empty; nil
	// means os.Stdout.
	Stdout io.Writer
	// HTTPClient makes the sinks' requests; nil means a client with a
	// timeout of one interval.
	HTTPClient *http.Client
	// Stats receives the self-metrics instead of a client for
	// stats_address.
	Stats statsd.ClientInterface
	// Inherited are the sockets the process was started with (systemd
	// socket activation, einhorn), for the addresses that name them; nil
	// knows fd@N only. cmd/veneur reads them from the environment.
	Inherited *listen.Inherited
	// Takeover lets host:port addresses join sockets another veneur
	// holds (SO_REUSEPORT), for a restart that loses nothing: the new
	// veneur starts, then the old one is stopped (veneur -takeover).
	Takeover bool
}

// NewFromConfig builds a server from a config. It validates the config
// (each sink validates its own keys), binds nothing and starts no
// goroutine.
func NewFromConfig(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = logrus.New()
	}
	interval, err := cfg.ParseInterval()
	if err != nil {
		return nil, err
	}
	aggs, err := samplers.ParseAggregates(cfg.Aggregates)
	if err != nil {
		return nil, fmt.Errorf("aggregates: %w", err)
	}
	mode, err := cfg.ParseUnixSocketMode()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, stats: opts.Stats,
		bind: &listen.Binder{Inherited: opts.Inherited, Takeover: opts.Takeover, UnixMode: mode}}
	if s.stats == nil {
		s.stats = &statsd.NoOpClient{}
		if cfg.StatsAddress != "" {
			c, err := newStatsClient(cfg.StatsAddress, "veneur.", log)
			if err != nil {
				return nil, fmt.Errorf("stats_address %q: %w", cfg.StatsAddress, err)
			}
			s.stats = c
		}
	}
	if s.sentry, err = newSentryHub(cfg.SentryDsn, cfg.Hostname); err != nil {
		return nil, err
	}
	if s.sentry != nil {
		log.AddHook(sentryHook{hub: s.sentry})
	}
	s.pool = newWorkerPool(cfg.NumWorkers, cfg.MaxSeriesPerInterval)
	s.ingest = newIngest(s.pool, cfg.MetricMaxLength, log)
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: interval}
	}
	env := plugins.Env{
		Common: plugins.Common{Hostname: cfg.Hostname, Tags: cfg.Tags, Interval: interval},
		Log:    log, Stats: s.stats,
	}
	sinks, err := buildSinks(cfg, opts, env)
	if err != nil {
		return nil, err
	}
	if s.tier, err = newTier(cfg, env); err != nil {
		return nil, err
	}
	if s.tier != nil && cfg.IsLocal() {
		member, err := forwardMember(cfg, opts, env, true)
		if err != nil {
			return nil, err
		}
		s.tier.sharded, err = forward.NewSharded(forward.ShardedConfig{Membership: s.tier.members, NewMember: member, Interval: interval}, env)
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, s.tier.sharded)
	}
	if err := s.buildListeners(); err != nil {
		return nil, err
	}
	s.flusher = &flusher{
		interval:   interval,
		aggs:       aggs,
		pcts:       samplers.NewPercentiles(cfg.Percentiles),
		forwarding: cfg.IsLocal(),
		sinks:      sinks,
		ingest:     s.ingest,
		card:       s.pool.card,
		recycle:    s.pool.recycle,
		reporters:  []reporter{s.ingest},
		log:        log,
		stats:      s.stats,
		guard:      s.guard,
	}
	s.flusher.sinkMu = make([]sync.Mutex, len(sinks))
	for _, l := range s.listeners {
		s.flusher.reporters = append(s.flusher.reporters, l)
	}
	for _, sink := range sinks {
		if r, ok := sink.(plugins.Reporter); ok {
			s.flusher.reporters = append(s.flusher.reporters, r)
		}
	}
	if r, ok := s.stats.(reporter); ok {
		// The self-metrics client's own losses.
		s.flusher.reporters = append(s.flusher.reporters, r)
	}
	return s, nil
}

// buildListeners builds a listener for every address in the config, in
// the order Shutdown stops them.
func (s *Server) buildListeners() error {
	cfg := s.cfg
	opts := listen.Options{Log: s.log, Guard: s.guard, Bind: s.bind}
	if cfg.UdpAddress != "" {
		opts.DatagramReaders += cfg.NumReaders
	}
	if cfg.UnixDatagramAddress != "" {
		opts.DatagramReaders++
	}
	add := func(key string, l listen.Listener, err error) error {
		if err != nil {
			return err
		}
		s.listeners = append(s.listeners, namedListener{key, l})
		return nil
	}
	if cfg.UdpAddress != "" {
		l, err := listen.NewUDP(listen.UDPConfig{
			Address: cfg.UdpAddress, Readers: cfg.NumReaders, ReadBuffer: cfg.ReadBufferSizeBytes, MaxDatagram: cfg.MaxDatagramBytes,
		}, s.ingest.newIngester, opts)
		if err := add("udp_address", l, err); err != nil {
			return err
		}
	}
	if cfg.UnixDatagramAddress != "" {
		l, err := listen.NewUnixDatagram(listen.UnixDatagramConfig{
			Address: cfg.UnixDatagramAddress, ReadBuffer: cfg.ReadBufferSizeBytes, MaxDatagram: cfg.MaxDatagramBytes,
		}, s.ingest.newIngester, opts)
		if err := add("unix_datagram_address", l, err); err != nil {
			return err
		}
	}
	if cfg.TcpAddress != "" {
		tlsConf, err := cfg.TLSConfig()
		if err != nil {
			return err
		}
		idle, err := cfg.ParseTCPIdleTimeout()
		if err != nil {
			return err
		}
		l, err := listen.NewTCP(listen.TCPConfig{
			Address: cfg.TcpAddress, TLS: tlsConf, MaxLength: cfg.MetricMaxLength,
			MaxConnections: cfg.TCPMaxConnections, IdleTimeout: idle,
		}, s.ingest.newIngester, opts)
		if err := add("tcp_address", l, err); err != nil {
			return err
		}
	}
	if cfg.UnixStreamAddress != "" {
		idle, err := cfg.ParseTCPIdleTimeout()
		if err != nil {
			return err
		}
		l, err := listen.NewUnixStream(listen.UnixStreamConfig{
			Address: cfg.UnixStreamAddress, MaxLength: cfg.MetricMaxLength,
			MaxConnections: cfg.TCPMaxConnections, IdleTimeout: idle,
		}, s.ingest.newIngester, opts)
		if err := add("unix_stream_address", l, err); err != nil {
			return err
		}
	}
	if cfg.TraceAddress != "" {
		l, err := listen.NewSSF(listen.SSFConfig{Address: cfg.TraceAddress, MaxLength: cfg.TraceMaxLengthBytes}, s.ingest.newIngester, opts)
		if err := add("trace_address", l, err); err != nil {
			return err
		}
	}
	if cfg.HTTPAddress != "" || cfg.GRPCAddress != "" {
		// One importer for both transports: one memory of batch ids and
		// one bound on concurrent imports. A local retries a forward for
		// as long as it spools it, so the batch ids it may repeat are
		// remembered that long, and two intervals more.
		interval, _ := cfg.ParseInterval()
		age, _ := cfg.SpoolMaxAge()
		imp := forward.NewImporter(gatedMerger{s.pool, &s.gate}, forward.ImporterConfig{
			Remember:          age + 2*interval,
			MaxBodyBytes:      cfg.ImportMaxBodyBytes,
			MaxConcurrency:    cfg.ImportMaxConcurrency,
			RequireClientCert: cfg.HTTPTLSAuthorityCertificate != "",
		})
		if cfg.GRPCAddress != "" {
			tlsConf, err := cfg.GRPCTLSConfig()
			if err != nil {
				return err
			}
			srv, err := forward.NewGRPCServer(imp, forward.GRPCServerConfig{
				Address: cfg.GRPCAddress, Bind: s.bind, TLS: tlsConf, MaxStreamBytes: cfg.ImportMaxBodyBytes, Log: s.log, Guard: s.guard,
			})
			if err := add("grpc_address", srv, err); err != nil {
				return err
			}
		}
		if cfg.HTTPAddress != "" {
			tlsConf, err := cfg.HTTPTLSConfig()
			if err != nil {
				return err
			}
			add("http_address", newWebServer(cfg.HTTPAddress, s.bind, tlsConf, s.handler(imp), imp, s.guard, s.log), nil)
		}
	}
	return nil
}

// addr is the bound address of the listener on config key, or nil.
func (s *Server) addr(key string) net.Addr {
	for _, l := range s.listeners {
		if l.key == key {
			return l.Addr()
		}
	}
	return nil
}

// UDPAddr returns the bound address of the UDP listener, or nil.
func (s *Server) UDPAddr() net.Addr { return s.addr("udp_address") }

// TCPAddr returns the bound address of the TCP listener, or nil.
func (s *Server) TCPAddr() net.Addr { return s.addr("tcp_address") }

// UnixDatagramAddr returns the bound address of the unix datagram
// listener, or nil.
func (s *Server) UnixDatagramAddr() net.Addr { return s.addr("unix_datagram_address") }

// UnixStreamAddr returns the bound address of the unix stream listener, or
// nil.
func (s *Server) UnixStreamAddr() net.Addr { return s.addr("unix_stream_address") }

// TraceAddr returns the bound address of the SSF listener, or nil.
func (s *Server) TraceAddr() net.Addr { return s.addr("trace_address") }

// GRPCAddr returns the bound address of the gRPC listener, or nil.
func (s *Server) GRPCAddr() net.Addr { return s.addr("grpc_address") }

// HTTPAddr returns the bound address of the HTTP listener, or nil.
func (s *Server) HTTPAddr() net.Addr { return s.addr("http_address") }

// Start starts the workers, the listeners and the flush loop. An error
// leaves nothing running.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != built {
		return errors.New("veneur: Start called twice, or after Shutdown")
	}
	s.pool.start(s.guard)
	for i, l := range s.listeners {
		if err := l.Start(); err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			for _, started := range s.listeners[:i] {
				started.Stop(ctx)
			}
			s.pool.stop()
			s.state = stopped
			return err
		}
	}
	if unused := s.bind.Inherited.Unused(); len(unused) > 0 {
		s.log.WithField("sockets", unused).Warn("systemd passed sockets that no address names; name them in udp_address, tcp_address, unix_*_address or http_address (systemd:NAME), or drop them from the socket unit")
	}
	if err := s.bind.Inherited.Ready(); err != nil {
		s.log.WithError(err).Error("einhorn was not told that veneur started; it may stop this worker")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.loop.Add(1)
	go func() {
		defer s.loop.Done()
		defer s.guard()
		s.runFlushLoop(ctx)
	}()
	s.tier.start(s.log, s.stats, s.guard)
	s.state = started
	return nil
}

// runFlushLoop flushes at every wall-clock interval boundary (Unix time a
// multiple of the interval) until ctx ends, so that every instance of a
// tier agrees on which interval a series belongs to; the first interval
// is the part of one left after Start. A flush is stamped with its
// boundary. It does not wait for the sinks: a slow one must not delay the
// next flush. A boundary missed (the process was stopped, or a flush took
// longer than an interval) is skipped and counted in
// flush.skipped_total: the next flush holds both intervals.
func (s *Server) runFlushLoop(ctx context.Context) {
	iv := s.flusher.interval
	next := alignDown(time.Now(), iv).Add(iv)
	s.gate.advance(next)
	defer s.gate.advance(time.Time{})
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	var sinks sync.WaitGroup
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.flush(ctx, next, &sinks)
		s.flushed.Store(next.UnixNano())
		following := next.Add(iv)
		if now := time.Now(); !now.Before(following) {
			skipped := alignDown(now, iv).Sub(next) / iv
			s.stats.Count("flush.skipped_total", int64(skipped), nil, 1)
			s.log.WithField("intervals", int64(skipped)).Warn("flush boundaries were missed; the next flush holds them")
			following = alignDown(now, iv).Add(iv)
		}
		next = following
		s.gate.advance(next)
		t.Reset(time.Until(next))
	}
}

// Flush flushes now: it collects the interval from every worker, hands
// the output to the sinks and waits for them, or for ctx. The server
// flushes itself every interval and once more in Shutdown; after Shutdown
// has stopped the workers, Flush does nothing and says so.
func (s *Server) Flush(ctx context.Context, now time.Time) error {
	var sinks sync.WaitGroup
	if !s.flush(ctx, now, &sinks) {
		return errPoolStopped
	}
	return waitCtx(ctx, &sinks)
}

func (s *Server) flush(ctx context.Context, now time.Time, sinks *sync.WaitGroup) bool {
	// Collecting the workers' intervals is part of the flush too (see
	// flusher.flush).
	yield.BeginWork()
	defer yield.EndWork()
	intervals, ok := s.pool.collect(func(i int, took time.Duration) {
		s.stats.TimeInMilliseconds("flush.worker_duration_ns", nanos(took), []string{"worker:" + fmt.Sprint(i)}, 1)
	})
	if !ok {
		return false
	}
	s.flusher.flush(ctx, intervals, now, sinks)
	return true
}

// boundaryGate keeps imports in the interval they belong to. A local
// flushes at a boundary and forwards at once, so its import reaches the
// global just after the same boundary; were the global's own flush a
// little late (its timer fired late, the machine is busy), the import would
// be merged into the interval that flush publishes, one interval early,
// together with the interval before. So an import that arrives once the
// boundary is due, before the flush of that boundary has collected the
// workers, waits for it (at most gateMaxWait).
type boundaryGate struct {
	mu      sync.Mutex
	due     time.Time     // the boundary the flush loop waits for; zero when it is not running
	flushed chan struct{} // closed when the flush of due is done
}

// gateMaxWait bounds the wait of an import for a late flush.
const gateMaxWait = 2 * time.Second

// advance lets through the imports waiting for the flush that was due,
// and makes due the boundary the loop waits for next (zero: none).
func (g *boundaryGate) advance(due time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.flushed != nil {
		close(g.flushed)
	}
	g.flushed = make(chan struct{})
	g.due = due
}

// wait returns at once unless the boundary the loop waits for has passed
// (its flush is late); then it waits for that flush, or gateMaxWait.
func (g *boundaryGate) wait() {
	g.mu.Lock()
	due, ch := g.due, g.flushed
	g.mu.Unlock()
	if due.IsZero() || time.Now().Before(due) {
		return
	}
	t := time.NewTimer(gateMaxWait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// gatedMerger is the importers' Merger: the workers, behind the gate.
type gatedMerger struct {
	pool *workerPool
	gate *boundaryGate
}

func (m gatedMerger) Merge(metrics []samplers.Forwarded) error {
	m.gate.wait()
	return m.pool.Merge(metrics)
}

func (m gatedMerger) MergeCompact(c *forward.Compact) error {
	m.gate.wait()
	return m.pool.MergeCompact(c)
}

// waitFlushed waits until the flush loop has flushed the boundary b, or
// ctx ends.
func (s *Server) waitFlushed(ctx context.Context, b time.Time) error {
	for s.flushed.Load() < b.UnixNano() {
		wait := max(time.Until(b), 20*time.Millisecond)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	return nil
}

// waitCtx waits for wg, or until ctx ends.
func waitCtx(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closeSinks lets every sink deliver what it still holds, all at once,
// for at most shutdown_timeout (or until ctx ends). What a sink then has to
// drop it logs and counts: that is the bound working, not a failure of
// Shutdown.
func (s *Server) closeSinks(ctx context.Context) {
	timeout, _ := s.cfg.ParseShutdownTimeout()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, sink := range s.flusher.sinks {
		c, ok := sink.(plugins.Closer)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.guard()
			if err := c.Close(ctx); err != nil {
				s.log.WithError(err).WithField("sink", sink.Name()).Warn("shutdown_timeout passed before everything was delivered")
			}
		}()
	}
	wg.Wait()
}

// Shutdown stops the listeners (which process everything already received,
// including datagrams queued in the kernel), stops the workers, flushes
// once more and waits for every flush in flight, or until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stopped {
		return nil
	}
	wasStarted := s.state == started
	s.state = stopped
	if !wasStarted {
		return nil
	}
	var errs []error

	// A member of the global tier leaves it first: it announces the
	// boundary from which no local routes to it, and keeps importing (and
	// flushing on time) until it has published the last interval routed to
	// it.
	if until, err := s.tier.leave(ctx); err != nil {
		errs = append(errs, fmt.Errorf("announcing the leave in etcd: %w", err))
	} else if !until.IsZero() {
		last := until.Add(s.flusher.interval)
		s.log.WithField("until", until.UTC().Format(time.RFC3339)).WithField("last_flush", last.UTC().Format(time.RFC3339)).
			Info("leaving the global tier: importing until the last interval routed here is flushed")
		if err := s.waitFlushed(ctx, last); err != nil {
			errs = append(errs, fmt.Errorf("waiting for the flush of the last interval routed here: %w", err))
		}
	}

	// Stop the ticker first so that the final flush is the last one.
	s.cancel()
	s.loop.Wait()

	for _, l := range s.listeners {
		if err := l.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping %s: %w", l.key, err))
		}
	}
	var sinks sync.WaitGroup
	s.flusher.flush(ctx, s.pool.stop(), time.Now(), &sinks)
	if err := waitCtx(ctx, &s.flusher.inFlight); err != nil {
		errs = append(errs, fmt.Errorf("waiting for in-flight flushes: %w", err))
	}
	s.closeSinks(ctx)
	if err := s.tier.stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("leaving etcd: %w", err))
	}
	// The queues' last self-metrics: what they delivered or dropped.
	for _, sink := range s.flusher.sinks {
		if r, ok := sink.(plugins.Reporter); ok {
			r.Report(s.stats)
		}
	}
	if c, ok := s.stats.(io.Closer); ok {
		c.Close()
	}
	if s.sentry != nil {
		wait := sentryFlushTimeout
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		s.sentry.Flush(wait)
	}
	return errors.Join(errs...)
}
