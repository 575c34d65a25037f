package veneur

import (
	"context"
	"fmt"
	"math"
	"math/bits"

	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/internal/yield"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// reporter is a part with self-metrics, which it sends at every flush.
type reporter interface {
	Report(stats statsd.ClientInterface)
}

// flusher turns the workers' intervals into the interval's output and hands
// it to every sink in the background, so a slow destination delays neither
// ingestion nor the next flush.
type flusher struct {
	interval time.Duration
	aggs     samplers.Aggregates
	pcts     []samplers.Percentile
	// forwarding splits the global parts of series off for the forward
	// sink instead of flushing them here.
	forwarding bool
	sinks      []plugins.Sink
	sinkMu     []sync.Mutex // one per sink
	ingest     *ingest
	reporters  []reporter
	log        *logrus.Logger
	stats      statsd.ClientInterface
	guard      func()
	mu         sync.Mutex // one flush at a time; guards perName
	inFlight   sync.WaitGroup
	// card receives each interval's series and drops per metric name
	// for /debug/cardinality, and knows max_series_per_interval; nil
	// counts nothing per name.
	card *cardinality
	// perName counts the series per metric name of the flush in
	// progress, for card; kept from one flush to the next.
	perName map[string]int
	// namesAt is the flush time of the last interval counted per name:
	// a flush counts its names when cardinalityEvery has passed since.
	namesAt time.Time
	// y slices the flush's work (see yield.Slicer).
	y yield.Slicer
	// scratch is where generate computes the percentiles of histograms
	// that keep their few samples without a digest of their own.
	scratch *tdigest.TDigest
	// recycle hands the workers back their records once a flush and its
	// sinks are done with them (workerPool.recycle); nil: dropped.
	recycle func([][]record)
	// spareMu guards spare, the values' array of a batch the sinks are
	// done with, which the next flush fills.
	spareMu sync.Mutex
	spare   []samplers.InterMetric
}

// flushStep is how many series a flush turns into values, or how many
// values' slots it clears, between two looks at the clock: a flush of
// 100,000 series is a few hundred milliseconds of CPU, which it runs in
// slices of yield.Slice so that UDP readers sharing its P wait little.
const flushStep = 256

// takeMetrics returns an empty array for n values: the spare one when it
// is big enough.
func (f *flusher) takeMetrics(n int) []samplers.InterMetric {
	f.spareMu.Lock()
	m := f.spare
	f.spare = nil
	f.spareMu.Unlock()
	if cap(m) < n {
		// Room for an eighth more, so that an interval a little
		// larger than the last does not need a new array.
		return make([]samplers.InterMetric, 0, n+n/8)
	}
	return m[:0]
}

// putMetrics keeps m, which no sink holds any more, for the next flush.
func (f *flusher) putMetrics(m []samplers.InterMetric) {
	if cap(m) == 0 {
		return
	}
	// Drop the series the values point to, in slices that yield.
	m = m[:cap(m)]
	var y yield.Slicer
	for i := 0; i < len(m); i += 64 * flushStep {
		clear(m[i:min(i+64*flushStep, len(m))])
		y.Tick()
	}
	f.spareMu.Lock()
	if cap(m) > cap(f.spare) {
		f.spare = m[:0]
	}
	f.spareMu.Unlock()
}

// flush reports the self-metrics, builds the interval's batch from the
// workers' intervals and starts the sinks. It returns without waiting for
// them; wait does.
func (f *flusher) flush(ctx context.Context, intervals []interval, now time.Time, wg *sync.WaitGroup) {
	// The flush is work the readers share their CPU with from here until
	// its sinks have taken the batch and its memory is back (done):
	// the readers count their gaps during it apart.
	yield.BeginWork()
	// handed says done now ends the work; until then (a panic on the
	// way), returning does.
	handed := false
	defer func() {
		if !handed {
			yield.EndWork()
		}
	}()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.reporters {
		r.Report(f.stats)
	}
	// One slicer for the whole flush, so that no step between two ticks
	// runs longer than a slice.
	y := &f.y
	y.Tick()
	b := &plugins.Batch{Start: intervalStart(now, f.interval)}
	f.takeEvents(b)

	var perType [8]int
	for i, iv := range intervals {
		for t, n := range iv.perType {
			perType[t] += n
		}
		tags := []string{"worker:" + strconv.Itoa(i)}
		f.stats.Count("worker.metrics_processed_total", int64(iv.processed), tags, 1)
		if iv.imported > 0 {
			f.stats.Count("worker.metrics_imported_total", int64(iv.imported), tags, 1)
		}
		if iv.badKeys > 0 {
			f.log.WithField("count", iv.badKeys).Error("worker received malformed metric keys")
		}
	}
	for t, n := range perType {
		if n > 0 {
			f.stats.Count("worker.metrics_flushed_total", int64(n), []string{"metric_type:" + samplers.MetricType(t).String()}, 1)
		}
	}
	var invalid invalidCounts
	for _, iv := range intervals {
		invalid[invalidWeight] += iv.badWeights
	}
	total := 0
	for _, n := range perType {
		total += n
	}
	var perName map[string]int
	if f.card != nil && (total < cardinalityCheap || f.namesAt.IsZero() || now.Sub(f.namesAt) >= cardinalityEvery) {
		f.namesAt = now
		// The last interval's map, emptied: a steady load neither
		// regrows nor reallocates it.
		if f.perName == nil {
			f.perName = make(map[string]int)
		}
		clear(f.perName)
		perName = f.perName
	}
	b.Metrics, b.Forward = f.generate(intervals, perType, now, &invalid, perName, y)
	f.reportInvalid(&invalid)
	drops, dropped := sumDrops(intervals)
	f.reportDrops(drops, dropped)
	if perName != nil {
		// perType counts every series, those that share a map slot
		// because their hashes collide too.
		f.card.publish(now, perName, drops, total, dropped, y)
	}
	// Once the sinks are done with the batch, its values' array and the
	// workers' records (and the digests they point to) serve the next
	// intervals.
	recs := make([][]record, len(intervals))
	for i := range intervals {
		recs[i] = intervals[i].recs
	}
	// The caller's slice shares this array: drop the records for the GC.
	clear(intervals)
	done := func() {
		defer yield.EndWork()
		if f.recycle != nil {
			f.recycle(recs)
		}
		f.putMetrics(b.Metrics)
	}
	handed = true
	if len(b.Metrics)+len(b.Forward)+len(b.Events)+len(b.Checks)+len(b.Spans) == 0 || len(f.sinks) == 0 {
		done()
		return
	}
	var pending atomic.Int32
	pending.Store(int32(len(f.sinks)))
	for i, sink := range f.sinks {
		f.inFlight.Add(1)
		wg.Add(1)
		go func() {
			defer f.inFlight.Done()
			defer wg.Done()
			defer f.guard()
			defer func() {
				if pending.Add(-1) == 0 {
					done()
				}
			}()
			// One flush of a sink at a time, in order: a sink slower
			// than the interval delays its own next flush, never
			// another sink or the workers.
			f.sinkMu[i].Lock()
			defer f.sinkMu[i].Unlock()
			f.run(ctx, sink, b)
		}()
	}
}

// run flushes one sink and times and counts it. A sink's Flush encodes the
// batch and hands it to its delivery queue, which retries and spools within
// its own bounds, so no deadline cuts a flush in half; Flush is not
// cancelled with ctx.
func (f *flusher) run(ctx context.Context, sink plugins.Sink, b *plugins.Batch) {
	start := time.Now()
	err := sink.Flush(context.WithoutCancel(ctx), b)
	tags := []string{"sink:" + sink.Name()}
	f.stats.TimeInMilliseconds("sink.duration_ns", nanos(time.Since(start)), tags, 1)
	// A sink's error may cover several parts (series, events); each
	// failed part is counted and logged by itself.
	for _, pe := range plugins.Parts(err) {
		l := f.log.WithError(pe.Err).WithField("sink", sink.Name())
		t := tags
		if pe.Part != "" {
			t = append(t[:len(t):len(t)], "part:"+pe.Part)
			l = l.WithField("part", pe.Part)
		}
		f.stats.Count("sink.error_total", 1, t, 1)
		l.Error("flush failed")
	}
}

// takeEvents moves the interval's events, service checks and spans into b
// and reports how many were received and dropped.
func (f *flusher) takeEvents(b *plugins.Batch) {
	iv := f.ingest.events.swap()
	for _, c := range []struct {
		typ               string
		received, dropped uint64
	}{{"event", iv.nEvents, iv.droppedEvents}, {"service_check", iv.nChecks, iv.droppedChecks}} {
		if c.received > 0 {
			f.stats.Count("events.received_total", int64(c.received), []string{"type:" + c.typ}, 1)
		}
		if c.dropped > 0 {
			f.stats.Count("events.dropped_total", int64(c.dropped), []string{"type:" + c.typ}, 1)
			f.log.WithField("type", c.typ).WithField("dropped", c.dropped).Warn("more events than one interval keeps; the rest were dropped")
		}
	}
	b.Events, b.Checks = iv.events, iv.checks
	spans, dropped := f.ingest.spans.swap()
	if dropped > 0 {
		f.stats.Count("ssf.spans_dropped_total", int64(dropped), nil, 1)
		f.log.WithField("dropped", dropped).Warn("more trace spans than one interval keeps; the rest were dropped")
	}
	b.Spans = spans
}

// generate builds the flushed values of every series and, when the
// instance forwards, the state of the series' global parts (see
// forwardParts). It counts the series of each metric name into perName
// unless it is nil: one map increment per series, in the pass that visits
// each series anyway. It runs on the flush goroutine, so the workers go on
// ingesting meanwhile.
func (f *flusher) generate(intervals []interval, perType [8]int, now time.Time, invalid *invalidCounts, perName map[string]int, y *yield.Slicer) ([]samplers.InterMetric, []samplers.Forwarded) {
	// Size the slice exactly once: a flush of 100,000 series is hundreds
	// of thousands of values, and regrowing doubles the peak memory.
	perHisto := bits.OnesCount8(uint8(f.aggs)) + len(f.pcts)
	n := perType[samplers.CounterMetric] + perType[samplers.GaugeMetric] + perType[samplers.SetMetric] +
		perHisto*(perType[samplers.HistogramMetric]+perType[samplers.TimerMetric])
	metrics := f.takeMetrics(n)
	if f.scratch == nil {
		f.scratch = tdigest.New()
	}
	var fwd []samplers.Forwarded
	ts := now.Unix()
	secs := f.interval.Seconds()
	for _, iv := range intervals {
		for i := range iv.recs {
			r := &iv.recs[i]
			se := r.se
			if i%flushStep == 0 || heavyHisto(r.histo) {
				y.Tick()
			}
			if perName != nil {
				perName[se.meta.Name]++
			}
			base := samplers.InterMetric{Series: &se.meta, Timestamp: ts}
			local, global := true, false
			if f.forwarding {
				local, global = forwardParts(se.Type, se.Scope)
			}
			out := samplers.Forwarded{Type: se.Type, Scope: se.Scope, Name: se.meta.Name, Tags: se.meta.Tags}
			switch se.Type {
			case samplers.CounterMetric:
				if global {
					if math.IsInf(r.value, 0) || math.IsNaN(r.value) {
						invalid[invalidCounter]++
						continue
					}
					out.Counter = r.value
					fwd = append(fwd, out)
				} else {
					c := samplers.Counter{Value: r.value}
					metrics = c.Flush(metrics, base, secs)
				}
			case samplers.GaugeMetric:
				g := samplers.Gauge{Value: r.value}
				metrics = g.Flush(metrics, base)
			case samplers.HistogramMetric, samplers.TimerMetric:
				if local {
					// Percentiles are the global instance's to
					// compute when the digest goes there.
					metrics = r.histo.Flush(metrics, base, f.aggs, f.pcts, true, !global, secs, f.scratch)
				}
				if global {
					out.Digest = r.histo.Digest()
					fwd = append(fwd, out)
				}
			case samplers.SetMetric:
				if global {
					out.Set = r.set.Sketch
					fwd = append(fwd, out)
				} else {
					metrics = r.set.Flush(metrics, base)
				}
			}
		}
	}
	return dropNonFinite(metrics, invalid, y), fwd
}

// heavyWeight is the local weight (samples over their rates) past which
// a histogram's flush gets a look at the clock of its own (see
// heavyHisto).
const heavyWeight = 16

// heavyHisto says whether flushing h (nil for a series of another type)
// costs as much as many other series: its percentiles first merge the
// samples its digest buffered, tens of microseconds for a thousand, so
// that flushStep such histograms between two looks at the clock would
// hold a reader sharing the P off its socket for milliseconds. Its local
// weight tells; a histogram without local samples holds digests merged
// from other instances. A few samples, as most series get in an
// interval, cost little.
func heavyHisto(h *samplers.Histo) bool {
	return h != nil && (h.LocalWeight == 0 || h.LocalWeight > heavyWeight)
}

// sumDrops adds up the workers' drops under max_series_per_interval: per
// metric name (a name's series spread over the workers), and in all.
func sumDrops(intervals []interval) (map[string]uint64, uint64) {
	var total uint64
	var perName map[string]uint64
	for _, iv := range intervals {
		total += iv.seriesDropped
		for name, n := range iv.dropped {
			if perName == nil {
				perName = make(map[string]uint64, len(iv.dropped))
			}
			perName[name] += *n
		}
	}
	return perName, total
}

// dropLogNames is how many metric names the warning about drops under
// max_series_per_interval names.
const dropLogNames = 10

// reportDrops counts the samples of new series that max_series_per_interval
// refused and, once per interval, names the metric names that lost the
// most and the key to raise.
func (f *flusher) reportDrops(perName map[string]uint64, total uint64) {
	if total == 0 {
		return
	}
	f.stats.Count("worker.series_dropped_total", int64(total), []string{"cause:max_series"}, 1)
	top := newTopNames(dropLogNames, byDropped)
	for name, n := range perName {
		top.offer(nameCardinality{Name: name, Dropped: n})
	}
	var names strings.Builder
	for i, nc := range top.sorted() {
		if i > 0 {
			names.WriteString(", ")
		}
		fmt.Fprintf(&names, "%s=%d", nc.Name, nc.Dropped)
	}
	f.log.WithFields(logrus.Fields{
		"dropped":                 total,
		"max_series_per_interval": f.card.maxSeries(),
		"top_names":               names.String(),
	}).Warn("new series past max_series_per_interval were dropped (their samples counted in veneur.worker.series_dropped_total; GET /debug/cardinality lists series per name); raise max_series_per_interval, or stop the top names from multiplying series with unbounded tags")
}

// Causes of veneur.flush.invalid_value_total: values that no sink can
// publish, dropped while the rest of their series is flushed.
const (
	// invalidCounter: a counter whose sum overflowed to ±Inf.
	invalidCounter = iota
	// invalidWeight: a histogram or timer sample whose weight (1/sample
	// rate, e.g. @1e-300) the digest refuses; counted when sampled.
	invalidWeight
	// invalidSum, invalidAvg, invalidCount: a histogram aggregate that
	// overflowed.
	invalidSum
	invalidAvg
	invalidCount
	// invalidOther: any other value that is not finite.
	invalidOther
	numInvalid
)

var invalidCauses = [numInvalid]string{"counter_overflow", "sample_weight", "sum_overflow", "avg_overflow", "count_overflow", "other"}

type invalidCounts [numInvalid]uint64

// dropNonFinite removes the values that are NaN or ±Inf from metrics, in
// place, and counts them by cause. It looks for the first in slices that
// y yields between; there is usually none.
func dropNonFinite(metrics []samplers.InterMetric, invalid *invalidCounts, y *yield.Slicer) []samplers.InterMetric {
	first := -1
	for i := range metrics {
		if i%(16*flushStep) == 0 {
			y.Tick()
		}
		if v := metrics[i].Value; math.IsInf(v, 0) || math.IsNaN(v) {
			first = i
			break
		}
	}
	if first < 0 {
		return metrics
	}
	rest := slices.DeleteFunc(metrics[first:], func(m samplers.InterMetric) bool {
		if !math.IsInf(m.Value, 0) && !math.IsNaN(m.Value) {
			return false
		}
		switch m.Suffix {
		case samplers.NoSuffix:
			invalid[invalidCounter]++
		case samplers.SuffixSum:
			invalid[invalidSum]++
		case samplers.SuffixAvg:
			invalid[invalidAvg]++
		case samplers.SuffixCount:
			invalid[invalidCount]++
		default:
			invalid[invalidOther]++
		}
		return true
	})
	return metrics[:first+len(rest)]
}

// reportInvalid counts and logs the values dropped as invalid.
func (f *flusher) reportInvalid(invalid *invalidCounts) {
	var total uint64
	for i, n := range invalid {
		if n > 0 {
			total += n
			f.stats.Count("flush.invalid_value_total", int64(n), []string{"cause:" + invalidCauses[i]}, 1)
		}
	}
	if total > 0 {
		f.log.WithField("count", total).Warn("dropped values that are not finite (veneur.flush.invalid_value_total counts them by cause); the rest of their series was flushed")
	}
}

// forwardParts says, for an instance that forwards, whether a series is
// flushed here (local) and whether its state goes to the global instance:
//
//   - counters: forwarded with veneurglobalonly, else local;
//   - gauges: local;
//   - histograms and timers: veneurlocalonly keeps all local; otherwise the
//     digest is forwarded for global percentiles, and the aggregates of
//     this instance's samples (min, max, count, ...) are flushed here,
//     except with veneurglobalonly;
//   - sets: local with veneurlocalonly, else forwarded.
func forwardParts(t samplers.MetricType, scope samplers.MetricScope) (local, global bool) {
	switch t {
	case samplers.CounterMetric:
		return scope != samplers.GlobalOnly, scope == samplers.GlobalOnly
	case samplers.HistogramMetric, samplers.TimerMetric:
		return scope != samplers.GlobalOnly, scope != samplers.LocalOnly
	case samplers.SetMetric:
		return scope == samplers.LocalOnly, scope != samplers.LocalOnly
	}
	return true, false
}

// nanos gives a duration in nanoseconds for the *_duration_ns self-metrics,
// which are timers whose values are nanoseconds, as their names say.
func nanos(d time.Duration) float64 { return float64(d.Nanoseconds()) }

// alignDown returns the last multiple of interval, in Unix time, at or
// before t.
func alignDown(t time.Time, interval time.Duration) time.Time {
	ns := t.UnixNano()
	r := ns % int64(interval)
	if r < 0 {
		r += int64(interval)
	}
	return time.Unix(0, ns-r).In(t.Location())
}

// intervalStart is the start of the interval a flush at now holds: the
// boundary before now when now is itself a boundary (the flush loop's
// ticks), otherwise the boundary at or before now (a flush in the middle
// of an interval, such as Shutdown's).
func intervalStart(now time.Time, interval time.Duration) time.Time {
	b := alignDown(now, interval)
	if b.Equal(now) {
		return b.Add(-interval)
	}
	return b
}
