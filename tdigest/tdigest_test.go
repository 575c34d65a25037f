package tdigest

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func mustAdd(t testing.TB, d *TDigest, v, w float64) {
	t.Helper()
	if err := d.Add(v, w); err != nil {
		t.Fatalf("Add(%v, %v): %v", v, w, err)
	}
}

func encode(t testing.TB, d *TDigest) []byte {
	t.Helper()
	b, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEmpty(t *testing.T) {
	for _, d := range []*TDigest{New(), roundTrip(t, New())} {
		for _, q := range []float64{0, 0.5, 1} {
			if v := d.Quantile(q); !math.IsNaN(v) {
				t.Errorf("Quantile(%v) = %v on empty digest", q, v)
			}
		}
		if v := d.CDF(1); !math.IsNaN(v) {
			t.Errorf("CDF = %v on empty digest", v)
		}
		if !math.IsNaN(d.Min()) || !math.IsNaN(d.Max()) {
			t.Errorf("Min, Max = %v, %v on empty digest", d.Min(), d.Max())
		}
		if d.Count() != 0 || d.Sum() != 0 {
			t.Errorf("Count, Sum = %v, %v on empty digest", d.Count(), d.Sum())
		}
	}
	if b := encode(t, New()); len(b) != 3 {
		t.Errorf("empty digest encodes to %d bytes, want 3", len(b))
	}
	d := New()
	mustAdd(t, d, 5, 1)
	before := encode(t, d)
	d.Merge(nil)
	d.Merge(New())
	if !bytes.Equal(before, encode(t, d)) {
		t.Error("merging nil or an empty digest changed the digest")
	}
	e := New()
	e.Merge(d)
	if e.Count() != 1 || e.Quantile(0.5) != 5 {
		t.Errorf("empty.Merge(one sample): Count %v, median %v", e.Count(), e.Quantile(0.5))
	}
}

func TestNewIsCheap(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { New() }); n != 1 {
		t.Errorf("New() makes %v allocations, want 1", n)
	}
	if m := New().memBytes(); m > 200 {
		t.Errorf("a new digest holds %d bytes", m)
	}
}

func TestOneSample(t *testing.T) {
	d := New()
	mustAdd(t, d, -3.25, 1)
	for _, q := range []float64{-1, 0, 0.001, 0.5, 0.999, 1, 2} {
		if v := d.Quantile(q); v != -3.25 {
			t.Errorf("Quantile(%v) = %v", q, v)
		}
	}
	if d.CDF(-3.26) != 0 || d.CDF(-3.25) != 1 || d.CDF(0) != 1 {
		t.Errorf("CDF: %v %v %v", d.CDF(-3.26), d.CDF(-3.25), d.CDF(0))
	}
	if d.Min() != -3.25 || d.Max() != -3.25 || d.Count() != 1 || d.Sum() != -3.25 {
		t.Errorf("Min %v Max %v Count %v Sum %v", d.Min(), d.Max(), d.Count(), d.Sum())
	}
}

func TestAllEqual(t *testing.T) {
	d := New()
	for i := 0; i < 100_000; i++ {
		mustAdd(t, d, 42.5, 1)
	}
	for _, dd := range []*TDigest{d, roundTrip(t, d)} {
		for q := 0.0; q <= 1; q += 0.001 {
			if v := dd.Quantile(q); v != 42.5 {
				t.Fatalf("Quantile(%v) = %v", q, v)
			}
		}
		if n := dd.Centroids(); n != 1 {
			t.Errorf("%d centroids for one distinct value", n)
		}
		if dd.CDF(42.5) != 1 || dd.CDF(42.4) != 0 {
			t.Errorf("CDF: %v %v", dd.CDF(42.5), dd.CDF(42.4))
		}
	}
}

// A digest that has seen fewer samples than its buffer holds returns exact
// nearest-rank quantiles.
func TestSmallExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, n := range []int{2, 3, 5, 10, 100, 700} {
		d := New()
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = math.Round(r.NormFloat64()*1000) / 7
			mustAdd(t, d, xs[i], 1)
		}
		slices.Sort(xs)
		for _, dd := range []*TDigest{d, roundTrip(t, d)} {
			for q := 0.0; q <= 1; q += 0.01 {
				if got, want := dd.Quantile(q), exactQuantile(xs, q); got != want {
					t.Fatalf("n=%d: Quantile(%v) = %v, want %v", n, q, got, want)
				}
			}
		}
	}
}

func TestFewDistinctValuesExact(t *testing.T) {
	// Skewed frequencies, and values that are not integers.
	vals := []float64{0.1, 0.25, 3, 7.5, 1000}
	freqs := []int{50_000, 20_000, 2_000, 200, 3}
	var xs []float64
	for i, v := range vals {
		for j := 0; j < freqs[i]; j++ {
			xs = append(xs, v)
		}
	}
	r := rand.New(rand.NewPCG(4, 4))
	r.Shuffle(len(xs), func(i, j int) { xs[i], xs[j] = xs[j], xs[i] })
	parts := buildParts(t, xs, 16)
	merged := New()
	for _, p := range parts {
		merged.Merge(roundTrip(t, p))
	}
	slices.Sort(xs)
	for name, d := range map[string]*TDigest{"single": buildSingle(t, xs), "merged": merged} {
		for q := 0.0; q <= 1; q += 0.0001 {
			v := d.Quantile(q)
			if !slices.Contains(vals, v) {
				t.Fatalf("%s: Quantile(%v) = %v, not a sample value", name, q, v)
			}
			if e := rankError(xs, q, v); e > 0 {
				t.Fatalf("%s: Quantile(%v) = %v, rank error %v", name, q, v, e)
			}
		}
		for _, v := range vals {
			want := float64(sortSearchGT(xs, v)) / float64(len(xs))
			if got := d.CDF(v); math.Abs(got-want) > 1e-12 {
				t.Errorf("%s: CDF(%v) = %v, want %v", name, v, got, want)
			}
		}
	}
}

func sortSearchGT(xs []float64, v float64) int {
	i, _ := slices.BinarySearchFunc(xs, v, func(x, v float64) int {
		if x <= v {
			return -1
		}
		return 1
	})
	return i
}

func TestInvalidInput(t *testing.T) {
	d := New()
	mustAdd(t, d, 1, 1)
	mustAdd(t, d, 2, 3)
	before := encode(t, d)
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if err := d.Add(v, 1); !errors.Is(err, ErrInvalidValue) {
			t.Errorf("Add(%v, 1) = %v, want ErrInvalidValue", v, err)
		}
	}
	for _, w := range []float64{0, -1, math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1)} {
		if err := d.Add(1, w); !errors.Is(err, ErrInvalidWeight) {
			t.Errorf("Add(1, %v) = %v, want ErrInvalidWeight", w, err)
		}
	}
	if err := d.Add(math.NaN(), -1); err == nil {
		t.Error("Add(NaN, -1) accepted")
	}
	if !bytes.Equal(before, encode(t, d)) || d.Count() != 4 || d.Sum() != 7 || d.Min() != 1 || d.Max() != 2 {
		t.Error("rejected samples changed the digest")
	}
}

func TestQuantileClamp(t *testing.T) {
	d := buildSingle(t, samples(distributions[0], 9, 10_000))
	if d.Quantile(-0.5) != d.Min() || d.Quantile(0) != d.Min() {
		t.Error("q <= 0 is not Min")
	}
	if d.Quantile(1.5) != d.Max() || d.Quantile(1) != d.Max() {
		t.Error("q >= 1 is not Max")
	}
	if !math.IsNaN(d.Quantile(math.NaN())) {
		t.Error("Quantile(NaN) is not NaN")
	}
	if d.CDF(d.Min()-1) != 0 || d.CDF(d.Max()) != 1 || !math.IsNaN(d.CDF(math.NaN())) {
		t.Error("CDF out of range")
	}
}

func TestMonotoneAndConsistent(t *testing.T) {
	for di, dist := range distributions {
		xs := samples(dist, uint64(100+di), 50_000)
		d := buildSingle(t, xs)
		prev := math.Inf(-1)
		for q := 0.0; q <= 1; q += 0.0005 {
			v := d.Quantile(q)
			if v < prev {
				t.Fatalf("%s: Quantile(%v) = %v < previous %v", dist.name, q, v, prev)
			}
			if v < d.Min() || v > d.Max() {
				t.Fatalf("%s: Quantile(%v) = %v outside [Min, Max]", dist.name, q, v)
			}
			prev = v
		}
		prevC := 0.0
		slices.Sort(xs)
		for i := 0; i < len(xs); i += 97 {
			c := d.CDF(xs[i])
			if c < prevC || c < 0 || c > 1 {
				t.Fatalf("%s: CDF(%v) = %v not monotone in [0,1]", dist.name, xs[i], c)
			}
			prevC = c
			// CDF and the empirical CDF agree about as well as Quantile does.
			emp := float64(sortSearchGT(xs, xs[i])) / float64(len(xs))
			if math.Abs(c-emp) > 0.002 {
				t.Fatalf("%s: CDF(%v) = %v, empirical %v", dist.name, xs[i], c, emp)
			}
		}
	}
}

func TestWeights(t *testing.T) {
	// A sample of weight w is w samples of weight 1.
	xs := samples(distributions[3], 11, 20_000)
	a, b := New(), New()
	for _, x := range xs {
		mustAdd(t, a, x, 10)
		for j := 0; j < 10; j++ {
			mustAdd(t, b, x, 1)
		}
	}
	if a.Count() != b.Count() || a.Count() != 200_000 {
		t.Errorf("Count %v vs %v", a.Count(), b.Count())
	}
	if math.Abs(a.Sum()-b.Sum()) > 1e-9*b.Sum() {
		t.Errorf("Sum %v vs %v", a.Sum(), b.Sum())
	}
	slices.Sort(xs)
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999} {
		if e := rankError(xs, q, a.Quantile(q)); e > 0.001 {
			t.Errorf("weighted: rank error %v at q=%v", e, q)
		}
	}
	// Fractional and mixed weights (sample rates 0.3 and 1 and 0.01).
	c := New()
	total := 0.0
	for i, x := range xs {
		w := []float64{1 / 0.3, 1, 100}[i%3]
		mustAdd(t, c, x, w)
		total += w
	}
	if math.Abs(c.Count()-total) > 1e-9*total {
		t.Errorf("Count %v, want %v", c.Count(), total)
	}
	rt := roundTrip(t, c)
	if rt.Count() != c.Count() || rt.Sum() != c.Sum() {
		t.Errorf("round trip: Count %v Sum %v, want %v %v", rt.Count(), rt.Sum(), c.Count(), c.Sum())
	}
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99} {
		if e := rankError(xs, q, c.Quantile(q)); e > 0.002 {
			t.Errorf("mixed weights: rank error %v at q=%v", e, q)
		}
		if rt.Quantile(q) != c.Quantile(q) {
			t.Errorf("round trip changed Quantile(%v)", q)
		}
	}
}

func TestMergeLeavesOtherUnchanged(t *testing.T) {
	a := buildSingle(t, samples(distributions[1], 1, 5000))
	b := buildSingle(t, samples(distributions[1], 2, 5003)) // with buffered samples
	bufferedBefore := len(b.vals)
	cb := b.Clone()
	a.Merge(b)
	if len(b.vals) != bufferedBefore || !bytes.Equal(encode(t, b), encode(t, cb)) {
		t.Error("Merge changed its argument")
	}
	if a.Count() != 10003 {
		t.Errorf("Count after merge %v", a.Count())
	}
	// Merging a digest with itself doubles every weight.
	s := buildSingle(t, []float64{1, 2, 3})
	s.Merge(s)
	if s.Count() != 6 || s.Sum() != 12 || s.Quantile(0.5) != 2 {
		t.Errorf("self merge: Count %v Sum %v median %v", s.Count(), s.Sum(), s.Quantile(0.5))
	}
}

func TestSumAndMinMaxThroughMerge(t *testing.T) {
	xs := samples(distributions[4], 5, 30_000)
	parts := buildParts(t, xs, 7)
	g := New()
	for _, p := range parts {
		g.Merge(roundTrip(t, p))
	}
	want := 0.0
	for _, x := range xs {
		want += x
	}
	if math.Abs(g.Sum()-want) > 1e-9*want {
		t.Errorf("Sum %v, want %v", g.Sum(), want)
	}
	if g.Min() != slices.Min(xs) || g.Max() != slices.Max(xs) {
		t.Errorf("Min/Max %v %v, want %v %v", g.Min(), g.Max(), slices.Min(xs), slices.Max(xs))
	}
}

func TestResetKeepsCapacityAndAddDoesNotAllocate(t *testing.T) {
	d := New()
	xs := samples(distributions[2], 6, 50_000)
	for _, x := range xs {
		mustAdd(t, d, x, 1)
	}
	d.Quantile(0.5)
	c1, c2 := cap(d.cents), cap(d.vals)
	d.Reset()
	if d.Count() != 0 || !math.IsNaN(d.Quantile(0.5)) {
		t.Error("Reset did not empty the digest")
	}
	if cap(d.cents) != c1 || cap(d.vals) != c2 {
		t.Error("Reset dropped capacity")
	}
	for _, x := range xs {
		mustAdd(t, d, x, 1)
	}
	i := 0
	allocs := testing.AllocsPerRun(50_000, func() {
		d.Add(xs[i%len(xs)], 1)
		i++
	})
	if allocs != 0 {
		t.Errorf("Add allocates %v times per call once warm", allocs)
	}
}

// A digest that was used and Reset gives exactly what a new one gives for
// the same samples: pooled digests flush the same values as new ones.
func TestResetIsLikeNew(t *testing.T) {
	used := New()
	// An odd number of merge passes leaves the packing direction
	// reversed, and mixed weights leave the buffer's weight set.
	for _, x := range samples(distributions[1], 3, 7_777) {
		mustAdd(t, used, x, 2)
	}
	mustAdd(t, used, 1, 0.5)
	used.Quantile(0.5)
	used.Reset()
	fresh := New()
	for _, x := range samples(distributions[2], 9, 20_000) {
		mustAdd(t, used, x, 1)
		mustAdd(t, fresh, x, 1)
	}
	for _, q := range []float64{0, 0.01, 0.25, 0.5, 0.75, 0.99, 0.999, 1} {
		if a, b := used.Quantile(q), fresh.Quantile(q); a != b {
			t.Errorf("Quantile(%v) = %v after Reset, %v new", q, a, b)
		}
	}
	if used.Centroids() != fresh.Centroids() || used.Sum() != fresh.Sum() || used.Count() != fresh.Count() {
		t.Errorf("after Reset %d centroids, sum %v, count %v; new %d, %v, %v",
			used.Centroids(), used.Sum(), used.Count(), fresh.Centroids(), fresh.Sum(), fresh.Count())
	}
}

func TestCompressionParameter(t *testing.T) {
	if New().Compression() != DefaultCompression {
		t.Error("New() compression")
	}
	if NewWithCompression(1).Compression() != MinCompression ||
		NewWithCompression(1e9).Compression() != MaxCompression ||
		NewWithCompression(math.NaN()).Compression() != DefaultCompression {
		t.Error("compression not clamped")
	}
	xs := samples(distributions[2], 8, 100_000)
	prev := 0
	for _, c := range []float64{50, 100, 200, 400, 800} {
		d := NewWithCompression(c)
		for _, x := range xs {
			mustAdd(t, d, x, 1)
		}
		n := d.Centroids()
		if n <= prev || float64(n) > 2*c {
			t.Errorf("compression %v: %d centroids (previous %d)", c, n, prev)
		}
		prev = n
		rt := roundTrip(t, d)
		if rt.Compression() != c || rt.Quantile(0.99) != d.Quantile(0.99) {
			t.Errorf("compression %v lost in round trip", c)
		}
	}
}

// The centroid count stays bounded however many samples arrive, and so does
// the encoding of a digest that still keeps every sample.
func TestSizeBounded(t *testing.T) {
	exact := New()
	for i := 0; exact.Count() < exactWeight*DefaultCompression-1; i++ {
		mustAdd(t, exact, float64(i)*1.0001, 1)
	}
	if b := encode(t, exact); exact.Centroids() != int(exact.Count()) || len(b) > 8192 {
		t.Errorf("%v exact samples: %d centroids, %d bytes", exact.Count(), exact.Centroids(), len(b))
	}
	if testing.Short() {
		t.Skip("slow")
	}
	d := New()
	r := rand.New(rand.NewPCG(12, 12))
	for i := 0; i < 5_000_000; i++ {
		d.Add(math.Exp(3+1.2*r.NormFloat64()), 1)
	}
	if b := encode(t, d); len(b) > 8192 {
		t.Errorf("5M samples: %d centroids, %d bytes", d.Centroids(), len(b))
	}
}

func TestExtremeValues(t *testing.T) {
	d := New()
	r := rand.New(rand.NewPCG(13, 13))
	for i := 0; i < 5000; i++ {
		v := math.MaxFloat64 * (2*r.Float64() - 1)
		if i%7 == 0 {
			v = -math.MaxFloat64
		}
		mustAdd(t, d, v, float64(1+i%3))
	}
	mustAdd(t, d, math.MaxFloat64, MaxWeight)
	if err := d.Add(1, MaxWeight*2); !errors.Is(err, ErrInvalidWeight) {
		t.Errorf("weight above MaxWeight: %v", err)
	}
	if math.IsNaN(d.Sum()) {
		t.Error("Sum is NaN")
	}
	for _, dd := range []*TDigest{d, roundTrip(t, d)} {
		prev := math.Inf(-1)
		for q := 0.0; q <= 1; q += 0.001 {
			v := dd.Quantile(q)
			if math.IsNaN(v) || math.IsInf(v, 0) || v < prev {
				t.Fatalf("Quantile(%v) = %v after %v", q, v, prev)
			}
			prev = v
			if c := dd.CDF(v); math.IsNaN(c) || c < 0 || c > 1 {
				t.Fatalf("CDF(%v) = %v", v, c)
			}
		}
	}
}

// Many copies of a huge value overflow the internal Σ mean·weight of their
// centroid; the centroid must keep its exact value.
func TestHugeRepeatedValues(t *testing.T) {
	d := NewWithCompression(20)
	for i := 0; i < 3000; i++ {
		v := math.MaxFloat64
		if i%3 == 0 {
			v = math.MaxFloat64 / 3 * float64(1+i%2)
		}
		mustAdd(t, d, v, 2)
	}
	prev := math.Inf(-1)
	for q := 0.0; q <= 1; q += 0.01 {
		v := d.Quantile(q)
		if math.IsNaN(v) || math.IsInf(v, 0) || v < prev {
			t.Fatalf("Quantile(%v) = %v after %v", q, v, prev)
		}
		prev = v
	}
	if d.Quantile(0.9) != math.MaxFloat64 {
		t.Errorf("Quantile(0.9) = %v, want MaxFloat64", d.Quantile(0.9))
	}
}

// Merging many small digests (the global aggregation of series that see a
// few samples each) gives exactly the digest of all their samples.
func TestMergeManySmall(t *testing.T) {
	xs := samples(distributions[2], 31, 3000)
	direct, merged := New(), New()
	for i := 0; i < len(xs); i += 3 {
		small := New()
		for _, x := range xs[i : i+3] {
			mustAdd(t, small, x, 2)
			mustAdd(t, direct, x, 2)
		}
		small.Quantile(0.5) // folds its buffer into centroids
		merged.Merge(roundTrip(t, small))
	}
	for _, q := range []float64{0, 0.1, 0.5, 0.9, 0.99, 0.999, 1} {
		if a, b := merged.Quantile(q), direct.Quantile(q); a != b {
			t.Errorf("Quantile(%v): merged %v, direct %v", q, a, b)
		}
	}
	if merged.Count() != direct.Count() || merged.Min() != direct.Min() || merged.Max() != direct.Max() {
		t.Error("Count, Min or Max differ")
	}
}
