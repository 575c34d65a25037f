package veneur

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/samplers"
)

// The load benchmark's workload c (cmd/veneur-loadgen): 100,000 series in
// the mix 40% counters, 20% gauges, 15% histograms, 15% timers, 10% sets,
// 25 lines per datagram, a 2 s interval, aggregates min, max and count and
// percentiles 0.5 and 0.99, flush_max_per_body 5000. At 50,000 lines/s an
// interval holds one line of every series.
const (
	wlcSeries   = 100_000
	wlcPerDgram = 25
	wlcConfig   = `
hostname: loadgen
key: loadgen
interval: 2s
percentiles: [0.5, 0.99]
aggregates: [min, max, count]
num_workers: 2
num_readers: 1
flush_max_per_body: 5000
metric_max_length: 4096
api_hostname: http://api.invalid
udp_address: 127.0.0.1:0
`
)

// wlcKinds is the order of the kinds in every 20 lines (smooth weighted
// round robin of 8 counters, 4 gauges, 3 histograms, 3 timers, 2 sets),
// as the load benchmark spreads them.
var wlcKinds = func() []byte {
	weights := []int{8, 4, 3, 3, 2}
	var cur [5]int
	out := make([]byte, 0, 20)
	for range 20 {
		best := 0
		for k, w := range weights {
			cur[k] += w
			if cur[k] > cur[best] {
				best = k
			}
		}
		cur[best] -= 20
		out = append(out, byte(best))
	}
	return out
}()

// wlcDatagrams renders lines of workload c as the load benchmark does
// (lg.c.17:1|c|#env:load,shard:1,svc:web), packed 25 to a datagram. Each
// kind walks its series in order, so every run of nSeries lines touches
// every series once. Values come from a fixed seed.
func wlcDatagrams(nSeries, nLines int) [][]byte {
	per := [5]int{nSeries * 8 / 20, nSeries * 4 / 20, nSeries * 3 / 20, nSeries * 3 / 20, nSeries * 2 / 20}
	prefixes := [5]string{"lg.c.", "lg.g.", "lg.h.", "lg.t.", "lg.s."}
	types := [5]string{"c", "g", "h", "ms", "s"}
	svcs := [5]string{"api", "web", "db", "queue", "auth"}
	rng := rand.New(rand.NewPCG(1, 2))
	var next [5]int
	var out [][]byte
	var dg []byte
	for i := range nLines {
		k := wlcKinds[i%len(wlcKinds)]
		idx := next[k] % per[k]
		next[k]++
		dg = append(dg, prefixes[k]...)
		dg = strconv.AppendInt(dg, int64(idx), 10)
		dg = append(dg, ':')
		switch k {
		case 0:
			dg = append(dg, '1')
		case 1:
			dg = strconv.AppendFloat(dg, rng.Float64()*1000, 'f', 2, 64)
		case 2:
			dg = strconv.AppendFloat(dg, rng.Float64()*1000, 'f', 1, 64)
		case 3:
			dg = strconv.AppendInt(dg, int64(rng.IntN(500)), 10)
		case 4:
			dg = append(dg, 'u')
			dg = strconv.AppendInt(dg, int64(rng.IntN(50)), 10)
		}
		dg = append(dg, '|')
		dg = append(dg, types[k]...)
		dg = append(dg, "|#env:load,shard:"...)
		dg = strconv.AppendInt(dg, int64(idx%16), 10)
		dg = append(dg, ",svc:"...)
		dg = append(dg, svcs[idx%5]...)
		dg = append(dg, '\n')
		if (i+1)%wlcPerDgram == 0 || i == nLines-1 {
			out = append(out, dg)
			dg = nil
		}
	}
	return out
}

// discardAPI stands in for the Datadog API as an http.RoundTripper: it
// reads and counts each body and answers 202, so a benchmark measures
// veneur's work and no network or server.
type discardAPI struct {
	mu     sync.Mutex
	cond   *sync.Cond
	bodies int
	bytes  int64
}

func newDiscardAPI() *discardAPI {
	a := &discardAPI{}
	a.cond = sync.NewCond(&a.mu)
	return a
}

func (a *discardAPI) RoundTrip(r *http.Request) (*http.Response, error) {
	n, _ := io.Copy(io.Discard, r.Body)
	r.Body.Close()
	a.mu.Lock()
	a.bodies++
	a.bytes += n
	a.cond.Broadcast()
	a.mu.Unlock()
	return &http.Response{StatusCode: http.StatusAccepted, Body: io.NopCloser(bytes.NewReader(nil)), Request: r, Header: http.Header{}}, nil
}

// waitBodies waits until the API has received n bodies in all.
func (a *discardAPI) waitBodies(n int) {
	a.mu.Lock()
	for a.bodies < n {
		a.cond.Wait()
	}
	a.mu.Unlock()
}

func (a *discardAPI) totals() (int, int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bodies, a.bytes
}

// newWLCServer builds a server on workload c's config whose Datadog sink
// posts to api, and starts its workers only: the caller ingests and
// flushes by hand.
func newWLCServer(tb testing.TB, api http.RoundTripper) *Server {
	tb.Helper()
	cfg, err := ParseConfig([]byte(wlcConfig))
	if err != nil {
		tb.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := NewFromConfig(cfg, Options{Log: log, HTTPClient: &http.Client{Transport: api}})
	if err != nil {
		tb.Fatal(err)
	}
	s.pool.start(s.guard)
	tb.Cleanup(func() {
		s.pool.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.closeSinks(ctx)
	})
	return s
}

// flushWLC flushes s as its flush loop does and returns how many bodies
// of at most 5,000 values the Datadog sink makes of it (histograms and
// timers flush five values each with workload c's config).
func flushWLC(tb testing.TB, s *Server, now time.Time, sinks *sync.WaitGroup) int {
	intervals, ok := s.pool.collect(func(int, time.Duration) {})
	if !ok {
		tb.Fatal("the pool is stopped")
	}
	var n [8]int
	for _, iv := range intervals {
		for t, c := range iv.perType {
			n[t] += c
		}
	}
	values := n[samplers.CounterMetric] + n[samplers.GaugeMetric] + n[samplers.SetMetric] +
		5*(n[samplers.HistogramMetric]+n[samplers.TimerMetric])
	s.flusher.flush(context.Background(), intervals, now, sinks)
	return (values + 4999) / 5000
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFlushInterval is one interval of workload c at 50,000 lines/s
// (every series once): the lines go through an ingester into the workers,
// then the server flushes them through the Datadog sink to an API that
// only reads the bodies. It reports the process's CPU time per interval,
// apart for the ingestion and for the flush (collect, generate, the GC
// after it, encode, compress, post), the compressed bytes per flush, and
// the CPU-seconds per million lines that this makes at 50,000 lines/s
// (the figure; readers' waits and self-metrics are not in it).
func BenchmarkFlushInterval(b *testing.B) {
	// The heap goal cmd/veneur sets.
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	api := newDiscardAPI()
	s := newWLCServer(b, api)
	dgs := wlcDatagrams(wlcSeries, wlcSeries)
	in := s.ingest.newIngester()
	ingest := func() {
		for _, d := range dgs {
			in.Packet(d, false)
		}
		in.Flush()
		// Let the workers finish, so that their CPU counts here.
		for _, w := range s.pool.workers {
			for len(w.in) > 0 {
				time.Sleep(50 * time.Microsecond)
			}
		}
	}
	now := time.Unix(1700000000, 0)
	bodies := 0
	flush := func() {
		var wg sync.WaitGroup
		bodies += flushWLC(b, s, now, &wg)
		wg.Wait()
		api.waitBodies(bodies)
	}
	// One interval to warm up the pools and size the maps.
	ingest()
	flush()
	_, bytes0 := api.totals()
	var ingestCPU, flushCPU time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c0 := cpuTime(b)
		ingest()
		c1 := cpuTime(b)
		flush()
		c2 := cpuTime(b)
		ingestCPU += c1 - c0
		flushCPU += c2 - c1
		now = now.Add(2 * time.Second)
	}
	b.StopTimer()
	_, bytes1 := api.totals()
	// The heap the server keeps between flushes (with the benchmark's
	// 4.6 MB of datagrams): the workers' series and what they reuse.
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "live-heap-MiB")
	n := float64(b.N)
	b.ReportMetric(float64(ingestCPU.Milliseconds())/n, "ingest-cpu-ms/op")
	b.ReportMetric(float64(flushCPU.Milliseconds())/n, "flush-cpu-ms/op")
	b.ReportMetric(float64(bytes1-bytes0)/n, "body-B/op")
	// 1,000,000 lines at 50,000 lines/s are 10 intervals of 100,000.
	b.ReportMetric((ingestCPU+flushCPU).Seconds()/n*10, "cpu-s/Mlines")
}
