package tdigest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// digestState describes everything of d that a caller sees.
func digestState(d *TDigest) string {
	return fmt.Sprintf("%v count %v sum %v min %v max %v q %v %v %v", d.AppendCentroids(nil), d.Count(), d.Sum(), d.Min(), d.Max(),
		d.Quantile(0.01), d.Quantile(0.5), d.Quantile(0.99))
}

// checkMergeCentroids fails t unless MergeCentroids on a copy of base
// gives what Merge of SetCentroids(cents, lo, hi) gives on another: the
// same digest, or the same error and base unchanged.
func checkMergeCentroids(t *testing.T, base *TDigest, cents []Centroid, lo, hi float64) {
	t.Helper()
	want := base.Clone()
	built := New()
	wantErr := built.SetCentroids(cents, lo, hi)
	if wantErr == nil {
		want.Merge(built)
	}
	for _, scratch := range []*TDigest{nil, New()} {
		got := base.Clone()
		err := got.MergeCentroids(cents, lo, hi, scratch)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) {
			t.Fatalf("MergeCentroids(%v, %v, %v): error %v, want %v", cents, lo, hi, err, wantErr)
		}
		if g, w := digestState(got), digestState(want); g != w {
			t.Fatalf("MergeCentroids(%v, %v, %v):\n got %s\nwant %s", cents, lo, hi, g, w)
		}
	}
}

// MergeCentroids is Merge of the digest SetCentroids builds, for single
// centroids in order (added as samples) and for the others (built in
// scratch), into empty digests and digests with samples, buffered or
// merged; it refuses what SetCentroids refuses, leaving the digest as it
// was.
func TestMergeCentroidsAsMerge(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 2000 {
		base := New()
		for range r.IntN(3) * r.IntN(400) {
			mustAdd(t, base, r.NormFloat64()*10, 1)
		}
		n := r.IntN(8)
		cents := make([]Centroid, n)
		for j := range cents {
			cents[j] = Centroid{Mean: math.Round(r.NormFloat64()*100) / 4, Weight: 1, Single: true}
			if i%3 == 1 {
				cents[j].Weight = float64(1 + r.IntN(5))
			}
			if i%5 == 2 {
				cents[j].Single = r.IntN(2) == 0
			}
			if i%2 == 0 && j > 0 && cents[j].Mean < cents[j-1].Mean {
				cents[j].Mean = cents[j-1].Mean + float64(r.IntN(2))
			}
		}
		lo, hi := -40.0, 40.0
		if i%4 == 3 {
			lo, hi = 0, 0 // within the means: widened
		}
		checkMergeCentroids(t, base, cents, lo, hi)
	}
	for _, tc := range refusedCentroids() {
		for i := range tc.cents {
			tc.cents[i].Single = true
		}
		base := New()
		mustAdd(t, base, 7, 1)
		checkMergeCentroids(t, base, tc.cents, tc.lo, tc.hi)
		err := base.MergeCentroids(tc.cents, tc.lo, tc.hi, nil)
		if !errors.Is(err, tc.want) || base.Count() != 1 {
			t.Errorf("%s: error %v and count %v, want %v and 1", tc.name, err, base.Count(), tc.want)
		}
	}
	// Samples of a weight whose sums round: buffered one by one, as add
	// buffers them, into a buffer of such samples.
	for n := range 40 {
		base := New()
		for i := range n * 7 {
			mustAdd(t, base, float64(i%13), 0.1)
		}
		cents := []Centroid{{Mean: 1, Weight: 0.1, Single: true}, {Mean: 2.5, Weight: 0.1, Single: true}, {Mean: 7, Weight: 0.1, Single: true}}
		checkMergeCentroids(t, base, cents, 0, 9)
	}
	inf := math.Inf(1)
	for _, cents := range [][]Centroid{
		{{Mean: 1, Weight: 1, Single: true}, {Mean: inf, Weight: 1, Single: true}},
		{{Mean: 1, Weight: 1, Single: true}, {Mean: 2, Weight: -1, Single: true}},
		{{Mean: math.Copysign(0, -1), Weight: 1, Single: true}},
		{{Mean: 1e300, Weight: 1e10, Single: true}},
		nil,
	} {
		checkMergeCentroids(t, New(), cents, 0, 1)
	}
}

// FuzzMergeCentroids checks MergeCentroids against SetCentroids and Merge
// for any centroids (three float64s each: mean, weight, and a sign for
// Single), extremes and digest.
func FuzzMergeCentroids(f *testing.F) {
	enc := func(vals ...float64) []byte {
		var b []byte
		for _, v := range vals {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
		return b
	}
	f.Add(enc(0, 10, 1, 1, 1, 2, 1, 1, 3, 2, -1), 5)
	f.Add(enc(-1, 1, 5, 1, 1, 2, 1, 1), 0)
	f.Add(enc(0, 0, math.Inf(1), 1, 1), 3)
	f.Fuzz(func(t *testing.T, data []byte, samples int) {
		var vals []float64
		for ; len(data) >= 8; data = data[8:] {
			vals = append(vals, math.Float64frombits(binary.LittleEndian.Uint64(data)))
		}
		if len(vals) < 2 {
			return
		}
		lo, hi := vals[0], vals[1]
		var cents []Centroid
		for v := vals[2:]; len(v) >= 3 && len(cents) < 64; v = v[3:] {
			cents = append(cents, Centroid{Mean: v[0], Weight: v[1], Single: v[2] >= 0})
		}
		base := New()
		for i := range min(max(samples, 0), 500) {
			mustAdd(t, base, float64(i%37), 1)
		}
		checkMergeCentroids(t, base, cents, lo, hi)
	})
}
