package veneur

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"

	"github.com/veneur/veneur/internal/yield"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// holdSink holds each batch in Flush until release is closed.
type holdSink struct {
	got     chan *plugins.Batch
	release chan struct{}
}

func (h *holdSink) Name() string { return "hold" }

func (h *holdSink) Flush(_ context.Context, b *plugins.Batch) error {
	h.got <- b
	<-h.release
	return nil
}

// holdingServer is a server of config whose flushes also go to a
// holdSink, with its workers running (stopped at the test's end) and the
// datagram given ingested.
func holdingServer(t *testing.T, config, datagram string) (*Server, *holdSink) {
	t.Helper()
	s := newServer(t, config)
	hold := &holdSink{got: make(chan *plugins.Batch, 1), release: make(chan struct{})}
	s.flusher.sinks = append(s.flusher.sinks, hold)
	s.flusher.sinkMu = make([]sync.Mutex, len(s.flusher.sinks))
	s.pool.start(s.guard)
	t.Cleanup(func() { s.pool.stop() })
	in := s.ingest.newIngester()
	in.Packet([]byte(datagram), false)
	in.Flush()
	return s, hold
}

// A flush hands the workers their records back, and keeps the values'
// array for the next flush, only once every sink has returned from Flush:
// until then a sink may read the values and the digests behind them.
func TestFlushRecyclesAfterSinks(t *testing.T) {
	s, hold := holdingServer(t, "num_workers: 1\npercentiles: [0.5]\naggregates: [max]\n", "c:1|c\nt:5|ms\n")

	var wg sync.WaitGroup
	if !s.flush(context.Background(), time.Unix(1000, 0), &wg) {
		t.Fatal("pool stopped")
	}
	b := <-hold.got
	if len(b.Metrics) != 3 {
		t.Fatalf("batch holds %d values, want 3", len(b.Metrics))
	}
	w := s.pool.workers[0]
	w.spareMu.Lock()
	early := w.spare != nil
	w.spareMu.Unlock()
	s.flusher.spareMu.Lock()
	earlyValues := s.flusher.spare != nil
	s.flusher.spareMu.Unlock()
	if early || earlyValues {
		t.Errorf("records (%v) or values (%v) recycled while a sink still held the batch", early, earlyValues)
	}
	values := &b.Metrics[0]
	close(hold.release)
	wg.Wait()
	w.spareMu.Lock()
	recycled := w.spare != nil
	w.spareMu.Unlock()
	if !recycled {
		t.Error("the worker did not get its records back")
	}
	if m := s.flusher.takeMetrics(3); cap(m) == 0 || &m[:1][0] != values {
		t.Error("the next flush does not get the values' array back")
	} else if m[:1][0] != (samplers.InterMetric{}) {
		t.Error("the recycled values still point to the old series")
	}
}

// A flush is work the readers count their gaps during apart (see
// yield.BeginWork) from the moment it collects the workers until its sinks
// have returned and its memory is back.
func TestFlushIsWorkForTheReaders(t *testing.T) {
	s, hold := holdingServer(t, "num_workers: 1\n", "c:1|c\n")

	before := yield.WorkMark()
	if yield.WorkedSince(before) {
		t.Fatal("work in progress before the flush")
	}
	var wg sync.WaitGroup
	if !s.flush(context.Background(), time.Unix(1000, 0), &wg) {
		t.Fatal("pool stopped")
	}
	<-hold.got
	if !yield.WorkedSince(yield.WorkMark()) {
		t.Error("no work in progress while a sink holds the batch")
	}
	close(hold.release)
	wg.Wait()
	if !yield.WorkedSince(before) {
		t.Error("a mark taken before the flush did not see it")
	}
	if yield.WorkedSince(yield.WorkMark()) {
		t.Error("work still in progress after the sinks returned")
	}
}

// panicReporter panics in Report, as a flush that fails on its way.
type panicReporter struct{}

func (panicReporter) Report(statsd.ClientInterface) { panic("report failed") }

// A flush that panics before its sinks have the batch still ends its work:
// the readers' later gaps are not counted as during a flush.
func TestFlushThatPanicsEndsItsWork(t *testing.T) {
	s := newServer(t, "num_workers: 1\n")
	s.flusher.reporters = append(s.flusher.reporters, panicReporter{})
	s.pool.start(s.guard)
	defer s.pool.stop()
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the flush did not panic")
			}
		}()
		var wg sync.WaitGroup
		s.flush(context.Background(), time.Unix(1000, 0), &wg)
	}()
	if yield.WorkedSince(yield.WorkMark()) {
		t.Error("work still in progress after the flush panicked")
	}
}

// dropNonFinite keeps the finite values in order, in the same array, and
// counts the others by cause, wherever they are.
func TestDropNonFinite(t *testing.T) {
	s := &samplers.Series{Name: "m"}
	v := func(suffix string, x float64) samplers.InterMetric {
		return samplers.InterMetric{Series: s, Suffix: samplers.SuffixOf(suffix), Value: x}
	}
	inf, nan := math.Inf(1), math.NaN()
	for _, tc := range []struct {
		in   []samplers.InterMetric
		want []float64
		cnt  invalidCounts
	}{
		{in: nil},
		{in: []samplers.InterMetric{v("", 1), v(".max", 2)}, want: []float64{1, 2}},
		{in: []samplers.InterMetric{v("", inf), v(".max", 2), v(".sum", nan), v(".avg", 3), v(".count", -inf), v(".99percentile", nan), v(".min", 4)},
			want: []float64{2, 3, 4}, cnt: invalidCounts{invalidCounter: 1, invalidSum: 1, invalidCount: 1, invalidOther: 1}},
		{in: []samplers.InterMetric{v(".max", 2), v(".avg", nan)}, want: []float64{2}, cnt: invalidCounts{invalidAvg: 1}},
	} {
		var got invalidCounts
		out := dropNonFinite(tc.in, &got, new(yield.Slicer))
		var vals []float64
		for _, m := range out {
			vals = append(vals, m.Value)
		}
		if !slices.Equal(vals, tc.want) || got != tc.cnt {
			t.Errorf("dropNonFinite(%v) = %v, counts %v; want %v, %v", tc.in, vals, got, tc.want, tc.cnt)
		}
		if len(out) > 0 && &out[0] != &tc.in[0] {
			t.Error("the values moved to another array")
		}
	}
}

// generate looks at the clock before every histogram or timer with many
// samples, whose percentiles cost tens of microseconds each, so that it
// never runs more than one of them past the end of a slice; counters,
// gauges, sets and histograms with a few samples are cheap and share a
// look every flushStep series.
func TestGenerateTicksPerHeavyHistogram(t *testing.T) {
	const n = 300
	f := &flusher{interval: time.Second, aggs: samplers.AggMax | samplers.AggCount,
		pcts: samplers.NewPercentiles(DefaultPercentiles())}
	for _, tc := range []struct {
		name     string
		line     string
		samples  int
		min, max uint64
	}{
		{"timers", "t%d:1|ms\n", heavyWeight + 1, n, n + 8},
		{"histograms", "h%d:1|h\n", heavyWeight + 1, n, n + 8},
		{"sampled histograms", "h%d:1|h|@0.5\n", heavyWeight/2 + 1, n, n + 8},
		{"histograms with few samples", "h%d:1|h\n", heavyWeight, 1, 8},
		{"counters", "c%d:1|c\n", 1, 1, 8},
		{"gauges", "g%d:1|g\n", 1, 1, 8},
	} {
		p, g := testIngest(t, 1, 4096)
		w := p.workers[0]
		in := g.newIngester()
		for range tc.samples {
			for i := 0; i < n; i++ {
				in.Packet([]byte(fmt.Sprintf(tc.line, i)), false)
			}
			in.Flush()
			drain(w)
		}
		iv := w.swap()
		if len(iv.recs) != n {
			t.Fatalf("%s: interval holds %d series, want %d", tc.name, len(iv.recs), n)
		}
		y := new(yield.Slicer)
		f.generate([]interval{iv}, iv.perType, time.Unix(1000, 0), &invalidCounts{}, nil, y)
		if got := y.Ticks(); got < tc.min || got > tc.max {
			t.Errorf("%s: generate looked at the clock %d times for %d series, want %d to %d", tc.name, got, n, tc.min, tc.max)
		}
	}
}
