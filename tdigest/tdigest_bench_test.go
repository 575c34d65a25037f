package tdigest

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"unsafe"
)

// benchValues is a fixed, shuffled stream of lognormal samples.
var benchValues = func() []float64 {
	return samples(distributions[2], 42, 1<<16)
}()

func fullDigest(seed uint64) *TDigest {
	d := New()
	for _, x := range samples(distributions[2], seed, accuracySamples) {
		d.Add(x, 1)
	}
	d.process()
	return d
}

// memBytes is the heap held by the digest: the struct and its slices'
// capacity.
func (t *TDigest) memBytes() int {
	return int(unsafe.Sizeof(*t)) +
		cap(t.cents)*int(unsafe.Sizeof(centroid{})) +
		cap(t.pure)*8 +
		cap(t.vals)*8 + cap(t.wts)*8
}

// copyInto makes dst a copy of t, reusing dst's buffers.
func (t *TDigest) copyInto(dst *TDigest) {
	cents, pure, vals, wts := dst.cents, dst.pure, dst.vals, dst.wts
	*dst = *t
	dst.cents = append(cents[:0], t.cents...)
	dst.pure = append(pure[:0], t.pure...)
	dst.vals = append(vals[:0], t.vals...)
	dst.wts = append(wts[:0], t.wts...)
}

func BenchmarkAdd(b *testing.B) {
	d := New()
	for _, x := range benchValues {
		d.Add(x, 1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d.Add(benchValues[i&(len(benchValues)-1)], 1)
	}
}

// BenchmarkAddNew includes creating the digest: the cost for a series that
// sees n samples in an interval, per sample.
func BenchmarkAddNew(b *testing.B) {
	for _, n := range []int{1, 10, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				d := New()
				for j := 0; j < n; j++ {
					d.Add(benchValues[j], 1)
				}
				d.Quantile(0.99)
			}
		})
	}
}

func BenchmarkMerge(b *testing.B) {
	a, o := fullDigest(1), fullDigest(2)
	dst := New()
	a.copyInto(dst)
	dst.Merge(o)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a.copyInto(dst)
		dst.Merge(o)
	}
}

func BenchmarkQuantile(b *testing.B) {
	d := fullDigest(1)
	for _, q := range []float64{0.5, 0.99, 0.999} {
		b.Run(strconv.FormatFloat(q, 'f', -1, 64), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				d.Quantile(q)
			}
		})
	}
}

func BenchmarkCDF(b *testing.B) {
	d := fullDigest(1)
	x := d.Quantile(0.99)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		d.CDF(x)
	}
}

func benchDigests() []struct {
	name string
	d    *TDigest
} {
	small := func(n int) *TDigest {
		d := New()
		r := rand.New(rand.NewPCG(7, 7))
		for i := 0; i < n; i++ {
			d.Add(float64(r.IntN(1000))/10, 1)
		}
		return d
	}
	return []struct {
		name string
		d    *TDigest
	}{
		{"full", fullDigest(1)},
		{"1sample", small(1)},
		{"10samples", small(10)},
		{"100samples", small(100)},
	}
}

func BenchmarkMarshal(b *testing.B) {
	for _, c := range benchDigests() {
		b.Run(c.name, func(b *testing.B) {
			buf, _ := c.d.MarshalBinary()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				buf, _ = c.d.AppendBinary(buf[:0])
			}
			b.ReportMetric(float64(len(buf)), "bytes/digest")
			b.ReportMetric(float64(c.d.memBytes()), "mem-bytes/digest")
		})
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	for _, c := range benchDigests() {
		b.Run(c.name, func(b *testing.B) {
			buf, _ := c.d.MarshalBinary()
			d := New()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := d.UnmarshalBinary(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(buf)), "bytes/digest")
		})
	}
}

// BenchmarkMergeSmall merges a 5-sample digest, as decoded from /import,
// into a full one: the common case of global aggregation.
func BenchmarkMergeSmall(b *testing.B) {
	dst := fullDigest(1)
	small := New()
	for _, x := range benchValues[:5] {
		small.Add(x, 1)
	}
	small = roundTripBench(small)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst.Merge(small)
	}
}

func roundTripBench(d *TDigest) *TDigest {
	buf, _ := d.MarshalBinary()
	out := New()
	if err := out.UnmarshalBinary(buf); err != nil {
		panic(err)
	}
	return out
}
