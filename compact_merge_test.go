package veneur

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/axiomhq/hyperloglog"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// importsForCompact is three imports, as three locals forward one
// interval: global counters, histograms and timers whose digests are
// built as the gRPC decoder builds them (SetCentroids, with extremes
// beyond the means, centroids of several samples and single ones), and
// sets, over series that the imports share in part. Each call builds new
// objects, so that two pools merge nothing in common.
func importsForCompact(t *testing.T) [][]samplers.Forwarded {
	t.Helper()
	var out [][]samplers.Forwarded
	for local := range 3 {
		var fwd []samplers.Forwarded
		for s := range 12 {
			name := "svc.m" + strconv.Itoa(s)
			tags := []string{"env:prod", "shard:" + strconv.Itoa(s%3)}
			f := samplers.Forwarded{Name: name, Tags: tags}
			switch s % 4 {
			case 0:
				f.Type, f.Scope, f.Counter = samplers.CounterMetric, samplers.GlobalOnly, float64(10*local+s)
			case 1, 2:
				f.Type, f.Scope = samplers.HistogramMetric, samplers.MixedScope
				if s%4 == 2 {
					f.Type = samplers.TimerMetric
				}
				cents := []tdigest.Centroid{
					{Mean: float64(local) + 0.5, Weight: 1, Single: true},
					{Mean: float64(s) + 3.25, Weight: 2.5},
					{Mean: float64(s*local) + 9, Weight: 2, Single: true},
				}
				f.Digest = tdigest.New()
				if err := f.Digest.SetCentroids(cents, -1-float64(local), 40+float64(s)); err != nil {
					t.Fatal(err)
				}
			default:
				f.Type, f.Scope = samplers.SetMetric, samplers.MixedScope
				f.Set = hyperloglog.New14()
				for m := range 20 + s*local {
					f.Set.Insert([]byte(name + "/" + strconv.Itoa(m+local*7)))
				}
			}
			fwd = append(fwd, f)
		}
		out = append(out, fwd)
	}
	return out
}

// describeIntervals is every record of ivs, by series: a counter's sum,
// a digest's centroids, extremes, count, sum and median, a set's estimate.
func describeIntervals(ivs []interval) []string {
	var out []string
	for _, iv := range ivs {
		for _, r := range iv.recs {
			d := fmt.Sprintf("%v %s %v: ", r.se.Type, r.se.meta.Name, r.se.meta.Tags)
			switch {
			case r.histo != nil:
				g := r.histo.Digest()
				d += fmt.Sprintf("%v min %v max %v n %v sum %v p50 %v", g.AppendCentroids(nil), g.Min(), g.Max(), g.Count(), g.Sum(), g.Quantile(0.5))
			case r.set != nil:
				d += strconv.FormatUint(r.set.Sketch.Estimate(), 10)
			default:
				d += strconv.FormatFloat(r.value, 'g', -1, 64)
			}
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out
}

// The workers merge an import handed over as a forward.Compact exactly as
// the same series handed over as samplers.Forwarded: the same counters,
// digests (centroids, extremes, sums, exact single values) and sets.
func TestWorkersMergeCompactAsForwarded(t *testing.T) {
	merged := func(compact bool) ([]string, uint64) {
		p := newWorkerPool(2, 0)
		for _, imp := range importsForCompact(t) {
			var err error
			if compact {
				var c forward.Compact
				for i := range imp {
					if !c.AddForwarded(&imp[i]) {
						t.Fatalf("AddForwarded refused %+v", imp[i])
					}
				}
				err = p.MergeCompact(&c)
			} else {
				err = p.Merge(imp)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		p.start(func() {})
		ivs := p.stop()
		var imported uint64
		for _, iv := range ivs {
			imported += iv.imported
		}
		return describeIntervals(ivs), imported
	}
	want, wantN := merged(false)
	got, n := merged(true)
	if n != wantN || n != 36 {
		t.Errorf("imported %d as Compact, %d as Forwarded, want 36", n, wantN)
	}
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("%d series as Compact, %d as Forwarded", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("as Compact: %s\nas Forwarded: %s", got[i], want[i])
		}
	}
	// The extremes merged are those beyond the centroids' means.
	if !slices.ContainsFunc(want, func(d string) bool { return strings.Contains(d, "min -3 max 50") }) {
		t.Errorf("no digest with min -3 and max 50 among %q", want)
	}
}

// MergeCompact, like Merge, takes nothing once the pool is closed.
func TestMergeCompactAfterStop(t *testing.T) {
	p := newWorkerPool(1, 0)
	p.start(func() {})
	p.stop()
	var c forward.Compact
	f := forwardedCounter("a", 1)
	f.Scope = samplers.GlobalOnly
	c.AddForwarded(&f)
	if err := p.MergeCompact(&c); err != forward.ErrClosed {
		t.Errorf("MergeCompact after stop: %v, want ErrClosed", err)
	}
}
