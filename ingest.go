package veneur

import (
	"bytes"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/internal/counter"
	"github.com/veneur/veneur/listen"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/ssf"
)

// newParseCauses is the cause tag of veneur.packet.error_total for each
// error a line can be skipped for.
func newParseCauses() *counter.ByCause {
	return counter.NewErrors(
		counter.Cause{Err: samplers.ErrNoColon, Name: "no_colon"},
		counter.Cause{Err: samplers.ErrEmptyName, Name: "empty_name"},
		counter.Cause{Err: samplers.ErrEmptyValue, Name: "empty_value"},
		counter.Cause{Err: samplers.ErrNoType, Name: "no_type"},
		counter.Cause{Err: samplers.ErrUnknownType, Name: "unknown_type"},
		counter.Cause{Err: samplers.ErrBadValue, Name: "bad_value"},
		counter.Cause{Err: samplers.ErrNonFiniteValue, Name: "non_finite_value"},
		counter.Cause{Err: samplers.ErrEmptySection, Name: "empty_section"},
		counter.Cause{Err: samplers.ErrBadSampleRate, Name: "bad_sample_rate"},
		counter.Cause{Err: samplers.ErrRepeatedRate, Name: "repeated_sample_rate"},
		counter.Cause{Err: samplers.ErrRepeatedTags, Name: "repeated_tags"},
		counter.Cause{Err: samplers.ErrTooLong, Name: "too_long"},
		counter.Cause{Err: samplers.ErrTooManyTags, Name: "too_many_tags"},
		counter.Cause{Err: listen.ErrUnterminated, Name: "unterminated"},
		counter.Cause{Err: listen.ErrTruncated, Name: "truncated"},
		counter.Cause{Err: samplers.ErrBadEvent, Name: "bad_event"},
		counter.Cause{Err: samplers.ErrBadServiceCheck, Name: "bad_service_check"},
	)
}

// ingest is what every reader feeds: the workers, the interval's events,
// checks and spans, and the ingestion counters, which readers add to once
// per receive round and the flusher reports.
type ingest struct {
	pool    *workerPool
	log     *logrus.Logger
	maxLen  int
	events  eventBuffer
	spans   spanBuffer
	parse   *counter.ByCause
	packets atomic.Uint64
	lines   atomic.Uint64
	// queueFull counts hand-overs that found a worker's queue full;
	// dropped the samples of those that then gave up.
	queueFull atomic.Uint64
	dropped   atomic.Uint64
}

func newIngest(pool *workerPool, maxLen int, log *logrus.Logger) *ingest {
	return &ingest{pool: pool, log: log, maxLen: maxLen, parse: newParseCauses()}
}

// newIngester returns the ingester of one reader goroutine.
func (g *ingest) newIngester() listen.Ingester {
	return &ingester{
		g:        g,
		key:      make([]byte, 0, 512),
		keys:     keyCache{seed: maphash.MakeSeed()},
		pending:  make([]*batch, len(g.pool.workers)),
		counts:   readerCounts{parse: g.parse.NewLocal()},
		sendWait: 100 * time.Millisecond,
	}
}

// Report sends the ingestion counters accumulated since the last report.
func (g *ingest) Report(stats statsd.ClientInterface) {
	stats.Count("packet.received_total", int64(g.packets.Swap(0)), nil, 1)
	stats.Count("packet.lines_total", int64(g.lines.Swap(0)), nil, 1)
	truncated := g.parse.Load(g.parse.IndexOf("truncated"))
	if n := g.parse.Report(stats, "packet.error_total"); n > 0 {
		if truncated > 0 {
			g.log.WithField("count", truncated).Warn("datagrams longer than max_datagram_bytes were cut: the line at each cut was skipped, " +
				"and the lines after it were lost (raise max_datagram_bytes to the largest datagram clients send)")
		}
		g.log.WithField("count", n).Info("skipped malformed metric lines (debug logging shows them)")
	}
	if n := g.queueFull.Swap(0); n > 0 {
		stats.Count("worker.queue_full_total", int64(n), nil, 1)
	}
	if n := g.dropped.Swap(0); n > 0 {
		stats.Count("worker.dropped_total", int64(n), nil, 1)
		g.log.WithField("count", n).Error("dropped samples: workers could not keep up; raise num_workers")
	}
}

// readerCounts is a reader's unpublished share of the ingest counters.
type readerCounts struct {
	packets, lines, queueFull, dropped uint64
	parse                              counter.Local
	any                                bool
}

// ingester turns datagrams into samples and hands them to the workers in
// batches. Each reader goroutine owns one.
type ingester struct {
	g       *ingest
	parser  samplers.Parser
	line    samplers.Line
	key     []byte
	keys    keyCache
	pending []*batch
	counts  readerCounts
	lastLog time.Time
	// sendWait bounds how long a reader waits for a full worker queue
	// before it drops the batch (and counts the loss).
	sendWait time.Duration
}

// Packet processes one datagram, line by line: a line longer than
// metric_max_length is skipped (too_long). A truncated datagram was cut by
// the receive buffer (max_datagram_bytes): the complete lines before the
// cut are processed, and the cut one is skipped (truncated).
func (in *ingester) Packet(p []byte, truncated bool) {
	in.counts.packets++
	in.counts.any = true
	if truncated {
		nl := bytes.LastIndexByte(p, '\n')
		in.Skip(listen.ErrTruncated)
		if nl < 0 {
			return
		}
		p = p[:nl]
	}
	maxLen := in.g.maxLen
	for len(p) > 0 {
		var line []byte
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, p = p[:i], p[i+1:]
		} else {
			line, p = p, nil
		}
		switch {
		case len(line) == 0:
		case len(line) > maxLen:
			in.Skip(samplers.ErrTooLong)
		default:
			in.Line(line)
		}
	}
}

// Skip counts a line skipped for err.
func (in *ingester) Skip(err error) {
	in.counts.lines++
	in.counts.parse.AddErr(err)
	in.counts.any = true
}

// Check keeps a service check for the interval.
func (in *ingester) Check(c samplers.ServiceCheck) { in.g.events.addCheck(c) }

// Span keeps a trace span for the interval.
func (in *ingester) Span(sp *ssf.SSFSpan) { in.g.spans.add(sp) }

// Line processes one DogStatsD line.
func (in *ingester) Line(line []byte) {
	in.counts.lines++
	in.counts.any = true
	l := &in.line
	tags, err := in.parser.ParseHead(line, l)
	var key []byte
	var h uint64
	var wi int
	if err == nil {
		key, h, wi, err = in.series(l, tags)
	}
	switch err {
	case samplers.ErrEventNotMetric:
		var e samplers.Event
		if e, err = samplers.ParseEvent(line); err == nil {
			if e.Timestamp == 0 {
				e.Timestamp = time.Now().Unix()
			}
			in.g.events.addEvent(e)
			return
		}
	case samplers.ErrServiceCheck:
		var c samplers.ServiceCheck
		if c, err = samplers.ParseServiceCheck(line); err == nil {
			if c.Timestamp == 0 {
				c.Timestamp = time.Now().Unix()
			}
			in.g.events.addCheck(c)
			return
		}
	}
	if err != nil {
		in.counts.parse.AddErr(err)
		if in.g.log.IsLevelEnabled(logrus.DebugLevel) {
			if now := time.Now(); now.Sub(in.lastLog) >= time.Second {
				in.lastLog = now
				in.g.log.WithError(err).WithField("line", string(line)).Debug("skipping malformed metric line")
			}
		}
		return
	}
	b := in.pending[wi]
	if b == nil {
		b = in.g.pool.batches.Get().(*batch)
		in.pending[wi] = b
	}
	keyOff := uint32(len(b.buf))
	b.buf = append(b.buf, key...)
	smp := sample{hash: h, rate: l.SampleRate, keyOff: keyOff, keyLen: uint32(len(key))}
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

// series returns the key of a line that ParseHead accepted, with its hash
// and worker: from the reader's key cache when a line of the same shape
// came before, otherwise by parsing its tag section.
func (in *ingester) series(l *samplers.Line, tags []byte) ([]byte, uint64, int, error) {
	c := &in.keys
	if !c.use() {
		return in.parseKey(l, tags)
	}
	c.shape = appendShape(c.shape[:0], l.Type, l.Name, tags)
	sh := maphash.Bytes(c.seed, c.shape)
	s := c.lookup(sh)
	c.looked(s != nil)
	if s != nil {
		return s.key(), s.keyHash, int(s.worker), nil
	}
	key, h, wi, err := in.parseKey(l, tags)
	if err == nil {
		c.put(sh, key, h, wi)
	}
	return key, h, wi, err
}

// parseKey finishes a line from its tag section and returns its key (in
// in.key), the key's hash and its worker.
func (in *ingester) parseKey(l *samplers.Line, tags []byte) ([]byte, uint64, int, error) {
	if err := in.parser.ParseTags(tags, l); err != nil {
		return nil, 0, 0, err
	}
	in.key = samplers.AppendKey(in.key[:0], l)
	h, wi := in.g.pool.route(in.key)
	return in.key, h, wi, nil
}

// send hands the pending batch of worker wi over.
func (in *ingester) send(wi int) {
	b := in.pending[wi]
	in.pending[wi] = nil
	ok, waited := in.g.pool.workers[wi].send(b, in.sendWait)
	if waited {
		in.counts.queueFull++
		in.counts.any = true
	}
	if !ok {
		in.counts.any = true
		in.counts.dropped += uint64(len(b.samples))
		b.reset()
		in.g.pool.batches.Put(b)
	}
}

// Flush hands over every pending batch and publishes the counters.
func (in *ingester) Flush() {
	// The counters go first: a flush reports them after it has collected
	// the workers' intervals, so a flush whose interval holds these
	// samples also counts the lines they came with (the malformed ones
	// too). Then what handing the batches over counted (a full queue, a
	// drop).
	in.publish()
	for i, b := range in.pending {
		if b != nil && len(b.samples) > 0 {
			in.send(i)
		}
	}
	in.publish()
}

// publish adds the counters accumulated since the last publish to the
// ingest's.
func (in *ingester) publish() {
	c := &in.counts
	if !c.any {
		return
	}
	g := in.g
	g.packets.Add(c.packets)
	g.lines.Add(c.lines)
	if c.queueFull > 0 {
		g.queueFull.Add(c.queueFull)
	}
	if c.dropped > 0 {
		g.dropped.Add(c.dropped)
	}
	c.parse.Publish()
	c.packets, c.lines, c.queueFull, c.dropped, c.any = 0, 0, 0, 0, false
}

// maxSpansPerInterval bounds the trace spans one interval keeps; more are
// dropped and counted.
const maxSpansPerInterval = 10_000

// spanBuffer keeps the trace spans of the interval.
type spanBuffer struct {
	mu      sync.Mutex
	spans   []*ssf.SSFSpan
	dropped uint64
}

func (b *spanBuffer) add(sp *ssf.SSFSpan) {
	b.mu.Lock()
	defer b.mu.Unlock()
	appendCapped(&b.spans, sp, &b.dropped, maxSpansPerInterval)
}

func (b *spanBuffer) swap() ([]*ssf.SSFSpan, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	spans, dropped := b.spans, b.dropped
	b.spans, b.dropped = nil, 0
	return spans, dropped
}
