package veneur

import (
	"context"
	"math/bits"
	"runtime"
	"strconv"
	"time"

	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// MetricSink receives the flushed metrics of every interval: the Datadog
// and stdout sinks, and the plugins. Implementations own their wire format.
type MetricSink = plugins.Plugin

// gcAfterSeries is the interval size from which a flush runs a GC cycle
// once the values are generated and before the sinks start encoding. The
// interval just flushed is garbage by then; collecting it at once rather
// than when the pacer gets to it keeps the peak resident size of a host
// with 100,000 series about a fifth lower (measured at 1.1 million lines/s:
// 107 MiB, against 116 MiB with the cycle after the sinks start and
// 122–146 MiB without it), for one extra cycle per interval.
const gcAfterSeries = 10_000

// runFlushLoop flushes every interval until ctx ends.
func (s *Server) runFlushLoop(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.Flush(ctx, now)
		}
	}
}

// Flush collects the interval from every worker and hands the metrics to the
// sinks. Sinks run in the background, so a slow destination delays neither
// ingestion nor the next flush; Shutdown waits for them. The server flushes
// itself every interval and once more in Shutdown; Flush does nothing once
// Shutdown has begun.
func (s *Server) Flush(ctx context.Context, now time.Time) {
	if s.stopping.Load() {
		return
	}
	intervals := make([]interval, len(s.workers))
	for i, w := range s.workers {
		start := time.Now()
		intervals[i] = w.flush()
		s.stats.TimeInMilliseconds("flush.worker_duration_ns", nanos(time.Since(start)), []string{"worker:" + strconv.Itoa(i)}, 1)
	}
	s.flushIntervals(ctx, intervals, now)
}

// flushIntervals turns worker intervals into metrics and starts the sinks.
func (s *Server) flushIntervals(ctx context.Context, intervals []interval, now time.Time) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.reportIngest()
	s.reportImports()
	s.flushEvents(ctx)
	s.flushSpans(ctx)

	metrics, fwd, perType := s.generateSplit(intervals, now, s.fwd != nil)
	nseries := 0
	for i, iv := range intervals {
		nseries += len(iv.series)
		s.stats.Count("worker.metrics_processed_total", int64(iv.processed), []string{"worker:" + strconv.Itoa(i)}, 1)
		if iv.imported > 0 {
			s.stats.Count("worker.metrics_imported_total", int64(iv.imported), []string{"worker:" + strconv.Itoa(i)}, 1)
		}
		if iv.badKeys > 0 {
			s.log.WithField("count", iv.badKeys).Error("worker received malformed metric keys")
		}
	}
	for t, n := range perType {
		if n > 0 {
			s.stats.Count("worker.metrics_flushed_total", int64(n), []string{"metric_type:" + samplers.MetricType(t).String()}, 1)
		}
	}
	// The caller's slice shares this array: drop the maps for the GC.
	clear(intervals)
	if nseries >= gcAfterSeries {
		runtime.GC()
	}
	if len(fwd) > 0 {
		s.background(ctx, func(fctx context.Context) { s.fwd.post(fctx, fwd) })
	}
	if len(metrics) == 0 {
		return
	}
	for _, sink := range s.sinks {
		s.background(ctx, func(fctx context.Context) {
			start := time.Now()
			err := sink.Flush(fctx, metrics)
			tags := []string{"sink:" + sink.Name()}
			s.stats.TimeInMilliseconds("sink.duration_ns", nanos(time.Since(start)), tags, 1)
			if err != nil {
				s.stats.Count("sink.error_total", 1, tags, 1)
				s.log.WithError(err).WithField("sink", sink.Name()).Error("flush failed")
			}
		})
	}
}

// background runs one part of a flush (a sink, the forward) on its own
// goroutine with at most one interval, not cancelled with ctx; Shutdown
// waits for it.
func (s *Server) background(ctx context.Context, f func(context.Context)) {
	s.inFlight.Add(1)
	go func() {
		defer s.inFlight.Done()
		defer s.consumePanic()
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.interval)
		defer cancel()
		f(fctx)
	}()
}

// generate builds the flushed values of every series. It runs on the flush
// goroutine, so the workers go on ingesting meanwhile.
func (s *Server) generate(intervals []interval, now time.Time) ([]samplers.InterMetric, [8]int) {
	metrics, _, perType := s.generateSplit(intervals, now, false)
	return metrics, perType
}

// generateSplit is generate for an instance that may forward: with forward
// set, the global parts of each series (see forwardParts) become
// JSONMetrics instead of flushed values.
func (s *Server) generateSplit(intervals []interval, now time.Time, forward bool) ([]samplers.InterMetric, []samplers.JSONMetric, [8]int) {
	var perType [8]int
	for _, iv := range intervals {
		for t, n := range iv.perType {
			perType[t] += n
		}
	}
	// Size the slice exactly once: a flush of 100,000 series is hundreds
	// of thousands of values, and regrowing doubles the peak memory.
	perHisto := bits.OnesCount8(uint8(s.aggs)) + len(s.pcts)
	n := perType[samplers.CounterMetric] + perType[samplers.GaugeMetric] + perType[samplers.SetMetric] +
		perHisto*(perType[samplers.HistogramMetric]+perType[samplers.TimerMetric])
	metrics := make([]samplers.InterMetric, 0, n)
	var fwd []samplers.JSONMetric
	ts := now.Unix()
	secs := s.interval.Seconds()
	for _, iv := range intervals {
		for _, head := range iv.series {
			for se := head; se != nil; se = se.next {
				base := samplers.InterMetric{Series: se.meta, Timestamp: ts}
				local, global := true, false
				if forward {
					local, global = forwardParts(se.Type, se.Scope)
				}
				switch se.Type {
				case samplers.CounterMetric:
					if global {
						fwd = append(fwd, samplers.ExportCounter(se.meta, se.value))
					} else {
						c := samplers.Counter{Value: se.value}
						metrics = c.Flush(metrics, base, secs)
					}
				case samplers.GaugeMetric:
					g := samplers.Gauge{Value: se.value}
					metrics = g.Flush(metrics, base)
				case samplers.HistogramMetric, samplers.TimerMetric:
					if local {
						// Percentiles are the global instance's to
						// compute when the digest goes there.
						metrics = se.histo.Flush(metrics, base, s.aggs, s.pcts, true, !global, secs)
					}
					if global {
						if m, err := samplers.ExportHisto(se.meta, se.Type, se.histo); err == nil {
							fwd = append(fwd, m)
						}
					}
				case samplers.SetMetric:
					if global {
						if m, err := samplers.ExportSet(se.meta, se.set); err == nil {
							fwd = append(fwd, m)
						}
					} else {
						metrics = se.set.Flush(metrics, base)
					}
				}
			}
		}
	}
	return metrics, fwd, perType
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

// reportIngest sends the ingestion counters accumulated since the last
// flush as self-metrics.
func (s *Server) reportIngest() {
	st := &s.ingest
	s.stats.Count("packet.received_total", int64(st.packets.Swap(0)), nil, 1)
	s.stats.Count("packet.lines_total", int64(st.lines.Swap(0)), nil, 1)
	if n := st.truncated.Swap(0); n > 0 {
		s.stats.Count("packet.truncated_total", int64(n), nil, 1)
		s.log.WithField("count", n).Warn("datagrams longer than metric_max_length were cut; their last line was skipped")
	}
	var parseErrs uint64
	for i := range st.parseErrs {
		if n := st.parseErrs[i].Swap(0); n > 0 {
			parseErrs += n
			s.stats.Count("packet.error_total", int64(n), []string{"cause:" + parseCauses[i].cause}, 1)
		}
	}
	if parseErrs > 0 {
		s.log.WithField("count", parseErrs).Info("skipped malformed metric lines (debug logging shows them)")
	}
	if n := st.queueFull.Swap(0); n > 0 {
		s.stats.Count("worker.queue_full_total", int64(n), nil, 1)
	}
	if n := st.dropped.Swap(0); n > 0 {
		s.stats.Count("worker.dropped_total", int64(n), nil, 1)
		s.log.WithField("count", n).Error("dropped samples: workers could not keep up; raise num_workers")
	}
	if n := st.readErrors.Swap(0); n > 0 {
		s.stats.Count("packet.read_error_total", int64(n), nil, 1)
	}
	if n := st.tcpConns.Swap(0); n > 0 {
		s.stats.Count("tcp.connections_total", int64(n), nil, 1)
	}
	for i := range st.tcpErrs {
		if n := st.tcpErrs[i].Swap(0); n > 0 {
			s.stats.Count("tcp.error_total", int64(n), []string{"cause:" + tcpErrCauses[i]}, 1)
		}
	}
}

// nanos gives a duration in nanoseconds for the *_duration_ns self-metrics,
// which are timers whose values are nanoseconds, as their names say.
func nanos(d time.Duration) float64 { return float64(d.Nanoseconds()) }
