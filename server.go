// Package veneur is a DogStatsD aggregation daemon: it receives metrics,
// aggregates them per interval in a fixed pool of workers and flushes them
// to Datadog (or prints them), forwarding histograms and sets to a global
// instance for fleet-wide percentiles and unique counts.
package veneur

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/getsentry/sentry-go"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/plugins/influxdb"
	"github.com/veneur/veneur/plugins/s3"
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

// Server is one veneur instance. NewFromConfig builds it without starting
// anything; Start binds its sockets and starts its goroutines; Shutdown
// stops it, flushing what it holds.
type Server struct {
	cfg      Config
	log      *logrus.Logger
	stats    statsd.ClientInterface
	interval time.Duration
	aggs     samplers.Aggregates
	pcts     []samplers.Percentile
	seed     maphash.Seed

	workers   []*Worker
	batchPool *sync.Pool
	ingest    ingestStats
	sinks     []MetricSink

	udpSocks []*udpSocket
	// singleP selects the UDP readers' single-P mode (see udpSocket): set
	// when GOMAXPROCS is 1 at NewFromConfig.
	singleP bool
	tcp     *tcpListener
	tlsConf *tls.Config
	sentry  *sentry.Hub // nil without sentry_dsn
	fwd     *forwarder  // nil at the root (no forward_address)
	httpLn  net.Listener
	httpSrv *http.Server

	imports importStats
	events  eventBuffer
	// SSF trace spans: the listener, its counters, the interval's spans.
	traceConn   *net.UDPConn
	traces      traceStats
	spans       spanBuffer
	traceClient *http.Client
	// importMu guards importClosed: Shutdown sets it before it closes the
	// worker queues, and /import hands batches over only while it is not.
	importMu     sync.RWMutex
	importClosed bool

	stopping   atomic.Bool
	cancel     context.CancelFunc
	readers    sync.WaitGroup
	workerWG   sync.WaitGroup
	flushLoop  sync.WaitGroup
	inFlight   sync.WaitGroup
	flushMu    sync.Mutex // one flush at a time
	shutdownMu sync.Mutex
	shutDown   bool
}

// Options are the parts of a Server that are not in its Config.
type Options struct {
	// Log receives the server's logs; nil means a new logrus logger.
	Log *logrus.Logger
	// Stdout receives printed flushes when api_hostname is empty; nil
	// means os.Stdout.
	Stdout io.Writer
	// HTTPClient posts to Datadog; nil means a client with a timeout of
	// one interval.
	HTTPClient *http.Client
}

// NewFromConfig builds a server from a validated config. It binds nothing
// and starts no goroutine.
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
	s := &Server{
		cfg:       cfg,
		log:       log,
		interval:  interval,
		aggs:      aggs,
		pcts:      samplers.NewPercentiles(cfg.Percentiles),
		seed:      maphash.MakeSeed(),
		batchPool: newBatchPool(),
		stats:     &statsd.NoOpClient{},
	}
	if cfg.StatsAddress != "" {
		c, err := statsd.New(cfg.StatsAddress, statsd.WithoutTelemetry(), statsd.WithNamespace("veneur."))
		if err != nil {
			return nil, fmt.Errorf("stats_address %q: %w", cfg.StatsAddress, err)
		}
		s.stats = c
	}
	if s.tlsConf, err = cfg.TLSConfig(); err != nil {
		return nil, err
	}
	if s.sentry, err = newSentryHub(cfg.SentryDsn, cfg.Hostname); err != nil {
		return nil, err
	}
	if s.sentry != nil {
		log.AddHook(sentryHook{hub: s.sentry})
	}
	for i := 0; i < cfg.NumWorkers; i++ {
		s.workers = append(s.workers, newWorker(s.batchPool))
	}
	if cfg.APIHostname == "" {
		s.sinks = append(s.sinks, newPrintSink(opts.Stdout, cfg, interval))
	} else {
		client := opts.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: interval}
		}
		s.sinks = append(s.sinks, newDatadogSink(cfg, interval, client, log, s.stats))
	}
	if cfg.InfluxAddress != "" {
		p, err := influxdb.New(influxdb.Config{
			Address: cfg.InfluxAddress, Database: cfg.InfluxDBName, Consistency: cfg.InfluxConsistency,
			Hostname: cfg.Hostname, Tags: cfg.Tags, Client: &http.Client{Timeout: interval},
		})
		if err != nil {
			return nil, err
		}
		s.sinks = append(s.sinks, p)
	}
	if cfg.AwsS3Bucket != "" {
		p, err := s3.New(context.Background(), s3.Config{
			Bucket: cfg.AwsS3Bucket, Region: cfg.AwsRegion,
			AccessKeyID: cfg.AwsAccessKeyID, SecretAccessKey: cfg.AwsSecretAccessKey,
			Hostname: cfg.Hostname, Tags: cfg.Tags, Interval: interval, Timeout: interval,
		})
		if err != nil {
			return nil, err
		}
		s.sinks = append(s.sinks, p)
	}
	s.singleP = runtime.GOMAXPROCS(0) == 1
	s.traceClient = opts.HTTPClient
	if s.traceClient == nil {
		s.traceClient = &http.Client{Timeout: interval}
	}
	if cfg.ForwardAddress != "" {
		client := opts.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: interval}
		}
		s.fwd = newForwarder(cfg.ForwardAddress, client, log, s.stats)
	}
	return s, nil
}

// UDPAddr returns the bound address of the UDP listener, or nil.
func (s *Server) UDPAddr() net.Addr {
	if len(s.udpSocks) == 0 {
		return nil
	}
	return s.udpSocks[0].LocalAddr()
}

// TCPAddr returns the bound address of the TCP listener, or nil.
func (s *Server) TCPAddr() net.Addr {
	if s.tcp == nil {
		return nil
	}
	return s.tcp.ln.Addr()
}

// TraceAddr returns the bound address of the SSF listener, or nil.
func (s *Server) TraceAddr() net.Addr {
	if s.traceConn == nil {
		return nil
	}
	return s.traceConn.LocalAddr()
}

// HTTPAddr returns the bound address of the HTTP listener, or nil.
func (s *Server) HTTPAddr() net.Addr {
	if s.httpLn == nil {
		return nil
	}
	return s.httpLn.Addr()
}

// Start binds the listeners and starts readers, workers, the HTTP server
// and the flush loop. An error leaves nothing running.
func (s *Server) Start() error {
	if err := s.bind(); err != nil {
		s.closeListeners()
		return err
	}
	for _, w := range s.workers {
		s.workerWG.Add(1)
		go func() {
			defer s.workerWG.Done()
			defer s.consumePanic()
			w.run()
		}()
	}
	size := s.cfg.MetricMaxLength + 1
	if len(s.udpSocks) > 0 && !s.singleP {
		if before, after := reserveReaderProcs(len(s.udpSocks)); after != before {
			s.log.WithFields(logrus.Fields{"from": before, "to": after}).Info(
				"raised GOMAXPROCS: each UDP reader keeps a P while busy, and the workers need one more")
		}
	}
	for _, sock := range s.udpSocks {
		in := s.newIngester()
		s.readers.Add(1)
		go func() {
			defer s.readers.Done()
			defer s.consumePanic()
			if err := readUDP(sock, in, size, s.stopping.Load); err != nil {
				s.log.WithError(err).Error("UDP reader stopped")
			}
		}()
	}
	if s.tcp != nil {
		s.readers.Add(1)
		go s.tcp.accept()
	}
	if s.traceConn != nil {
		in := s.newIngester()
		s.readers.Add(1)
		go func() {
			defer s.readers.Done()
			defer s.consumePanic()
			s.readTraces(s.traceConn, in)
		}()
	}
	if s.httpLn != nil {
		s.httpSrv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			defer s.consumePanic()
			if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.WithError(err).Error("HTTP server stopped")
			}
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.flushLoop.Add(1)
	go func() {
		defer s.flushLoop.Done()
		defer s.consumePanic()
		s.runFlushLoop(ctx)
	}()
	return nil
}

func (s *Server) bind() error {
	if s.cfg.UdpAddress != "" {
		addr := s.cfg.UdpAddress
		reuse := s.cfg.NumReaders > 1
		for i := 0; i < s.cfg.NumReaders; i++ {
			sock, granted, err := listenUDP(addr, reuse, s.cfg.ReadBufferSizeBytes, s.singleP)
			if err != nil {
				return fmt.Errorf("udp_address %q: %w", s.cfg.UdpAddress, err)
			}
			if granted < s.cfg.ReadBufferSizeBytes && i == 0 {
				s.log.WithFields(logrus.Fields{"requested": s.cfg.ReadBufferSizeBytes, "granted": granted}).Warn(
					"the kernel granted a smaller UDP receive buffer than read_buffer_size_bytes; raise net.core.rmem_max to avoid drops")
			}
			s.udpSocks = append(s.udpSocks, sock)
			// Later sockets join the port the first one got (which
			// matters when the config asked for port 0).
			addr = sock.LocalAddr().String()
		}
	}
	if s.cfg.TcpAddress != "" {
		ln, err := net.Listen("tcp", s.cfg.TcpAddress)
		if err != nil {
			return fmt.Errorf("tcp_address %q: %w", s.cfg.TcpAddress, err)
		}
		s.tcp = &tcpListener{ln: ln, tls: s.tlsConf, s: s, conns: map[net.Conn]struct{}{}}
	}
	if s.cfg.TraceAddress != "" {
		ua, err := net.ResolveUDPAddr("udp", s.cfg.TraceAddress)
		if err == nil {
			s.traceConn, err = net.ListenUDP("udp", ua)
		}
		if err != nil {
			return fmt.Errorf("trace_address %q: %w", s.cfg.TraceAddress, err)
		}
	}
	if s.cfg.HTTPAddress != "" {
		ln, err := listenHTTP(s.cfg.HTTPAddress)
		if err != nil {
			return fmt.Errorf("http_address %q: %w", s.cfg.HTTPAddress, err)
		}
		s.httpLn = ln
	}
	return nil
}

func (s *Server) closeListeners() {
	for _, c := range s.udpSocks {
		c.Close()
	}
	if s.tcp != nil {
		s.tcp.ln.Close()
	}
	if s.traceConn != nil {
		s.traceConn.Close()
	}
	if s.httpLn != nil {
		s.httpLn.Close()
	}
}

// Shutdown stops the listeners, processes everything already received
// (including datagrams queued in the kernel), flushes once more and waits
// for in-flight flushes, or until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownMu.Lock()
	defer s.shutdownMu.Unlock()
	if s.shutDown {
		return nil
	}
	s.shutDown = true

	// Stop the ticker first so that the final flush is the last one.
	if s.cancel != nil {
		s.cancel()
	}
	s.flushLoop.Wait()

	// Wake the readers: they drain their sockets and return.
	s.stopping.Store(true)
	for _, c := range s.udpSocks {
		c.wake()
	}
	if s.tcp != nil {
		s.tcp.close()
	}
	if s.traceConn != nil {
		// Reads take what is already queued until the deadline passes.
		s.traceConn.SetReadDeadline(time.Now().Add(tcpDrainIdle))
	}
	s.readers.Wait()
	if s.traceConn != nil {
		s.traceConn.Close()
	}
	for _, c := range s.udpSocks {
		c.Close()
	}
	var httpErr error
	if s.httpSrv != nil {
		httpErr = s.httpSrv.Shutdown(ctx)
	} else if s.httpLn != nil {
		s.httpLn.Close()
	}

	// Workers process what is queued, then exit.
	s.importMu.Lock()
	s.importClosed = true
	s.importMu.Unlock()
	for _, w := range s.workers {
		close(w.in)
	}
	s.workerWG.Wait()
	intervals := make([]interval, len(s.workers))
	for i, w := range s.workers {
		intervals[i] = w.swap()
	}
	s.flushIntervals(ctx, intervals, time.Now())

	done := make(chan struct{})
	go func() {
		s.inFlight.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("waiting for in-flight flushes: %w", ctx.Err())
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
	return errors.Join(httpErr, err)
}
