package veneur

import (
	"bytes"
	"crypto/tls"
	"errors"
	"hash/maphash"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/samplers"
)

// errUnterminated is a TCP stream that ended inside a line: DogStatsD over
// TCP ends every line with a newline, and a cut line may carry a cut value.
var errUnterminated = errors.New("TCP stream ended without a newline after its last line")

// parseCauses names each parse error for the cause tag of
// veneur.packet.error_total. The index is the error's slot in the counters.
var parseCauses = [...]struct {
	err   error
	cause string
}{
	{samplers.ErrNoColon, "no_colon"},
	{samplers.ErrEmptyName, "empty_name"},
	{samplers.ErrEmptyValue, "empty_value"},
	{samplers.ErrNoType, "no_type"},
	{samplers.ErrUnknownType, "unknown_type"},
	{samplers.ErrBadValue, "bad_value"},
	{samplers.ErrNonFiniteValue, "non_finite_value"},
	{samplers.ErrEmptySection, "empty_section"},
	{samplers.ErrBadSampleRate, "bad_sample_rate"},
	{samplers.ErrRepeatedRate, "repeated_sample_rate"},
	{samplers.ErrRepeatedTags, "repeated_tags"},
	{samplers.ErrTooLong, "too_long"},
	{samplers.ErrTooManyTags, "too_many_tags"},
	{errUnterminated, "unterminated"},
	{samplers.ErrBadEvent, "bad_event"},
	{samplers.ErrBadServiceCheck, "bad_service_check"},
}

const numCauses = len(parseCauses)

func causeIndex(err error) int {
	for i, c := range parseCauses {
		if err == c.err {
			return i
		}
	}
	return numCauses - 1
}

// ingestStats are the server-wide ingestion counters. Readers add their
// local counts once per receive round; the flusher reads and reports them.
type ingestStats struct {
	packets    atomic.Uint64
	lines      atomic.Uint64
	truncated  atomic.Uint64
	queueFull  atomic.Uint64
	dropped    atomic.Uint64
	readErrors atomic.Uint64
	parseErrs  [numCauses]atomic.Uint64
	// TCP listener: connections accepted, and errors by tcpErrCauses.
	tcpConns atomic.Uint64
	tcpErrs  [len(tcpErrCauses)]atomic.Uint64
}

// readerCounts is a reader's unpublished share of ingestStats.
type readerCounts struct {
	packets, lines, truncated, queueFull, dropped uint64
	parseErrs                                     [numCauses]uint64
	any                                           bool
}

// ingester turns datagrams into samples and hands them to workers in
// batches. Each reader goroutine owns one; it is not safe for concurrent use.
type ingester struct {
	workers []*Worker
	pool    *sync.Pool
	seed    maphash.Seed
	maxLen  int
	stats   *ingestStats
	log     *logrus.Logger
	parser  samplers.Parser
	line    samplers.Line
	key     []byte
	pending []*batch
	events  *eventBuffer
	counts  readerCounts
	lastLog time.Time
	// sendWait bounds how long a reader waits for a full worker queue
	// before it drops the batch (and counts the loss).
	sendWait time.Duration
}

func (s *Server) newIngester() *ingester {
	return &ingester{
		workers:  s.workers,
		pool:     s.batchPool,
		seed:     s.seed,
		maxLen:   s.cfg.MetricMaxLength,
		stats:    &s.ingest,
		log:      s.log,
		key:      make([]byte, 0, 512),
		pending:  make([]*batch, len(s.workers)),
		events:   &s.events,
		sendWait: 100 * time.Millisecond,
	}
}

// handlePacket processes one datagram. A datagram longer than the
// configured maximum was cut by the receive buffer: only the complete lines
// before the cut are processed, never the partial one.
func (in *ingester) handlePacket(p []byte, truncated bool) {
	in.counts.packets++
	in.counts.any = true
	if truncated || len(p) > in.maxLen {
		in.counts.truncated++
		if len(p) > in.maxLen {
			p = p[:in.maxLen]
		}
		nl := bytes.LastIndexByte(p, '\n')
		if nl < 0 {
			return
		}
		p = p[:nl]
	}
	for len(p) > 0 {
		var line []byte
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, p = p[:i], p[i+1:]
		} else {
			line, p = p, nil
		}
		if len(line) == 0 {
			continue
		}
		in.handleLine(line)
	}
}

// countError counts a line skipped for err.
func (in *ingester) countError(err error) {
	in.counts.lines++
	in.counts.parseErrs[causeIndex(err)]++
	in.counts.any = true
}

func (in *ingester) handleLine(line []byte) {
	in.counts.lines++
	in.counts.any = true
	l := &in.line
	err := in.parser.ParseLine(line, l)
	switch err {
	case samplers.ErrEventNotMetric:
		var e samplers.Event
		if e, err = samplers.ParseEvent(line); err == nil {
			if e.Timestamp == 0 {
				e.Timestamp = time.Now().Unix()
			}
			in.events.addEvent(e)
			return
		}
	case samplers.ErrServiceCheck:
		var c samplers.ServiceCheck
		if c, err = samplers.ParseServiceCheck(line); err == nil {
			if c.Timestamp == 0 {
				c.Timestamp = time.Now().Unix()
			}
			in.events.addCheck(c)
			return
		}
	}
	if err != nil {
		in.counts.parseErrs[causeIndex(err)]++
		if in.log.IsLevelEnabled(logrus.DebugLevel) {
			if now := time.Now(); now.Sub(in.lastLog) >= time.Second {
				in.lastLog = now
				in.log.WithError(err).WithField("line", string(line)).Debug("skipping malformed metric line")
			}
		}
		return
	}
	in.key = samplers.AppendKey(in.key[:0], l)
	h := maphash.Bytes(in.seed, in.key)
	wi := int((h >> 32) * uint64(len(in.workers)) >> 32)
	b := in.pending[wi]
	if b == nil {
		b = in.pool.Get().(*batch)
		in.pending[wi] = b
	}
	keyOff := uint32(len(b.buf))
	b.buf = append(b.buf, in.key...)
	smp := sample{hash: h, rate: l.SampleRate, keyOff: keyOff, keyLen: uint32(len(in.key))}
	if l.Type == samplers.SetMetric {
		b.buf = append(b.buf, l.Values...)
		smp.memLen = uint32(len(l.Values))
		b.samples = append(b.samples, smp)
	} else if !l.Packed {
		smp.value = l.Value
		b.samples = append(b.samples, smp)
	} else {
		for vals := l.Values; len(vals) > 0; {
			smp.value, vals = samplers.NextValue(vals)
			b.samples = append(b.samples, smp)
		}
	}
	if b.full() {
		in.send(wi)
	}
}

// send hands the pending batch of worker wi over.
func (in *ingester) send(wi int) {
	b := in.pending[wi]
	in.pending[wi] = nil
	ok, waited := in.workers[wi].send(b, in.sendWait)
	if waited {
		in.counts.queueFull++
	}
	if !ok {
		in.counts.dropped += uint64(len(b.samples))
		b.reset()
		in.pool.Put(b)
	}
}

// flush hands over every pending batch and publishes the counters. Readers
// call it after each receive round, so batches fill up under load (many
// datagrams per round) and go out at once when traffic is light.
func (in *ingester) flush() {
	for i, b := range in.pending {
		if b != nil && len(b.samples) > 0 {
			in.send(i)
		}
	}
	if !in.counts.any {
		return
	}
	c := &in.counts
	st := in.stats
	st.packets.Add(c.packets)
	st.lines.Add(c.lines)
	if c.truncated > 0 {
		st.truncated.Add(c.truncated)
	}
	if c.queueFull > 0 {
		st.queueFull.Add(c.queueFull)
	}
	if c.dropped > 0 {
		st.dropped.Add(c.dropped)
	}
	for i, n := range c.parseErrs {
		if n > 0 {
			st.parseErrs[i].Add(n)
		}
	}
	*c = readerCounts{}
}

// TCP listener errors, by the cause tag of veneur.tcp.error_total.
const (
	tcpErrAccept = iota
	tcpErrHandshake
	tcpErrRead
)

var tcpErrCauses = [...]string{"accept", "tls_handshake", "read"}

const (
	// tcpHandshakeTimeout bounds a TLS handshake, so that a client that
	// connects and says nothing holds no goroutine for long.
	tcpHandshakeTimeout = 10 * time.Second
	// Once Shutdown begins, a connection is read until it has been quiet
	// for tcpDrainIdle, or for at most tcpDrainMax in all.
	tcpDrainIdle = 50 * time.Millisecond
	tcpDrainMax  = 2 * time.Second
)

// tcpListener accepts DogStatsD connections on tcp_address, with TLS when
// the config has a certificate. Each connection has its own goroutine and
// ingester.
type tcpListener struct {
	ln    net.Listener
	tls   *tls.Config
	s     *Server
	mu    sync.Mutex
	conns map[net.Conn]struct{} // open connections, for Shutdown
	done  bool                  // Shutdown has begun: take no more
	// drainEnd is when draining must end (unix nanoseconds), 0 before
	// Shutdown.
	drainEnd atomic.Int64
	// lastLog rate-limits the logs of failed connections.
	lastLog atomic.Int64
}

// accept runs until the listener is closed. Each accepted connection is
// registered in s.readers, so Shutdown waits for it.
func (t *tcpListener) accept() {
	defer t.s.readers.Done()
	defer t.s.consumePanic()
	var backoff time.Duration
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if t.drainEnd.Load() != 0 || errors.Is(err, net.ErrClosed) {
				// Shutdown's accept deadline passed, or start-up failed.
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
		t.conns[c] = struct{}{}
		t.s.readers.Add(1)
		t.mu.Unlock()
		t.s.ingest.tcpConns.Add(1)
		go t.serve(c)
	}
}

// fail counts a connection error and logs it, at most once a second.
func (t *tcpListener) fail(cause int, c net.Conn, err error) {
	t.s.ingest.tcpErrs[cause].Add(1)
	now := time.Now().UnixNano()
	last := t.lastLog.Load()
	if now-last < int64(time.Second) || !t.lastLog.CompareAndSwap(last, now) {
		return
	}
	l := t.s.log.WithError(err).WithField("cause", tcpErrCauses[cause])
	if c != nil {
		l = l.WithField("remote", c.RemoteAddr().String())
	}
	l.Warn("TCP listener: connection failed (veneur.tcp.error_total counts them all)")
}

func (t *tcpListener) serve(c net.Conn) {
	defer t.s.readers.Done()
	defer t.s.consumePanic()
	defer func() {
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
		c.Close()
	}()
	var r io.Reader = c
	if t.tls != nil {
		tc := tls.Server(c, t.tls)
		c.SetDeadline(time.Now().Add(tcpHandshakeTimeout))
		if err := tc.Handshake(); err != nil {
			t.fail(tcpErrHandshake, c, err)
			return
		}
		c.SetDeadline(time.Time{})
		r = tc
	}
	in := t.s.newIngester()
	if err := readLines(r, in, t.s.cfg.MetricMaxLength, func() { t.drainDeadline(c) }); err != nil {
		if t.drainEnd.Load() != 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			return // drained
		}
		t.fail(tcpErrRead, c, err)
	}
}

// drainDeadline, once Shutdown has begun, lets the next read wait at most
// tcpDrainIdle, and never past the end of the drain.
func (t *tcpListener) drainDeadline(c net.Conn) {
	end := t.drainEnd.Load()
	if end == 0 {
		return
	}
	c.SetReadDeadline(time.Unix(0, min(time.Now().Add(tcpDrainIdle).UnixNano(), end)))
}

// close starts the drain: the listener takes the connections already
// waiting in its backlog for tcpDrainIdle and then closes, and every
// connection goes on reading while data keeps coming (see drainDeadline).
func (t *tcpListener) close() {
	t.drainEnd.Store(time.Now().Add(tcpDrainMax).UnixNano())
	if tl, ok := t.ln.(*net.TCPListener); ok {
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
// ends. A line longer than maxLen is skipped and counted as too long; a
// stream that ends inside a line has that line counted as unterminated.
// It returns the read error, or nil at the end of the stream. beforeRead,
// if not nil, runs before every read.
func readLines(r io.Reader, in *ingester, maxLen int, beforeRead func()) error {
	defer in.flush()
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
				in.countError(samplers.ErrTooLong)
			case len(line) > 0:
				in.handleLine(line)
			}
		}
		filled = copy(buf, buf[start:filled])
		if filled > maxLen {
			// No newline within maxLen bytes: the line is too long.
			if !skipping {
				in.countError(samplers.ErrTooLong)
				skipping = true
			}
			filled = 0
		}
		in.flush()
		if err != nil {
			if filled > 0 && !skipping {
				in.countError(errUnterminated)
				in.flush()
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
	}
}
