package tdigest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
)

const accuracySamples = 100_000

type distribution struct {
	name string
	// continuous unimodal distributions get the p99 relative-error bound
	unimodal bool
	// tight gets the 0.3% p99 relative-error bound
	tight bool
	// discrete: every quantile must be an exact sample value
	discrete bool
	gen      func(r *rand.Rand) float64
}

var distributions = []distribution{
	{"uniform(0,1000)", true, true, false, func(r *rand.Rand) float64 { return r.Float64() * 1000 }},
	{"normal(100,15)", true, true, false, func(r *rand.Rand) float64 { return 100 + 15*r.NormFloat64() }},
	{"lognormal(3,1.2)", true, false, false, func(r *rand.Rand) float64 { return math.Exp(3 + 1.2*r.NormFloat64()) }},
	{"exponential(50)", true, false, false, func(r *rand.Rand) float64 { return 50 * r.ExpFloat64() }},
	{"pareto(1.5)", true, false, false, func(r *rand.Rand) float64 { return math.Pow(1-r.Float64(), -1/1.5) }},
	{"mixture 90/10", false, false, false, func(r *rand.Rand) float64 {
		if r.IntN(10) == 0 {
			return 900 + 50*r.NormFloat64()
		}
		return 10 + 2*r.NormFloat64()
	}},
	{"integers 0..20", false, false, true, func(r *rand.Rand) float64 { return float64(r.IntN(21)) }},
}

func samples(d distribution, seed uint64, n int) []float64 {
	r := rand.New(rand.NewPCG(seed, 0x7d16e57))
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = d.gen(r)
	}
	return xs
}

// Bounds from issue 3.
var checkedQuantiles = []struct {
	q, maxRankErr float64
}{
	{0.5, 0.001},
	{0.9, 0.001},
	{0.99, 0.0002},
	{0.999, 0.0001},
}

// rankError is the distance between q and the empirical rank interval
// [#(x<v)/n, #(x<=v)/n] of v in sorted.
func rankError(sorted []float64, q, v float64) float64 {
	n := float64(len(sorted))
	lo := float64(sort.SearchFloat64s(sorted, v)) / n
	hi := float64(sort.Search(len(sorted), func(i int) bool { return sorted[i] > v })) / n
	switch {
	case q < lo:
		return lo - q
	case q > hi:
		return q - hi
	}
	return 0
}

// exactQuantile is the nearest-rank empirical quantile.
func exactQuantile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func relError(sorted []float64, q, v float64) float64 {
	want := exactQuantile(sorted, q)
	if want == 0 {
		return math.Abs(v)
	}
	return math.Abs(v-want) / math.Abs(want)
}

type scenario struct {
	name  string
	build func(t testing.TB, xs []float64) *TDigest
}

func buildSingle(t testing.TB, xs []float64) *TDigest {
	d := New()
	for _, x := range xs {
		if err := d.Add(x, 1); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func buildParts(t testing.TB, xs []float64, parts int) []*TDigest {
	ds := make([]*TDigest, parts)
	for i := range ds {
		ds[i] = New()
	}
	for i, x := range xs {
		if err := ds[i%parts].Add(x, 1); err != nil {
			t.Fatal(err)
		}
	}
	return ds
}

func roundTrip(t testing.TB, d *TDigest) *TDigest {
	b, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	out := New()
	if err := out.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	return out
}

var scenarios = []scenario{
	{"single", buildSingle},
	{"merged16", func(t testing.TB, xs []float64) *TDigest {
		g := New()
		for _, d := range buildParts(t, xs, 16) {
			g.Merge(d)
		}
		return g
	}},
	{"roundtrip", func(t testing.TB, xs []float64) *TDigest {
		return roundTrip(t, buildSingle(t, xs))
	}},
	{"merged16+wire", func(t testing.TB, xs []float64) *TDigest {
		// The global aggregation path: each local digest is encoded,
		// imported and merged, and the result is encoded again.
		g := New()
		for _, d := range buildParts(t, xs, 16) {
			g.Merge(roundTrip(t, d))
		}
		return roundTrip(t, g)
	}},
}

type measurement struct {
	rankErr, relErr [4]float64
	lowRankErr      [2]float64 // at q=0.01 and q=0.001
	centroids       int
	bytes           int
}

func measure(t testing.TB, d distribution, sc scenario, seed uint64) (measurement, *TDigest, []float64) {
	xs := samples(d, seed, accuracySamples)
	dg := sc.build(t, xs)
	slices.Sort(xs)
	var m measurement
	for i, cq := range checkedQuantiles {
		v := dg.Quantile(cq.q)
		m.rankErr[i] = rankError(xs, cq.q, v)
		m.relErr[i] = relError(xs, cq.q, v)
	}
	for i, q := range []float64{0.01, 0.001} {
		m.lowRankErr[i] = rankError(xs, q, dg.Quantile(q))
	}
	m.centroids = dg.Centroids()
	b, _ := dg.MarshalBinary()
	m.bytes = len(b)
	return m, dg, xs
}

func TestAccuracy(t *testing.T) {
	for di, d := range distributions {
		for _, sc := range scenarios {
			t.Run(d.name+"/"+sc.name, func(t *testing.T) {
				t.Parallel()
				m, dg, xs := measure(t, d, sc, uint64(di+1))
				for i, cq := range checkedQuantiles {
					if m.rankErr[i] > cq.maxRankErr {
						t.Errorf("q=%v: rank error %.6f > %v", cq.q, m.rankErr[i], cq.maxRankErr)
					}
				}
				if d.unimodal && m.relErr[2] > 0.01 {
					t.Errorf("p99 relative error %.4f%% > 1%%", 100*m.relErr[2])
				}
				if d.tight && m.relErr[2] > 0.003 {
					t.Errorf("p99 relative error %.4f%% > 0.3%%", 100*m.relErr[2])
				}
				if got := dg.Min(); got != xs[0] {
					t.Errorf("Min() = %v, want %v", got, xs[0])
				}
				if got := dg.Max(); got != xs[len(xs)-1] {
					t.Errorf("Max() = %v, want %v", got, xs[len(xs)-1])
				}
				if got := dg.Count(); got != float64(len(xs)) {
					t.Errorf("Count() = %v, want %v", got, len(xs))
				}
				if d.discrete {
					for q := 0.0; q <= 1; q += 0.0005 {
						v := dg.Quantile(q)
						if v != math.Trunc(v) {
							t.Fatalf("Quantile(%v) = %v, not a sample value", q, v)
						}
						if e := rankError(xs, q, v); e > 0 {
							t.Fatalf("Quantile(%v) = %v, rank error %v", q, v, e)
						}
					}
				}
				if m.bytes > 8192 {
					t.Errorf("encoding is %d bytes, over 8 KiB", m.bytes)
				}
			})
		}
	}
}

// TestAccuracyReport prints the accuracy table published in doc.go:
//
//	go test -run TestAccuracyReport -v ./tdigest/
func TestAccuracyReport(t *testing.T) {
	if !testing.Verbose() {
		t.Skip("prints a report; run with -v")
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-17s %-13s | %-35s | %-35s | %s\n", "distribution", "scenario",
		"rank error p50 p90 p99 p99.9", "relative error p50 p90 p99 p99.9", "low tail p1 p0.1, centroids, bytes")
	for di, d := range distributions {
		for _, sc := range scenarios {
			m, _, _ := measure(t, d, sc, uint64(di+1))
			fmt.Fprintf(&sb, "%-17s %-13s | %.6f %.6f %.6f %.6f | %.5f%% %.5f%% %.4f%% %.4f%% | %.6f %.6f %4d %5d\n",
				d.name, sc.name,
				m.rankErr[0], m.rankErr[1], m.rankErr[2], m.rankErr[3],
				100*m.relErr[0], 100*m.relErr[1], 100*m.relErr[2], 100*m.relErr[3],
				m.lowRankErr[0], m.lowRankErr[1], m.centroids, m.bytes)
		}
	}
	t.Log("\n" + sb.String())
}
