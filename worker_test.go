package veneur

import (
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/veneur/veneur/samplers"
)

// counterKey is the series key of the counter name with tags.
func counterKey(name string, tags ...string) []byte {
	return samplers.AppendForwardedKey(nil, &samplers.Forwarded{Type: samplers.CounterMetric, Name: name, Tags: tags})
}

// sampleCounter adds v to the counter of key in w's current interval as
// a sample with that hash would.
func sampleCounter(t *testing.T, w *Worker, hash uint64, key []byte, v float64) {
	t.Helper()
	r := w.lookup(hash, key)
	if r == nil {
		t.Fatalf("lookup of %q refused", key)
	}
	r.value += v
}

// recValues maps the name of every record of iv to its value.
func recValues(iv interval) map[string]float64 {
	out := map[string]float64{}
	for _, r := range iv.recs {
		out[r.se.meta.Name] = r.value
	}
	return out
}

// A series outlives its interval: the next interval's first sample finds
// it without decoding its key again (its values point to the same
// samplers.Series), starts from zero, and a series without a sample is
// not in the interval at all.
func TestWorkerKeepsSeriesAcrossIntervals(t *testing.T) {
	w := newWorker(newBatchPool(), nil)
	a, b := counterKey("a", "x:1"), counterKey("b")
	sampleCounter(t, w, 1, a, 2)
	sampleCounter(t, w, 1, a, 3)
	sampleCounter(t, w, 2, b, 1)
	first := w.swap()
	if got := recValues(first); len(got) != 2 || got["a"] != 5 || got["b"] != 1 {
		t.Fatalf("first interval %v, want a=5 b=1", got)
	}
	sampleCounter(t, w, 1, a, 7)
	second := w.swap()
	if got := recValues(second); len(got) != 1 || got["a"] != 7 {
		t.Fatalf("second interval %v, want a=7 only", got)
	}
	if second.recs[0].se != first.recs[0].se {
		t.Error("the second interval decoded a's key again")
	}
	if first.recs[0].value != 5 {
		t.Errorf("the first interval's record changed to %v after it was handed over", first.recs[0].value)
	}
	if second.perType[samplers.CounterMetric] != 1 || second.nseries() != 1 {
		t.Errorf("second interval counts %v series", second.perType)
	}
	if third := w.swap(); len(third.recs) != 0 {
		t.Errorf("an interval without samples holds %d records", len(third.recs))
	}
}

// Once the keys without a sample in the last interval outnumber sweepMin
// and half the interval's series, the worker forgets them, also in the
// middle of a chain of colliding hashes; a forgotten key that comes back
// is a new series with its own values.
func TestWorkerSweepsIdleKeys(t *testing.T) {
	w := newWorker(newBatchPool(), nil)
	idle := sweepMin + 100
	for i := range idle {
		sampleCounter(t, w, uint64(1000+i), counterKey("idle"+strconv.Itoa(i)), 1)
	}
	// Three keys share hash 7; the middle one goes idle.
	chain := [][]byte{counterKey("c0"), counterKey("c1"), counterKey("c2")}
	for _, k := range chain {
		sampleCounter(t, w, 7, k, 1)
	}
	sampleCounter(t, w, 8, counterKey("busy"), 1)
	w.swap()
	w.sweep()
	if w.nknown != idle+4 {
		t.Fatalf("after an interval with every key, the worker knows %d, want %d", w.nknown, idle+4)
	}

	sampleCounter(t, w, 7, chain[0], 1)
	sampleCounter(t, w, 7, chain[2], 1)
	sampleCounter(t, w, 8, counterKey("busy"), 1)
	w.swap()
	w.sweep()
	if w.nknown != 3 || len(w.known) != 2 {
		t.Fatalf("after the sweep the worker knows %d keys in %d map slots, want 3 in 2", w.nknown, len(w.known))
	}
	var names []string
	for se := w.known[7]; se != nil; se = se.next {
		names = append(names, se.meta.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"c0", "c2"}) {
		t.Errorf("hash 7 chains %v, want c0 and c2", names)
	}

	sampleCounter(t, w, 7, chain[1], 4)
	sampleCounter(t, w, 1000, counterKey("idle0"), 6)
	sampleCounter(t, w, 7, chain[2], 2)
	got := recValues(w.swap())
	if want := map[string]float64{"c1": 4, "idle0": 6, "c2": 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after forgotten keys came back: %v, want %v", got, want)
	}
	if w.nknown != 5 {
		t.Errorf("the worker knows %d keys, want 5", w.nknown)
	}
}

// A sweep leaves the keys alone while the idle ones are few.
func TestWorkerSweepKeepsFewIdleKeys(t *testing.T) {
	w := newWorker(newBatchPool(), nil)
	for i := range sweepMin {
		sampleCounter(t, w, uint64(i), counterKey("k"+strconv.Itoa(i)), 1)
	}
	w.swap()
	w.sweep()
	w.swap()
	w.sweep()
	if w.nknown != sweepMin || len(w.known) != sweepMin {
		t.Errorf("the worker knows %d keys in %d slots, want %d", w.nknown, len(w.known), sweepMin)
	}
}

// Under max_series_per_interval, a series known from an earlier interval
// takes a place at its first sample in each interval like a new one, and
// is refused and counted when there is none.
func TestSeriesCapKnownSeries(t *testing.T) {
	w := newWorker(newBatchPool(), newSeriesCap(2))
	a, b, c := counterKey("a"), counterKey("b"), counterKey("c")
	sampleCounter(t, w, 1, a, 1)
	sampleCounter(t, w, 2, b, 1)
	w.swap()
	sampleCounter(t, w, 3, c, 1)
	sampleCounter(t, w, 1, a, 1)
	if r := w.lookup(2, b); r != nil {
		t.Fatal("a known series past the cap took a place")
	}
	iv := w.swap()
	if got := recValues(iv); len(got) != 2 || got["a"] != 1 || got["c"] != 1 {
		t.Errorf("interval %v, want a and c", got)
	}
	if iv.seriesDropped != 1 || iv.dropped["b"] == nil || *iv.dropped["b"] != 1 {
		t.Errorf("dropped %d, per name %v; want b once", iv.seriesDropped, iv.dropped)
	}
	// The places came back with the interval.
	sampleCounter(t, w, 2, b, 1)
}

// An interval's record array, once the flush hands it back, serves the
// interval after next, its digests reset for other series; a value of the
// old interval leaks into none of the new one.
func TestWorkerReusesRecycledRecords(t *testing.T) {
	w := newWorker(newBatchPool(), nil)
	hk := samplers.AppendForwardedKey(nil, &samplers.Forwarded{Type: samplers.TimerMetric, Name: "t"})
	sampleTimer := func(v float64) {
		t.Helper()
		r := w.lookup(9, hk)
		if r == nil {
			t.Fatal("timer refused")
		}
		if err := r.histo.Sample(v, 1); err != nil {
			t.Fatal(err)
		}
	}
	sk := samplers.AppendForwardedKey(nil, &samplers.Forwarded{Type: samplers.SetMetric, Name: "s"})
	sampleSet := func(member string) {
		t.Helper()
		r := w.lookup(10, sk)
		if r == nil {
			t.Fatal("set refused")
		}
		r.set.Sample([]byte(member))
	}
	sampleCounter(t, w, 1, counterKey("c"), 1)
	sampleTimer(100)
	sampleTimer(300)
	sampleSet("a")
	sampleSet("b")
	first := w.swap()
	w.prepare()
	if len(first.recs) != 3 {
		t.Fatalf("first interval holds %d records", len(first.recs))
	}
	oldHisto, oldSet := first.recs[1].histo, first.recs[2].set
	// The flush is done with the first interval.
	w.recycle(first.recs)
	sampleTimer(5)
	sampleSet("x")
	w.swap()
	w.prepare() // takes over the first interval's array
	if cap(w.cur.recs) == 0 || &w.cur.recs[:1][0] != &first.recs[0] {
		t.Fatal("the third interval did not take over the recycled array")
	}
	sampleTimer(7)
	sampleSet("c")
	third := w.swap()
	if len(third.recs) != 2 || third.recs[0].histo != oldHisto || third.recs[1].set != oldSet {
		t.Fatalf("the third interval's timer and set do not reuse the recycled ones")
	}
	if got := third.recs[1].set.Sketch.Estimate(); got != 1 {
		t.Errorf("reused set estimates %d members, want 1", got)
	}
	h := third.recs[0].histo
	if h.LocalMin != 7 || h.LocalMax != 7 || h.LocalWeight != 1 || h.Digest().Count() != 1 || h.Digest().Quantile(0.5) != 7 {
		t.Errorf("reused timer holds min %v max %v weight %v count %v, want one sample of 7",
			h.LocalMin, h.LocalMax, h.LocalWeight, h.Digest().Count())
	}
}

// A worker looks at the clock for every new series, whose key it decodes
// and whose strings and digest it allocates (microseconds each, so that a
// batch of new series at start-up would otherwise run for milliseconds
// without a yield); samples of known series get one look per processStep.
func TestWorkerTicksPerNewSeries(t *testing.T) {
	const n = 300
	p, g := testIngest(t, 1, 4096)
	w := p.workers[0]
	in := g.newIngester()
	send := func() {
		for i := 0; i < n; i++ {
			in.Packet([]byte(fmt.Sprintf("t%d:1|ms\n", i)), false)
		}
		in.Flush()
		drain(w)
	}
	send()
	if got := w.y.Ticks(); got < n {
		t.Errorf("%d new series took %d looks at the clock, want at least %d", n, got, n)
	}
	w.swap()
	before := w.y.Ticks()
	send()
	if got, most := w.y.Ticks()-before, uint64(n/processStep+1); got < 1 || got > most {
		t.Errorf("%d samples of known series took %d looks at the clock, want 1 to %d (one per %d samples)", n, got, most, processStep)
	}
	if iv := w.swap(); len(iv.recs) != n {
		t.Errorf("second interval holds %d series, want %d", len(iv.recs), n)
	}
}
