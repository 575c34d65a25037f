package tdigest

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
)

// TestSweep measures, over many seeds, the worst error of each kind as a
// fraction of its bound, per compression:
//
//	TDIGEST_SWEEP=10 go test -run TestSweep -v ./tdigest/
func TestSweep(t *testing.T) {
	seeds, _ := strconv.Atoi(os.Getenv("TDIGEST_SWEEP"))
	if seeds == 0 {
		t.Skip("set TDIGEST_SWEEP=<seeds>")
	}
	comps := []float64{DefaultCompression}
	if c := os.Getenv("TDIGEST_SWEEP_COMP"); c != "" {
		comps = nil
		for _, f := range splitComma(c) {
			v, _ := strconv.ParseFloat(f, 64)
			comps = append(comps, v)
		}
	}
	for _, comp := range comps {
		// worst[scenario][quantile] as a fraction of the rank bound; p99 rel
		// as a fraction of its bound.
		var worstRank [4][4]float64
		var worstRel [4]float64
		var worstP999Rel float64
		maxBytes, maxCents := 0, 0
		for di, d := range distributions {
			for s := 0; s < seeds; s++ {
				xs := samples(d, uint64(1000*di+s+17), accuracySamples)
				sorted := slices.Clone(xs)
				slices.Sort(sorted)
				build := func(parts int, wire bool) *TDigest {
					ds := make([]*TDigest, parts)
					for i := range ds {
						ds[i] = NewWithCompression(comp)
					}
					for i, x := range xs {
						ds[i%parts].Add(x, 1)
					}
					if parts == 1 && !wire {
						return ds[0]
					}
					g := NewWithCompression(comp)
					for _, p := range ds {
						if wire {
							p = roundTrip(t, p)
						}
						g.Merge(p)
					}
					return g
				}
				for si, dg := range []*TDigest{build(1, false), build(16, false), build(16, true), build(4, false)} {
					for qi, cq := range checkedQuantiles {
						v := dg.Quantile(cq.q)
						worstRank[si][qi] = max(worstRank[si][qi], rankError(sorted, cq.q, v)/cq.maxRankErr)
						if qi == 2 && d.unimodal {
							bound := 0.01
							if d.tight {
								bound = 0.003
							}
							worstRel[si] = max(worstRel[si], relError(sorted, cq.q, v)/bound)
						}
						if qi == 3 && d.unimodal {
							worstP999Rel = max(worstP999Rel, relError(sorted, cq.q, v))
						}
					}
					b, _ := dg.MarshalBinary()
					maxBytes = max(maxBytes, len(b))
					maxCents = max(maxCents, dg.Centroids())
				}
			}
		}
		fmt.Printf("compression %v: max %d centroids, %d bytes; worst p99.9 rel %.3f%%\n", comp, maxCents, maxBytes, 100*worstP999Rel)
		for si, name := range []string{"single", "merged16", "merged16+wire", "merged4"} {
			fmt.Printf("  %-14s rank/bound p50 %.2f p90 %.2f p99 %.2f p99.9 %.2f   p99 rel/bound %.2f\n", name,
				worstRank[si][0], worstRank[si][1], worstRank[si][2], worstRank[si][3], worstRel[si])
		}
	}
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}
