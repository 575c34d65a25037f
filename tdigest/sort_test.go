package tdigest

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSortFloats(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 21))
	gens := map[string]func() float64{
		"normal":    r.NormFloat64,
		"lognormal": func() float64 { return math.Exp(10 * r.NormFloat64()) },
		"integers":  func() float64 { return float64(r.IntN(10) - 5) },
		"zeros":     func() float64 { return []float64{0, math.Copysign(0, -1), 1e-300, -1e-300}[r.IntN(4)] },
		"close":     func() float64 { return 1 + float64(r.IntN(1000))*1e-15 },      // same top 40 bits
		"timestamp": func() float64 { return 1.7e9 + float64(r.IntN(100000))/1000 }, // mostly distinct low bits
		"extremes": func() float64 {
			return []float64{math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, 1}[r.IntN(4)]
		},
	}
	for name, gen := range gens {
		for _, n := range []int{0, 1, 5, 33, 100, 800, 5000} {
			f := make([]float64, n)
			for i := range f {
				f[i] = gen()
			}
			want := slices.Clone(f)
			slices.Sort(want)
			sortFloats(f, make([]uint64, n))
			for i := range f {
				if f[i] != want[i] {
					t.Fatalf("%s n=%d: element %d is %v, want %v", name, n, i, f[i], want[i])
				}
			}
		}
	}
}
