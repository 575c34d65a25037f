package listen

import (
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
)

// readerGaps records a datagram reader's gaps: the time from the end of a
// receive call that returned datagrams to the start of the next receive
// call, the time the reader spent away from its socket (handing the
// datagrams to its ingester, or held off by the scheduler while a flush
// or a worker had its CPU). While the reader is away the kernel queues
// what arrives in the socket's receive buffer, and drops it once the
// buffer is full, so the longest gap and the buffer's size bound the rate
// a reader takes without loss. A reader records one gap per receive
// round, not per datagram; the listener's Report sends and resets them.
// Every field is updated atomically: the reader records while Report
// reads. The gaps during a flush (any part of the gap, see
// yield.BeginWork) are also counted apart, so that a flush's share of the
// longest gaps shows.
type readerGaps struct {
	all, flush gapCounts
}

// gapCounts are the longest gap and the gaps per bucket.
type gapCounts struct {
	max    atomic.Int64 // nanoseconds
	counts [len(gapBounds) + 1]atomic.Uint64
}

// gapBounds are the upper bounds of the gap buckets, and gapTags the
// tags of listen.reader_gap_total for each bucket and for every gap
// (le:+Inf). The counts sent are cumulative, as le says: a gap of 3 ms
// counts in le:5ms, le:20ms, le:100ms and le:+Inf. 1 ms is a receive
// round of ordinary ingesting; 5 ms is issue 14's bound on the longest
// gap during a flush; a 2 MiB receive buffer holds about 20 ms of
// 1,432-byte datagrams at 1M lines/s (25 lines each), and 5 ms at 4M.
var (
	gapBounds = [...]time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, 100 * time.Millisecond}
	gapTags   = [len(gapBounds) + 1][]string{{"le:1ms"}, {"le:5ms"}, {"le:20ms"}, {"le:100ms"}, {"le:+Inf"}}
)

// record notes one gap of d, during a flush or not.
func (g *readerGaps) record(d time.Duration, duringFlush bool) {
	g.all.record(d)
	if duringFlush {
		g.flush.record(d)
	}
}

func (g *gapCounts) record(d time.Duration) {
	i := 0
	for i < len(gapBounds) && d > gapBounds[i] {
		i++
	}
	g.counts[i].Add(1)
	for {
		m := g.max.Load()
		if int64(d) <= m || g.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// gapReport sums the gaps of several readers since their last report.
type gapReport struct {
	all, flush gapSums
}

type gapSums struct {
	max    time.Duration
	counts [len(gapBounds) + 1]uint64 // per bucket, not cumulative
	total  uint64
}

// take adds g's gaps to r and resets g.
func (r *gapReport) take(g *readerGaps) {
	r.all.take(&g.all)
	r.flush.take(&g.flush)
}

func (r *gapSums) take(g *gapCounts) {
	for i := range g.counts {
		n := g.counts[i].Swap(0)
		r.counts[i] += n
		r.total += n
	}
	r.max = max(r.max, time.Duration(g.max.Swap(0)))
}

// send sends listen.reader_gap_max_ns, the longest gap since the last
// report, and listen.reader_gap_total, the gaps counted per bucket
// (cumulative, tag le), when any gap was recorded; and the same of the
// gaps during a flush as listen.reader_gap_flush_max_ns and
// listen.reader_gap_flush_total, when any was.
func (r *gapReport) send(stats statsd.ClientInterface) {
	r.all.send(stats, "listen.reader_gap_max_ns", "listen.reader_gap_total")
	r.flush.send(stats, "listen.reader_gap_flush_max_ns", "listen.reader_gap_flush_total")
}

func (r *gapSums) send(stats statsd.ClientInterface, maxName, totalName string) {
	if r.total == 0 {
		return
	}
	stats.Gauge(maxName, float64(r.max.Nanoseconds()), nil, 1)
	var cum uint64
	for i, n := range r.counts {
		cum += n
		if cum > 0 {
			stats.Count(totalName, int64(cum), gapTags[i], 1)
		}
	}
}
