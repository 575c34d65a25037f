package listen

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/internal/counter"
	"github.com/veneur/veneur/internal/lograte"
	"github.com/veneur/veneur/samplers"
)

// ErrUnterminated is a TCP stream that ended inside a line: DogStatsD over
// TCP ends every line with a newline, and a cut line may carry a cut value.
// The TCP listener passes it to Ingester.Skip.
var ErrUnterminated = errors.New("TCP stream ended without a newline after its last line")

// TCP listener errors, by the cause tag of tcp.error_total: the indexes of
// the causes in TCP.errs.
const (
	tcpErrAccept = iota
	tcpErrHandshake
	tcpErrRead
	tcpErrMaxConns
	tcpErrIdle
)

// tcpErrCauses names the causes, in the order of the indexes above.
var tcpErrCauses = [...]string{
	tcpErrAccept:    "accept",
	tcpErrHandshake: "tls_handshake",
	tcpErrRead:      "read",
	tcpErrMaxConns:  "max_connections",
	tcpErrIdle:      "idle_timeout",
}

// The defaults of the TCP listener's limits, taken when TCPConfig leaves
// them 0.
const (
	// DefaultTCPMaxConnections is the default tcp_max_connections: well
	// under the usual descriptor limits of a daemon, far over what a
	// fleet of clients that keep their connections open needs.
	DefaultTCPMaxConnections = 10_000
	// DefaultTCPIdleTimeout is the default tcp_idle_timeout: DogStatsD
	// clients flush every few seconds, so a connection quiet for minutes
	// has been abandoned.
	DefaultTCPIdleTimeout = 5 * time.Minute
)

const (
	// tcpHandshakeTimeout bounds a TLS handshake, so that a client that
	// connects and says nothing holds no goroutine for long. A handshake
	// that runs out of time is counted under tls_handshake.
	tcpHandshakeTimeout = 10 * time.Second
	// tcpLogEvery is the least time between two warnings of one kind.
	tcpLogEvery = time.Second
	// Once Stop begins, a connection is read until it has been quiet for
	// tcpDrainIdle, or for at most tcpDrainMax in all. The SSF listener
	// drains its socket for tcpDrainIdle too.
	tcpDrainIdle = 50 * time.Millisecond
	tcpDrainMax  = 2 * time.Second
)

// TCPConfig are the settings of the DogStatsD TCP listener.
//
// Every connection holds a file descriptor and a goroutine, so the
// listener bounds them: at most MaxConnections are open at once, each is
// closed once it has sent nothing for IdleTimeout, and a TLS handshake
// must end within 10 seconds. Each limit counts what it closes in
// tcp.error_total, under its own cause.
type TCPConfig struct {
	// Address is tcp_address: host:port, or an inherited socket (fd@N,
	// einhorn@N, systemd:NAME).
	Address string
	// TLS, when not nil, makes every connection TLS with this config
	// (client certificates are checked as it says); nil means plain TCP.
	TLS *tls.Config
	// MaxLength is metric_max_length: longer lines are skipped.
	MaxLength int
	// MaxConnections is tcp_max_connections, the most connections open
	// at once; 0 means DefaultTCPMaxConnections. A connection accepted
	// while that many are open is closed at once, before any TLS
	// handshake or read, and counted under max_connections, with a
	// warning at most once a second; the open connections go on as
	// before, and new ones are taken again as soon as one of them
	// closes.
	MaxConnections int
	// IdleTimeout is tcp_idle_timeout: a connection that sends nothing
	// for that long is closed and counted under idle_timeout, without a
	// log, since abandoned connections are routine. 0 means
	// DefaultTCPIdleTimeout. Once Stop begins, the drain's shorter
	// deadlines take over.
	IdleTimeout time.Duration
}

// UnixStreamConfig are the settings of the DogStatsD unix stream listener.
// It has the TCP listener's limits (tcp_max_connections and
// tcp_idle_timeout), counted in unix_stream.error_total.
type UnixStreamConfig struct {
	// Address is unix_stream_address: a socket path, or an inherited
	// socket. A path is bound as Options.Bind says (stale file replaced,
	// unix_socket_mode, removed at stop).
	Address string
	// MaxLength is metric_max_length: longer lines are skipped.
	MaxLength int
	// MaxConnections and IdleTimeout are as in TCPConfig.
	MaxConnections int
	IdleTimeout    time.Duration
}

// TCP accepts DogStatsD connections, with TLS when the config has one, and
// reads newline-terminated lines. Each connection has its own goroutine
// and Ingester.
type TCP struct{ *connServer }

// UnixStream accepts DogStatsD connections on a unix stream socket. Each
// connection is read either as length-prefixed payloads, as the Datadog
// agent's stream socket reads them, or as newline-terminated lines, as
// over TCP: see readUnixStream for how the two are told apart.
type UnixStream struct{ *connServer }

var (
	_ Listener = (*TCP)(nil)
	_ Listener = (*UnixStream)(nil)
)

// connServer is a stream listener: it accepts connections within the
// limits and reads each with its own goroutine and Ingester.
type connServer struct {
	// name is the listener's name in errors and logs and the prefix of
	// its self-metrics (tcp, unix_stream); key is its config key.
	name, key   string
	kind        sockKind
	address     string
	tls         *tls.Config
	maxLength   int
	newIngester NewIngester
	opts        Options
	log         *logrus.Logger
	// read reads one connection (after its TLS handshake) into in;
	// beforeRead sets the deadline of each read.
	read func(c net.Conn, r io.Reader, in Ingester, beforeRead func()) error

	// maxConns and idle are the limits of cfg with their defaults
	// applied; handshakeTimeout is tcpHandshakeTimeout, a field so that
	// tests can shorten it.
	maxConns         int
	idle             time.Duration
	handshakeTimeout time.Duration

	life  stopper
	ln    net.Listener
	addr  atomic.Pointer[net.Addr]
	wg    sync.WaitGroup // the accept loop and every connection
	mu    sync.Mutex
	conns map[net.Conn]struct{} // open connections, for Stop
	done  bool                  // Stop has ended accepting: take no more
	// drainEnd is when draining must end (unix nanoseconds), 0 before
	// Stop.
	drainEnd atomic.Int64
	// lastLog rate-limits the logs of failed connections, and
	// lastCapLog those of connections refused over MaxConnections, apart
	// so that other failures never hide that the cap was reached.
	lastLog    atomic.Int64
	lastCapLog atomic.Int64

	accepted atomic.Uint64
	errs     *counter.ByCause
}

// NewTCP returns a TCP listener on cfg. It binds nothing.
func NewTCP(cfg TCPConfig, newIngester NewIngester, opts Options) (*TCP, error) {
	t, err := newConnServer("tcp", "tcp_address", kindTCP, cfg.Address, cfg.MaxLength, cfg.MaxConnections, cfg.IdleTimeout, newIngester, opts)
	if err != nil {
		return nil, err
	}
	t.tls = cfg.TLS
	t.read = func(_ net.Conn, r io.Reader, in Ingester, beforeRead func()) error {
		return readLines(r, in, t.maxLength, beforeRead)
	}
	return &TCP{t}, nil
}

// NewUnixStream returns a unix stream listener on cfg. It binds nothing.
func NewUnixStream(cfg UnixStreamConfig, newIngester NewIngester, opts Options) (*UnixStream, error) {
	t, err := newConnServer("unix_stream", "unix_stream_address", kindUnixStream, cfg.Address, cfg.MaxLength, cfg.MaxConnections, cfg.IdleTimeout, newIngester, opts)
	if err != nil {
		return nil, err
	}
	t.read = func(c net.Conn, r io.Reader, in Ingester, beforeRead func()) error {
		return readUnixStream(r, in, t.maxLength, beforeRead)
	}
	return &UnixStream{t}, nil
}

func newConnServer(name, key string, kind sockKind, address string, maxLength, maxConns int, idle time.Duration, newIngester NewIngester, opts Options) (*connServer, error) {
	if err := checkConfig(name, address, maxLength, newIngester); err != nil {
		return nil, err
	}
	switch {
	case maxConns < 0:
		return nil, fmt.Errorf("%s listener: tcp_max_connections %d, want at least 1 (0 for the default, %d)", name, maxConns, DefaultTCPMaxConnections)
	case idle < 0:
		return nil, fmt.Errorf("%s listener: tcp_idle_timeout %v, want more than 0 (0 for the default, %v)", name, idle, DefaultTCPIdleTimeout)
	}
	t := &connServer{
		name:             name,
		key:              key,
		kind:             kind,
		address:          address,
		maxLength:        maxLength,
		newIngester:      newIngester,
		opts:             opts,
		log:              opts.logger(),
		maxConns:         maxConns,
		idle:             idle,
		handshakeTimeout: tcpHandshakeTimeout,
		conns:            map[net.Conn]struct{}{},
		errs:             counter.New(tcpErrCauses[:]...),
	}
	if t.maxConns == 0 {
		t.maxConns = DefaultTCPMaxConnections
	}
	if t.idle == 0 {
		t.idle = DefaultTCPIdleTimeout
	}
	return t, nil
}

// Start binds the address and starts accepting connections.
func (t *connServer) Start() error {
	return t.life.start(t.name, func() error {
		ln, err := t.opts.Bind.stream(t.key, t.address, t.kind)
		if err != nil {
			return err
		}
		t.ln = ln
		a := ln.Addr()
		t.addr.Store(&a)
		t.wg.Add(1)
		go t.accept()
		return nil
	})
}

// Stop starts the drain (see startDrain) and waits until every connection
// has been read to its end, or been quiet for tcpDrainIdle, or tcpDrainMax
// has passed; or until ctx ends.
func (t *connServer) Stop(ctx context.Context) error {
	return t.life.stop(ctx, t.name, func(done chan<- struct{}) {
		t.startDrain()
		go func() {
			defer close(done)
			defer t.opts.guard()()
			t.wg.Wait()
		}()
	})
}

// Addr is the bound address, nil before Start.
func (t *connServer) Addr() net.Addr {
	if a := t.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Report sends <name>.connections_total, the connections accepted (not
// those refused over MaxConnections), <name>.error_total by cause, and the
// gauge <name>.open_connections, the connections open now; name is tcp or
// unix_stream.
func (t *connServer) Report(stats statsd.ClientInterface) {
	if n := t.accepted.Swap(0); n > 0 {
		stats.Count(t.name+".connections_total", int64(n), nil, 1)
	}
	t.errs.Report(stats, t.name+".error_total")
	t.mu.Lock()
	open := len(t.conns)
	t.mu.Unlock()
	stats.Gauge(t.name+".open_connections", float64(open), nil, 1)
}

// accept runs until the drain's accept deadline passes or the listener is
// closed. Each accepted connection is counted in t.wg, so Stop waits for
// it.
func (t *connServer) accept() {
	defer t.wg.Done()
	defer t.opts.guard()()
	var backoff time.Duration
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if t.drainEnd.Load() != 0 || errors.Is(err, net.ErrClosed) {
				// Stop's accept deadline passed.
				t.mu.Lock()
				t.done = true
				t.mu.Unlock()
				t.ln.Close()
				return
			}
			// Out of descriptors, say: wait a little and go on.
			t.fail(tcpErrAccept, nil, err)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		t.mu.Lock()
		if t.done {
			t.mu.Unlock()
			c.Close()
			return
		}
		if open := len(t.conns); open >= t.maxConns {
			t.mu.Unlock()
			// Over the cap: close before any handshake or read, so
			// the refused connection costs its descriptor only for
			// this moment.
			c.Close()
			t.refuse(open)
			continue
		}
		t.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		t.accepted.Add(1)
		go t.serve(c)
	}
}

// refuse counts a connection closed because open connections, as many
// as MaxConnections allows, were open already; it warns at most once a
// second.
func (t *connServer) refuse(open int) {
	// Count after logging, so that whoever sees the count sees the
	// warning too.
	defer t.errs.Add(tcpErrMaxConns, 1)
	if !lograte.Due(&t.lastCapLog, tcpLogEvery) {
		return
	}
	t.log.WithField("open", open).Warnf("%s listener: %d connections open, the limit; closing new ones until some end "+
		"(raise tcp_max_connections, and the descriptor limit with it, to take more; veneur.%s.error_total{cause:max_connections} counts the refused)",
		t.name, t.maxConns, t.name)
}

// fail counts a connection error and logs it, at most once a second.
func (t *connServer) fail(cause int, c net.Conn, err error) {
	t.errs.Add(cause, 1)
	if !lograte.Due(&t.lastLog, tcpLogEvery) {
		return
	}
	l := t.log.WithError(err).WithField("cause", tcpErrCauses[cause])
	if c != nil {
		// A unix socket's client is usually unnamed: no address.
		if ra := c.RemoteAddr(); ra != nil && ra.String() != "" {
			l = l.WithField("remote", ra.String())
		}
	}
	l.Warnf("%s listener: connection failed (veneur.%s.error_total counts them all)", t.name, t.name)
}

// serve reads one connection's lines, after its TLS handshake when the
// listener has TLS, until it ends or the drain does.
func (t *connServer) serve(c net.Conn) {
	defer t.wg.Done()
	defer t.opts.guard()()
	defer func() {
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
		c.Close()
	}()
	var r io.Reader = c
	if t.tls != nil {
		tc := tls.Server(c, t.tls)
		// The whole handshake, its reads and its writes, must end
		// within handshakeTimeout (sooner once Stop has begun).
		c.SetWriteDeadline(time.Now().Add(t.handshakeTimeout))
		t.readDeadline(c, t.handshakeTimeout)
		if err := tc.Handshake(); err != nil {
			if t.drainEnd.Load() != 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				return // cut by Stop, not failed
			}
			t.fail(tcpErrHandshake, c, err)
			return
		}
		// Nothing is written past the handshake; reads get their
		// deadline before each one.
		c.SetWriteDeadline(time.Time{})
		r = tc
	}
	in := t.newIngester()
	if err := t.read(c, r, in, func() { t.readDeadline(c, t.idle) }); err != nil {
		switch {
		case !errors.Is(err, os.ErrDeadlineExceeded):
			t.fail(tcpErrRead, c, err)
		case t.drainEnd.Load() != 0:
			// Drained. A connection whose idle deadline passed
			// just as Stop began is counted here too: Stop would
			// have closed it anyway.
		default:
			// Idle for IdleTimeout. Not logged: clients that
			// leave connections open and quiet are routine, and
			// a log per connection could be thousands.
			t.errs.Add(tcpErrIdle, 1)
		}
	}
}

// readDeadline sets the deadline of c's next read: d from now, or once
// Stop has begun the drain's (see drainDeadline). It runs before every
// read, not every line, so a busy connection pays one SetReadDeadline per
// read of up to a buffer's worth of lines.
//
// startDrain stores drainEnd and then sets the drain's deadline on every
// open connection. Were readDeadline to check drainEnd and then set d, its
// later-set, longer deadline could replace the drain's, and Stop would
// wait for it. So it checks drainEnd again after setting d: if it is
// still 0, startDrain has yet to store it, and will set the drain's
// deadline after this one; if not, readDeadline sets the drain's itself.
func (t *connServer) readDeadline(c net.Conn, d time.Duration) {
	if t.drainEnd.Load() == 0 {
		c.SetReadDeadline(time.Now().Add(d))
		if t.drainEnd.Load() == 0 {
			return
		}
	}
	t.drainDeadline(c)
}

// drainDeadline, once Stop has begun, lets the next read wait at most
// tcpDrainIdle, and never past the end of the drain.
func (t *connServer) drainDeadline(c net.Conn) {
	end := t.drainEnd.Load()
	if end == 0 {
		return
	}
	c.SetReadDeadline(time.Unix(0, min(time.Now().Add(tcpDrainIdle).UnixNano(), end)))
}

// startDrain starts the drain: the listener takes the connections already
// waiting in its backlog for tcpDrainIdle and then closes (a unix socket's
// file, if this process created it, is removed at once), and every
// connection goes on reading while data keeps coming (see drainDeadline).
func (t *connServer) startDrain() {
	t.drainEnd.Store(time.Now().Add(tcpDrainMax).UnixNano())
	if ul, ok := t.ln.(*unixListener); ok {
		// No new client finds the socket file; those already
		// connecting wait in the backlog.
		ul.file.remove()
	}
	if tl, ok := t.ln.(interface{ SetDeadline(time.Time) error }); ok {
		tl.SetDeadline(time.Now().Add(tcpDrainIdle))
	} else {
		t.ln.Close()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		t.drainDeadline(c)
	}
}

// readLines processes the newline-terminated lines of a stream until it
// ends. A line longer than maxLen is skipped and passed to Skip as
// samplers.ErrTooLong; a stream that ends inside a line has that line
// passed to Skip as ErrUnterminated. The ingester is flushed after every
// read. It returns the read error, or nil at the end of the stream.
// beforeRead, if not nil, runs before every read.
func readLines(r io.Reader, in Ingester, maxLen int, beforeRead func()) error {
	defer in.Flush()
	// Room for a whole line and as much again: 8 KiB per connection with
	// the default metric_max_length, so thousands of idle connections
	// cost little.
	buf := make([]byte, 2*(maxLen+1))
	filled := 0
	skipping := false // inside a line already counted as too long
	for {
		if beforeRead != nil {
			beforeRead()
		}
		n, err := r.Read(buf[filled:])
		filled += n
		start := 0
		for {
			i := bytes.IndexByte(buf[start:filled], '\n')
			if i < 0 {
				break
			}
			line := buf[start : start+i]
			start += i + 1
			switch {
			case skipping:
				skipping = false
			case len(line) > maxLen:
				in.Skip(samplers.ErrTooLong)
			case len(line) > 0:
				in.Line(line)
			}
		}
		filled = copy(buf, buf[start:filled])
		if filled > maxLen {
			// No newline within maxLen bytes: the line is too long.
			if !skipping {
				in.Skip(samplers.ErrTooLong)
				skipping = true
			}
			filled = 0
		}
		in.Flush()
		if err != nil {
			if filled > 0 && !skipping {
				in.Skip(ErrUnterminated)
				in.Flush()
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
	}
}
