package veneur

import (
	"runtime"
	"strconv"
	"testing"
)

// BenchmarkSeriesMemory measures the heap one series takes in a worker's
// interval, per metric type, for sizing max_series_per_interval: it sends
// new series through the ingester into one worker and reports the live
// heap they added, after a GC, per series. The first four create 1,000,000
// series with one sample each (one member for sets); the last two show
// how a digest and a set sketch grow with what they hold, as they do on a
// global instance that merges many locals' series. Each key is like
// "mem.counter:1|c|#env:prod,route:/api/v1/items/123456": a name of 9 to
// 13 bytes and two tags of about 35 bytes in all. A series grows with its
// key's length; the samplers do not.
//
// Run it with -benchtime=1x: each iteration sends ten million lines or
// fewer.
func BenchmarkSeriesMemory(b *testing.B) {
	for _, c := range []struct {
		name    string
		series  int
		samples int // per series
		line    func(dst []byte, sample int) []byte
	}{
		{"counter", 1_000_000, 1, func(dst []byte, _ int) []byte { return append(dst, "mem.counter:1|c"...) }},
		{"gauge", 1_000_000, 1, func(dst []byte, _ int) []byte { return append(dst, "mem.gauge:1|g"...) }},
		{"histogram", 1_000_000, 1, func(dst []byte, _ int) []byte { return append(dst, "mem.histogram:1.5|h"...) }},
		{"set", 1_000_000, 1, func(dst []byte, _ int) []byte { return append(dst, "mem.set:user|s"...) }},
		{"histogram_1000_samples", 10_000, 1000, func(dst []byte, j int) []byte {
			dst = append(dst, "mem.histogram:"...)
			dst = strconv.AppendInt(dst, int64(j*7919%10007), 10) // spread over 0..10006
			return append(dst, "|h"...)
		}},
		{"set_10000_members", 1000, 10_000, func(dst []byte, j int) []byte {
			dst = append(dst, "mem.set:user"...)
			dst = strconv.AppendInt(dst, int64(j), 10)
			return append(dst, "|s"...)
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var perSeries float64
			for range b.N {
				perSeries = seriesHeap(b, c.series, c.samples, c.line)
			}
			b.ReportMetric(perSeries, "B/series")
		})
	}
}

// seriesHeap creates n series, each of samples lines made by line with a
// tag that differs per series, in a fresh worker, and returns the heap
// they hold per series.
func seriesHeap(b *testing.B, n, samples int, line func(dst []byte, sample int) []byte) float64 {
	b.StopTimer()
	p, g := testIngest(b, 1, 4096)
	w := p.workers[0]
	in := g.newIngester()
	dg := make([]byte, 0, 4096)
	before := liveHeap()
	b.StartTimer()
	for j := 0; j < samples; j++ {
		for i := 0; i < n; {
			// 25 lines per datagram, as client libraries batch them; the
			// datagram buffer is reused, so only the series stay.
			dg = dg[:0]
			for l := 0; l < 25 && i < n; l++ {
				dg = line(dg, j)
				dg = append(dg, "|#env:prod,route:/api/v1/items/"...)
				dg = strconv.AppendInt(dg, int64(i), 10)
				dg = append(dg, '\n')
				i++
			}
			in.Packet(dg, false)
			drain(w)
		}
	}
	in.Flush()
	drain(w)
	b.StopTimer()
	after := liveHeap()
	if got := w.cur.nseries(); got != n {
		b.Fatalf("the worker holds %d series, want %d", got, n)
	}
	if w.cur.processed != uint64(n*samples) {
		b.Fatalf("the worker processed %d samples, want %d", w.cur.processed, n*samples)
	}
	runtime.KeepAlive(w)
	runtime.KeepAlive(in)
	return float64(after-before) / float64(n)
}

// liveHeap is the heap in use after the garbage collector has run twice:
// the second cycle also frees what sync.Pool kept through the first.
func liveHeap() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
