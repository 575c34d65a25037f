package veneur

import (
	"bytes"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/samplers"
)

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
	{samplers.ErrEventNotMetric, "event_unsupported"},
	{samplers.ErrServiceCheck, "service_check_unsupported"},
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

func (in *ingester) handleLine(line []byte) {
	in.counts.lines++
	in.counts.any = true
	l := &in.line
	if err := in.parser.ParseLine(line, l); err != nil {
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
