package tdigest

import (
	"errors"
	"math"
	"slices"
	"testing"
)

// A digest rebuilt from its own centroids and extremes answers every
// quantile and rank as the original does, and keeps which centroids are
// single-valued.
func TestCentroidsRoundTrip(t *testing.T) {
	for di, d := range distributions {
		t.Run(d.name, func(t *testing.T) {
			xs := samples(d, uint64(di+1), 20_000)
			orig := buildSingle(t, xs)
			cents := orig.AppendCentroids(nil)
			if len(cents) != orig.Centroids() {
				t.Fatalf("AppendCentroids gave %d centroids, Centroids() = %d", len(cents), orig.Centroids())
			}
			total := 0.0
			for i, c := range cents {
				total += c.Weight
				if i > 0 && c.Mean < cents[i-1].Mean {
					t.Fatalf("centroid %d (mean %v) before %d (mean %v): not sorted", i-1, cents[i-1].Mean, i, c.Mean)
				}
			}
			if total != orig.Count() {
				t.Errorf("centroid weights add up to %v, Count() = %v", total, orig.Count())
			}
			got := New()
			if err := got.SetCentroids(cents, orig.Min(), orig.Max()); err != nil {
				t.Fatal(err)
			}
			if got.Count() != orig.Count() || got.Min() != orig.Min() || got.Max() != orig.Max() {
				t.Errorf("Count, Min, Max = %v, %v, %v; want %v, %v, %v", got.Count(), got.Min(), got.Max(), orig.Count(), orig.Min(), orig.Max())
			}
			if math.Abs(got.Sum()-orig.Sum()) > 1e-9*math.Abs(orig.Sum()) {
				t.Errorf("Sum = %v, want about %v", got.Sum(), orig.Sum())
			}
			for q := 0.0; q <= 1; q += 0.001 {
				if g, w := got.Quantile(q), orig.Quantile(q); g != w {
					t.Fatalf("Quantile(%v) = %v, the original says %v", q, g, w)
				}
			}
			for _, x := range xs[:200] {
				if g, w := got.CDF(x), orig.CDF(x); g != w {
					t.Fatalf("CDF(%v) = %v, the original says %v", x, g, w)
				}
			}
			if again := got.AppendCentroids(nil); !slices.Equal(again, cents) {
				t.Error("the centroids read back differ from those set")
			}
		})
	}
}

// Integer data keeps its single-valued centroids through the round trip,
// so every quantile stays a sample value; without the flag they
// interpolate.
func TestCentroidsSingleKeepsExactValues(t *testing.T) {
	d := New()
	for i := range 10_000 {
		mustAdd(t, d, float64(i%21), 1)
	}
	cents := d.AppendCentroids(nil)
	for _, c := range cents {
		if !c.Single {
			t.Fatalf("centroid %+v of integer data is not single-valued", c)
		}
	}
	got := New()
	if err := got.SetCentroids(cents, d.Min(), d.Max()); err != nil {
		t.Fatal(err)
	}
	if v := got.Quantile(0.9); v != 18 {
		t.Errorf("p90 = %v, want 18", v)
	}
	mixed := slices.Clone(cents)
	for i := range mixed {
		mixed[i].Single = false
	}
	if err := got.SetCentroids(mixed, d.Min(), d.Max()); err != nil {
		t.Fatal(err)
	}
	if v := got.Quantile(0.9); v == math.Trunc(v) {
		t.Errorf("p90 = %v from centroids not marked single-valued: want an interpolation, so that the flag is seen to matter", v)
	}
}

func TestSetCentroidsSortsWidensAndMerges(t *testing.T) {
	in := []Centroid{{Mean: 30, Weight: 2}, {Mean: 10, Weight: 1, Single: true}, {Mean: 20, Weight: 3}}
	orig := slices.Clone(in)
	d := New()
	// The extremes are narrower than the means: they widen to them.
	if err := d.SetCentroids(in, 12, 25); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(in, orig) {
		t.Error("SetCentroids reordered its argument")
	}
	want := []Centroid{{Mean: 10, Weight: 1, Single: true}, {Mean: 20, Weight: 3}, {Mean: 30, Weight: 2}}
	if got := d.AppendCentroids(nil); !slices.Equal(got, want) {
		t.Errorf("centroids %+v, want %+v", got, want)
	}
	if d.Min() != 10 || d.Max() != 30 || d.Count() != 6 || d.Sum() != 10+60+60 {
		t.Errorf("Min, Max, Count, Sum = %v, %v, %v, %v; want 10, 30, 6, 130", d.Min(), d.Max(), d.Count(), d.Sum())
	}
	// Wider extremes are kept.
	if err := d.SetCentroids(in, 1, 99); err != nil {
		t.Fatal(err)
	}
	if d.Min() != 1 || d.Max() != 99 {
		t.Errorf("Min, Max = %v, %v; want 1, 99", d.Min(), d.Max())
	}
	// It merges like any digest, and packs at the next pass.
	g := New()
	mustAdd(t, g, 5, 1)
	g.Merge(d)
	if g.Count() != 7 || g.Min() != 1 || g.Max() != 99 {
		t.Errorf("after Merge: Count, Min, Max = %v, %v, %v; want 7, 1, 99", g.Count(), g.Min(), g.Max())
	}
	// An encoding round trip keeps it.
	r := roundTrip(t, d)
	if r.Count() != d.Count() || r.Quantile(0.5) != d.Quantile(0.5) {
		t.Errorf("round trip: Count %v, median %v; want %v, %v", r.Count(), r.Quantile(0.5), d.Count(), d.Quantile(0.5))
	}
}

func TestSetCentroidsRefuses(t *testing.T) {
	inf, nan := math.Inf(1), math.NaN()
	ok := []Centroid{{Mean: 1, Weight: 1}}
	for _, tc := range []struct {
		name   string
		cents  []Centroid
		lo, hi float64
		want   error
	}{
		{"NaN mean", []Centroid{{Mean: nan, Weight: 1}}, 0, 1, ErrInvalidValue},
		{"infinite mean", []Centroid{{Mean: inf, Weight: 1}}, 0, 1, ErrInvalidValue},
		{"zero weight", []Centroid{{Mean: 1, Weight: 0}}, 0, 1, ErrInvalidWeight},
		{"negative weight", []Centroid{{Mean: 1, Weight: -2}}, 0, 1, ErrInvalidWeight},
		{"NaN weight", []Centroid{{Mean: 1, Weight: nan}}, 0, 1, ErrInvalidWeight},
		{"infinite weight", []Centroid{{Mean: 1, Weight: inf}}, 0, 1, ErrInvalidWeight},
		{"total weight", []Centroid{{Mean: 1, Weight: 0x1p200}, {Mean: 2, Weight: 0x1p200}}, 0, 2, ErrInvalidWeight},
		{"NaN min", ok, nan, 1, ErrInvalidValue},
		{"infinite max", ok, 0, inf, ErrInvalidValue},
		{"sum overflows both ways", []Centroid{{Mean: -1e300, Weight: 1e50}, {Mean: 1e300, Weight: 1e50}}, -1e300, 1e300, ErrInvalidValue},
	} {
		d := New()
		mustAdd(t, d, 7, 1)
		err := d.SetCentroids(tc.cents, tc.lo, tc.hi)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
		if d.Count() != 0 || d.Centroids() != 0 {
			t.Errorf("%s: the digest holds %v after the refusal, want it empty", tc.name, d.Count())
		}
	}
	// No centroids: empty, whatever the extremes (v14 sends +Inf, -Inf).
	d := New()
	mustAdd(t, d, 7, 1)
	if err := d.SetCentroids(nil, inf, math.Inf(-1)); err != nil {
		t.Fatal(err)
	}
	if d.Count() != 0 || !math.IsNaN(d.Quantile(0.5)) {
		t.Errorf("SetCentroids(nil) left Count %v", d.Count())
	}
}

// refusedCentroids are centroid lists SetCentroids refuses, and the error.
func refusedCentroids() []struct {
	name   string
	cents  []Centroid
	lo, hi float64
	want   error
} {
	inf, nan := math.Inf(1), math.NaN()
	ok := []Centroid{{Mean: 1, Weight: 1}}
	return []struct {
		name   string
		cents  []Centroid
		lo, hi float64
		want   error
	}{
		{"NaN mean", []Centroid{{Mean: nan, Weight: 1}}, 0, 1, ErrInvalidValue},
		{"zero weight", []Centroid{{Mean: 1, Weight: 0}}, 0, 1, ErrInvalidWeight},
		{"total weight", []Centroid{{Mean: 1, Weight: 0x1p200}, {Mean: 2, Weight: 0x1p200}}, 0, 2, ErrInvalidWeight},
		{"infinite max", ok, 0, inf, ErrInvalidValue},
		{"sum overflows both ways", []Centroid{{Mean: -1e300, Weight: 1e50}, {Mean: 1e300, Weight: 1e50}}, -1e300, 1e300, ErrInvalidValue},
	}
}

// A Builder's digests are those of SetCentroids on a New digest: the same
// centroids, extremes, count, sum and quantiles, the same refusals; each
// stands on its own (growing or resetting one leaves the others as they
// were); and a few hundred cost a few allocations, not three each.
func TestBuilder(t *testing.T) {
	var lists [][]Centroid
	var extremes [][2]float64
	for i := range 600 {
		var cents []Centroid
		lo, hi := math.Inf(1), math.Inf(-1)
		for j := range 1 + i%9 {
			c := Centroid{Mean: float64((i*7+j*13)%50) - 10, Weight: 1 + float64(j%3), Single: j%2 == 0}
			cents = append(cents, c)
			lo, hi = min(lo, c.Mean-0.5), max(hi, c.Mean+0.5)
		}
		if i%50 == 0 {
			cents = nil // an empty digest
		}
		lists = append(lists, cents)
		extremes = append(extremes, [2]float64{lo, hi})
	}
	var b Builder
	built := make([]*TDigest, len(lists))
	for i, cents := range lists {
		d, err := b.Digest(cents, extremes[i][0], extremes[i][1])
		if err != nil {
			t.Fatalf("list %d: %v", i, err)
		}
		built[i] = d
	}
	same := func(i int) {
		t.Helper()
		want := New()
		if err := want.SetCentroids(lists[i], extremes[i][0], extremes[i][1]); err != nil {
			t.Fatal(err)
		}
		got := built[i]
		if !slices.Equal(got.AppendCentroids(nil), want.AppendCentroids(nil)) || got.Compression() != want.Compression() {
			t.Fatalf("digest %d: centroids %v (compression %v), want %v (%v)", i, got.AppendCentroids(nil), got.Compression(), want.AppendCentroids(nil), want.Compression())
		}
		if got.Count() != want.Count() || got.Sum() != want.Sum() || !sameFloat(got.Min(), want.Min()) || !sameFloat(got.Max(), want.Max()) {
			t.Fatalf("digest %d: count, sum, min, max %v %v %v %v, want %v %v %v %v", i, got.Count(), got.Sum(), got.Min(), got.Max(), want.Count(), want.Sum(), want.Min(), want.Max())
		}
		for q := 0.0; q <= 1; q += 0.125 {
			if g, w := got.Quantile(q), want.Quantile(q); !sameFloat(g, w) {
				t.Fatalf("digest %d: Quantile(%v) = %v, want %v", i, q, g, w)
			}
		}
	}
	for i := range built {
		same(i)
	}
	// Grow one digest well past its carved space, reset another: their
	// neighbours do not change.
	for v := range 5000 {
		mustAdd(t, built[301], float64(v%97), 1)
	}
	built[301].Merge(built[302])
	built[303].Reset()
	mustAdd(t, built[303], 1e6, 1)
	for i := range built {
		if i < 301 || i > 303 {
			same(i)
		}
	}
	if got := built[301].Count(); got != 5000+built[302].Count()+weightOf(lists[301]) {
		t.Errorf("the grown digest counts %v", got)
	}

	for _, tc := range refusedCentroids() {
		if _, err := b.Digest(tc.cents, tc.lo, tc.hi); !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}

	small := []Centroid{{Mean: 1, Weight: 1, Single: true}, {Mean: 2, Weight: 1, Single: true}, {Mean: 5, Weight: 1, Single: true}}
	allocs := testing.AllocsPerRun(5, func() {
		var b Builder
		for range 1000 {
			if _, err := b.Digest(small, 1, 5); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs > 12 {
		t.Errorf("1,000 digests of 3 centroids took %v allocations, want at most 12", allocs)
	}
}

func weightOf(cents []Centroid) float64 {
	w := 0.0
	for _, c := range cents {
		w += c.Weight
	}
	return w
}

func sameFloat(a, b float64) bool { return a == b || (a != a && b != b) }

func BenchmarkSetCentroids(b *testing.B) {
	d := fullDigest(1)
	cents := d.AppendCentroids(nil)
	lo, hi := d.Min(), d.Max()
	out := New()
	b.ReportAllocs()
	for b.Loop() {
		if err := out.SetCentroids(cents, lo, hi); err != nil {
			b.Fatal(err)
		}
	}
}
