package samplers

import (
	"errors"
	"math"
	"strconv"
	"testing"

	"github.com/veneur/veneur/tdigest"
)

func TestPercentileName(t *testing.T) {
	for q, want := range map[float64]string{
		0.5: "50", 0.75: "75", 0.9: "90", 0.99: "99", 0.999: "99.9", 0.9999: "99.99",
		0.01: "1", 0.001: "0.1", 0.125: "12.5", 0.05: "5", 0.1: "10", 0.3: "30",
	} {
		if got := PercentileName(q); got != want {
			t.Errorf("PercentileName(%v) = %q, want %q", q, got, want)
		}
	}
	ps := NewPercentiles([]float64{0.5, 0.999})
	if ps[0].Suffix.String() != ".50percentile" || ps[1].Suffix.String() != ".99.9percentile" {
		t.Errorf("suffixes = %q, %q", ps[0].Suffix, ps[1].Suffix)
	}
}

func TestParseAggregates(t *testing.T) {
	a, err := ParseAggregates([]string{"min", "avg"})
	if err != nil || a != AggMin|AggAvg {
		t.Errorf("ParseAggregates = %v, %v", a, err)
	}
	if _, err := ParseAggregates([]string{"mean"}); err == nil {
		t.Error("ParseAggregates accepted an unknown aggregate")
	}
}

func TestCounter(t *testing.T) {
	var c Counter
	c.Sample(1, 1)
	c.Sample(3, 0.5)
	c.Sample(1, 0.3) // 3.333..., not truncated
	got := c.Flush(nil, InterMetric{Series: &Series{Name: "c"}}, 10)
	want := (1 + 6 + 1/0.3) / 10
	if len(got) != 1 || got[0].Kind != RateKind || math.Abs(got[0].Value-want) > 1e-12 {
		t.Errorf("Flush = %+v, want one rate of %v", got, want)
	}
}

func TestGauge(t *testing.T) {
	var g Gauge
	g.Sample(5)
	g.Sample(-2)
	got := g.Flush(nil, InterMetric{Series: &Series{Name: "g"}})
	if len(got) != 1 || got[0].Kind != GaugeKind || got[0].Value != -2 {
		t.Errorf("Flush = %+v, want gauge -2", got)
	}
}

func flushedValues(ms []InterMetric) map[string]InterMetric {
	out := make(map[string]InterMetric)
	for _, m := range ms {
		out[m.FullName()] = m
	}
	return out
}

func TestHisto(t *testing.T) {
	h := NewHisto()
	for _, v := range []float64{1, 2, 3, 4} {
		h.Sample(v, 1)
	}
	h.Sample(10, 0.5) // weight 2
	all := AggMin | AggMax | AggMedian | AggAvg | AggCount | AggSum
	got := flushedValues(h.Flush(nil, InterMetric{Series: &Series{Name: "h"}}, all, NewPercentiles([]float64{0.5, 0.99}), true, true, 10, nil))
	want := map[string]struct {
		v    float64
		kind Kind
	}{
		"h.min":          {1, GaugeKind},
		"h.max":          {10, GaugeKind},
		"h.sum":          {30, GaugeKind},
		"h.avg":          {5, GaugeKind},
		"h.count":        {0.6, RateKind},
		"h.median":       {3, GaugeKind},
		"h.50percentile": {3, GaugeKind},
		"h.99percentile": {10, GaugeKind},
	}
	if len(got) != len(want) {
		t.Errorf("flushed %d values, want %d: %+v", len(got), len(want), got)
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if math.Abs(g.Value-w.v) > 1e-9 || g.Kind != w.kind {
			t.Errorf("%s = %v (%v), want %v (%v)", name, g.Value, g.Kind, w.v, w.kind)
		}
	}

	// avg without sum, and only what is asked for.
	got = flushedValues(h.Flush(nil, InterMetric{Series: &Series{Name: "h"}}, AggAvg, nil, true, false, 10, nil))
	if len(got) != 1 || got["h.avg"].Value != 5 {
		t.Errorf("avg alone = %+v", got)
	}
	// Percentiles only (the global side of a forwarded histogram).
	got = flushedValues(h.Flush(nil, InterMetric{Series: &Series{Name: "h"}}, all, NewPercentiles([]float64{0.5}), false, true, 10, nil))
	if len(got) != 1 || got["h.50percentile"].Value != 3 {
		t.Errorf("percentiles only = %+v", got)
	}
}

func TestHistoMergeKeepsLocalStats(t *testing.T) {
	h := NewHisto()
	h.Sample(5, 1)
	other := NewHisto()
	for i := 0; i < 100; i++ {
		other.Sample(100, 1)
	}
	h.Merge(other.Digest())
	got := flushedValues(h.Flush(nil, InterMetric{Series: &Series{Name: "h"}}, AggMax|AggCount, NewPercentiles([]float64{0.5}), true, true, 1, nil))
	if got["h.max"].Value != 5 || got["h.count"].Value != 1 {
		t.Errorf("local stats include merged samples: %+v", got)
	}
	if got["h.50percentile"].Value != 100 {
		t.Errorf("merged percentile = %v, want 100", got["h.50percentile"].Value)
	}
	// A histogram that only received merged data reports no aggregates.
	only := NewHisto()
	only.Merge(other.Digest())
	if ms := only.Flush(nil, InterMetric{Series: &Series{Name: "h"}}, AggMax, nil, true, false, 1, nil); len(ms) != 0 {
		t.Errorf("merged-only histogram flushed aggregates %+v", ms)
	}
}

func TestSet(t *testing.T) {
	s := NewSet()
	for i := 0; i < 1000; i++ {
		s.Sample([]byte("member-" + strconv.Itoa(i%100)))
	}
	got := s.Flush(nil, InterMetric{Series: &Series{Name: "s"}})
	if len(got) != 1 || got[0].Value != 100 || got[0].Kind != GaugeKind {
		t.Errorf("Flush = %+v, want gauge 100", got)
	}
	other := NewSet()
	for i := 50; i < 150; i++ {
		other.Sample([]byte("member-" + strconv.Itoa(i)))
	}
	if err := s.Merge(other.Sketch); err != nil {
		t.Fatal(err)
	}
	if got := s.Flush(nil, InterMetric{Series: &Series{}})[0].Value; got != 150 {
		t.Errorf("after merge: %v, want 150", got)
	}
}

// A histogram that keeps its few samples without a digest flushes exactly
// what one with a digest of the same samples flushes, with or without a
// scratch digest, before and after it makes its digest, and after a Reset.
func TestHistoFewSamplesLikeDigest(t *testing.T) {
	all := AggMin | AggMax | AggMedian | AggAvg | AggCount | AggSum
	pcts := NewPercentiles([]float64{0.01, 0.5, 0.9, 0.99})
	base := InterMetric{Series: &Series{Name: "h"}}
	samples := []struct{ v, rate float64 }{{5, 1}, {-2.5, 0.5}, {1e9, 1}, {5, 0.25}, {7.75, 1}, {0, 1}, {3, 0.1}, {42, 1}}
	scratch := tdigest.New()
	used := NewHisto() // reused through Reset for every n
	for n := 0; n <= len(samples); n++ {
		ref := tdigest.New()
		h := NewHisto()
		used.Reset()
		for _, s := range samples[:n] {
			if err := ref.Add(s.v, 1/s.rate); err != nil {
				t.Fatal(err)
			}
			if err := h.Sample(s.v, s.rate); err != nil {
				t.Fatal(err)
			}
			if err := used.Sample(s.v, s.rate); err != nil {
				t.Fatal(err)
			}
		}
		if (h.digest == nil) != (n <= histoInline) {
			t.Errorf("%d samples: digest made %v, want it made past %d", n, h.digest != nil, histoInline)
		}
		want := map[string]float64{}
		if n > 0 {
			want["h.median"] = ref.Quantile(0.5)
			for _, p := range pcts {
				want["h"+p.Suffix.String()] = ref.Quantile(p.Q)
			}
		}
		for name, got := range map[string][]InterMetric{
			"scratch":    h.Flush(nil, base, all, pcts, true, true, 1, scratch),
			"no scratch": h.Flush(nil, base, all, pcts, true, true, 1, nil),
			"reused":     used.Flush(nil, base, all, pcts, true, true, 1, scratch),
		} {
			vals := flushedValues(got)
			for k, w := range want {
				if g, ok := vals[k]; !ok || g.Value != w {
					t.Errorf("%d samples, %s: %s = %v (present %v), want %v", n, name, k, g.Value, ok, w)
				}
			}
			if n == 0 && len(got) != 0 {
				t.Errorf("no samples, %s: flushed %v", name, got)
			}
		}
		// Making the digest keeps every sample.
		d := h.Digest()
		if d.Count() != ref.Count() || d.Sum() != ref.Sum() || (n > 0 && d.Quantile(0.99) != ref.Quantile(0.99)) {
			t.Errorf("%d samples: Digest() holds count %v sum %v, want %v %v", n, d.Count(), d.Sum(), ref.Count(), ref.Sum())
		}
	}
}

// A refused sample changes nothing and returns the digest's error, with
// or without a digest.
func TestHistoRefusedSample(t *testing.T) {
	for _, withDigest := range []bool{false, true} {
		h := NewHisto()
		if withDigest {
			h.Digest()
		}
		h.Sample(1, 1)
		if err := h.Sample(2, 1e-300); !errors.Is(err, tdigest.ErrInvalidWeight) {
			t.Errorf("digest %v: weight 1e300 gave %v", withDigest, err)
		}
		if err := h.Sample(math.NaN(), 1); !errors.Is(err, tdigest.ErrInvalidValue) {
			t.Errorf("digest %v: NaN gave %v", withDigest, err)
		}
		if h.LocalWeight != 1 || h.LocalMax != 1 || h.Digest().Count() != 1 {
			t.Errorf("digest %v: a refused sample counted: weight %v max %v count %v", withDigest, h.LocalWeight, h.LocalMax, h.Digest().Count())
		}
	}
}

// A set reused for another interval estimates exactly what a new one
// does; one that may have turned dense, or took a merge, is not reused.
func TestSetReuse(t *testing.T) {
	members := func(prefix string, n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = []byte(prefix + strconv.Itoa(i))
		}
		return out
	}
	estimate := func(s *Set) float64 { return s.Flush(nil, InterMetric{Series: &Series{}})[0].Value }
	for _, before := range []int{0, 1, 300, setSparseMax} {
		for _, after := range []int{0, 1, 50, 5000} {
			reused := NewSet()
			for _, m := range members("old", before) {
				reused.Sample(m)
			}
			estimate(reused) // as a flush does
			if !reused.Reuse() {
				t.Fatalf("a set of %d members was not reused", before)
			}
			fresh := NewSet()
			for _, m := range members("new", after) {
				fresh.Sample(m)
				reused.Sample(m)
			}
			if g, w := estimate(reused), estimate(fresh); g != w {
				t.Errorf("%d members, reused, then %d: estimate %v, a new set's %v", before, after, g, w)
			}
		}
	}
	dense := NewSet()
	for _, m := range members("d", 20000) {
		dense.Sample(m)
	}
	if dense.Reuse() || dense.Sketch.Estimate() < 10000 {
		t.Error("a set past the sparse bound was reused")
	}
	merged := NewSet()
	merged.Merge(NewSet().Sketch)
	if merged.Reuse() {
		t.Error("a set that took a merge was reused")
	}
}
