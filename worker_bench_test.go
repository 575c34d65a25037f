package veneur

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/veneur/veneur/internal/yield"
	"github.com/veneur/veneur/samplers"
)

// mixedDatagrams builds datagrams of 25 lines in the load benchmark's mix
// (40% counters, 20% gauges, 15% histograms, 15% timers, 10% sets) over
// nSeries series.
func mixedDatagrams(nSeries, nDatagrams int) [][]byte {
	out := make([][]byte, nDatagrams)
	i := 0
	for d := range out {
		var b strings.Builder
		for l := 0; l < 25; l++ {
			s := i % nSeries
			switch r := i % 20; {
			case r < 8:
				fmt.Fprintf(&b, "bench.counter.%d:1|c|#env:prod,route:/api/%d", s, s%7)
			case r < 12:
				fmt.Fprintf(&b, "bench.gauge.%d:%d|g|#env:prod", s, i%1000)
			case r < 15:
				fmt.Fprintf(&b, "bench.histo.%d:%d.5|h|#env:prod,shard:%d", s, i%977, s%5)
			case r < 18:
				fmt.Fprintf(&b, "bench.timer.%d:%d|ms|@0.5|#env:prod", s, i%313)
			default:
				fmt.Fprintf(&b, "bench.set.%d:user%d|s|#env:prod", s, i%5000)
			}
			b.WriteByte('\n')
			i++
		}
		out[d] = []byte(b.String())
	}
	return out
}

// BenchmarkIngestProcess measures a line from datagram to sampler: parse,
// key, hash, batch, and the worker's map lookup and sample, all on one
// goroutine so the figure is CPU per line without scheduling noise.
func BenchmarkIngestProcess(b *testing.B) { benchIngest(b, mixedDatagrams) }

// benchIngest runs the datagrams datagrams builds through an ingester and
// a worker, at 1,000 and 100,000 series, and reports the time per line.
func benchIngest(b *testing.B, datagrams func(nSeries, nDatagrams int) [][]byte) {
	for _, nSeries := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("series=%d", nSeries), func(b *testing.B) {
			p, g := testIngest(b, 1, 4096)
			w := p.workers[0]
			in := g.newIngester()
			dgs := datagrams(nSeries, 4096)
			b.ReportAllocs()
			b.ResetTimer()
			lines := 0
			for i := 0; i < b.N; i++ {
				in.Packet(dgs[i%len(dgs)], false)
				lines += 25
				drain(w)
				if i%4096 == 4095 && nSeries <= 1000 {
					w.swap()
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(lines), "ns/line")
		})
	}
}

// BenchmarkFlushGenerate measures turning a worker interval of 100,000
// series into flushed values (plugins/datadog benchmarks their encoding):
// with cardinality=on as a flush does it, counting the series per metric
// name and publishing the /debug/cardinality report; with cardinality=off
// without, which is what that accounting costs.
func BenchmarkFlushGenerate(b *testing.B) {
	p, g := testIngest(b, 1, 4096)
	w := p.workers[0]
	in := g.newIngester()
	for _, d := range mixedDatagrams(100000, 4000*2) {
		in.Packet(d, false)
		drain(w)
	}
	in.Flush()
	drain(w)
	iv := w.swap()
	if len(iv.recs) < 90000 {
		b.Fatalf("interval holds %d series, want about 100000", len(iv.recs))
	}
	f := &flusher{interval: 10 * time.Second, aggs: samplers.AggMin | samplers.AggMax | samplers.AggCount,
		pcts: samplers.NewPercentiles(DefaultPercentiles())}
	b.Run("cardinality=off", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			f.generate([]interval{iv}, iv.perType, time.Unix(1700000000, 0), &invalidCounts{}, nil, new(yield.Slicer))
		}
	})
	b.Run("cardinality=on", func(b *testing.B) {
		card := newCardinality(0)
		lastNames := 0
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			perName := make(map[string]int, lastNames)
			f.generate([]interval{iv}, iv.perType, time.Unix(1700000000, 0), &invalidCounts{}, perName, new(yield.Slicer))
			lastNames = len(perName)
			card.publish(time.Unix(1700000000, 0), perName, nil, len(iv.recs), 0, new(yield.Slicer))
		}
	})
}

// drain processes the batches queued for w on the calling goroutine.
func drain(w *Worker) {
	for {
		select {
		case bt := <-w.in:
			w.process(bt)
		default:
			return
		}
	}
}

// taggedDatagrams builds datagrams of 25 counter and histogram lines over
// nSeries series, each with the tags a client library adds to a call's
// own: the call's route and code, then the global env, service and
// version, so the tags arrive unsorted.
func taggedDatagrams(nSeries, nDatagrams int) [][]byte {
	out := make([][]byte, nDatagrams)
	i := 0
	for d := range out {
		var b []byte
		for l := 0; l < 25; l++ {
			s := i % nSeries
			if i%2 == 0 {
				b = fmt.Appendf(b, "http.requests.%d:1|c|#route:/api/v1/items/%d,code:200,env:prod,service:checkout,version:1.42.7\n", s/16, s%16)
			} else {
				b = fmt.Appendf(b, "http.request.duration.%d:%d.25|ms|#route:/api/v1/items/%d,code:200,env:prod,service:checkout,version:1.42.7\n", s/16, i%977, s%16)
			}
			i++
		}
		out[d] = b
	}
	return out
}

// BenchmarkIngestTagged is BenchmarkIngestProcess with the five tags of
// taggedDatagrams on every line.
func BenchmarkIngestTagged(b *testing.B) { benchIngest(b, taggedDatagrams) }
