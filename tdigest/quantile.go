package tdigest

import "math"

// The digest's estimate of the inverse CDF is piecewise linear in rank,
// through anchor points (rank, value):
//
//   - (0, min), and when the first centroid is mixed (min, up to rank 1):
//     the smallest sample is known exactly and holds the first unit of rank;
//   - for a single-valued ("pure") centroid over ranks [L, L+w]: (L, mean)
//     and (L+w, mean), so every rank inside it returns its exact value;
//   - for a mixed centroid: (L+w/2, mean);
//   - at a gap next to a mixed centroid (see gapAfter), anchors at the
//     common rank boundary on either side of the gap, so the estimate jumps
//     across it instead of returning values no sample is near;
//   - symmetrically (max, from rank n-1) and (n, max) at the top.
//
// Quantile finds the centroid holding the rank, from whichever end is
// nearer, and interpolates between the anchors around it; CDF inverts the
// same function.

// gapFactor: a segment between two centroid means whose value per unit of
// rank is this many times that of both neighbouring segments is a gap in the
// data. (The merge pass also uses it: see pack.)
const gapFactor = 4

type anchor struct{ r, v float64 }

// spacing is the value per unit of rank between the means of centroids i
// and i+1.
func (t *TDigest) spacing(i int) float64 {
	c := t.cents
	return (c[i+1].mean - c[i].mean) / ((c[i].weight + c[i+1].weight) / 2)
}

// gapAfter reports whether centroids i and i+1, not both single-valued,
// straddle a gap, and if so the extents of the data in centroid i above its
// mean (hr) and in centroid i+1 below its mean (hl), estimated from the
// spacing next to the gap on either side (a single-valued centroid has no
// extent).
func (t *TDigest) gapAfter(i int) (gap bool, hr, hl float64) {
	last := len(t.cents) - 1
	if i < 0 || i >= last || last < 2 {
		return false, 0, 0
	}
	pi, pn := t.isPure(i), t.isPure(i+1)
	if pi && pn {
		return false, 0, 0
	}
	s := t.spacing(i)
	if s-s != 0 {
		return false, 0, 0 // overflow: plain interpolation copes
	}
	left, right := -1.0, -1.0
	if i > 0 {
		left = t.spacing(i - 1)
	}
	if i+1 < last {
		right = t.spacing(i + 1)
	}
	if !(s > gapFactor*max(left, right)) {
		return false, 0, 0
	}
	if left < 0 {
		left = right
	}
	if right < 0 {
		right = left
	}
	c := t.cents
	if !pi {
		hr = left * c[i].weight / 2
	}
	if !pn {
		hl = right * c[i+1].weight / 2
	}
	return true, hr, hl
}

// anchorsOf appends the anchors of centroid i, which starts at rank l, in
// increasing order; the leading anchors before centroid 0 and the trailing
// ones after the last centroid are included.
func (t *TDigest) anchorsOf(a []anchor, i int, l float64) []anchor {
	c := t.cents
	last := len(c) - 1
	m, w := c[i].mean, c[i].weight
	pure := t.isPure(i)
	if i == 0 {
		a = append(a, anchor{0, t.min})
		if !pure {
			a = append(a, anchor{math.Min(1, w/2), t.min})
		}
	}
	if pure {
		a = append(a, anchor{l, m}, anchor{l + w, m})
	} else {
		a = append(a, anchor{l + w/2, m})
	}
	if gap, hr, hl := t.gapAfter(i); gap {
		if !pure {
			a = append(a, anchor{l + w, m + hr})
		}
		a = append(a, anchor{l + w, c[i+1].mean - hl})
	}
	if i == last {
		if !pure {
			a = append(a, anchor{t.merged - math.Min(1, w/2), t.max})
		}
		a = append(a, anchor{t.merged, t.max})
	}
	return a
}

// interp returns the value at rank r on the segment (r0,v0)-(r1,v1), with
// r0 <= r <= r1.
func interp(r0, v0, r1, v1, r float64) float64 {
	if v0 == v1 || r1 <= r0 {
		return v1
	}
	f := (r - r0) / (r1 - r0)
	v := v0 + f*(v1-v0)
	if v-v != 0 { // v1-v0 overflowed
		v = v0*(1-f) + v1*f
	}
	// Guard against rounding outside the segment.
	lo, hi := v0, v1
	if lo > hi {
		lo, hi = hi, lo
	}
	return math.Min(math.Max(v, lo), hi)
}

// Quantile returns the estimated value at quantile q (q is clamped to
// [0, 1]): Min() at 0, Max() at 1, NaN when the digest is empty or q is NaN.
func (t *TDigest) Quantile(q float64) float64 {
	t.process()
	n := t.merged
	if n == 0 || q != q {
		return math.NaN()
	}
	if q <= 0 {
		return t.min
	}
	if q >= 1 {
		return t.max
	}
	r := q * n
	c := t.cents
	last := len(c) - 1
	// Find the centroid i whose ranks [l, l+w] hold r.
	var i int
	var l float64
	if q <= 0.5 {
		for i = 0; i < last; i++ {
			if r <= l+c[i].weight {
				break
			}
			l += c[i].weight
		}
	} else {
		s := n - r
		top := 0.0
		for i = last; i > 0; i-- {
			if s < top+c[i].weight {
				break
			}
			top += c[i].weight
		}
		l = n - top - c[i].weight
	}
	if t.isPure(i) && r >= l {
		return c[i].mean
	}
	// Interpolate between the anchors of centroids i-1, i and i+1.
	var buf [12]anchor
	a := buf[:0]
	if i > 0 {
		a = t.anchorsOf(a, i-1, l-c[i-1].weight)
	}
	a = t.anchorsOf(a, i, l)
	if i < last {
		a = t.anchorsOf(a, i+1, l+c[i].weight)
	}
	if r <= a[0].r {
		return a[0].v
	}
	for k := 1; k < len(a); k++ {
		if r <= a[k].r {
			return interp(a[k-1].r, a[k-1].v, a[k].r, a[k].v, r)
		}
	}
	return a[len(a)-1].v
}

// CDF returns the estimated fraction of the total weight at or below x: 0
// below Min(), 1 at or above Max(), NaN when the digest is empty or x is
// NaN. For a value held by a single-valued centroid the whole of that
// centroid's weight counts as at or below it.
func (t *TDigest) CDF(x float64) float64 {
	t.process()
	n := t.merged
	if n == 0 || x != x {
		return math.NaN()
	}
	if x < t.min {
		return 0
	}
	if x >= t.max {
		return 1
	}
	// Centroids [0, i) have means at most x; l is their weight. Every
	// anchor before centroid i-1's is at most x too, and centroid i's (or
	// the trailing ones) exceed it, so the answer lies among the anchors of
	// centroids i-1 and i.
	c := t.cents
	i, l := 0, 0.0
	for i < len(c) && c[i].mean <= x {
		l += c[i].weight
		i++
	}
	var buf [12]anchor
	a := buf[:0]
	if i > 0 {
		a = t.anchorsOf(a, i-1, l-c[i-1].weight)
	}
	if i < len(c) {
		a = t.anchorsOf(a, i, l)
	}
	prev := anchor{0, t.min}
	for _, an := range a {
		if an.v > x {
			if an.r <= prev.r {
				return math.Min(1, prev.r/n)
			}
			f := (x - prev.v) / (an.v - prev.v)
			if f != f || f < 0 || f > 1 { // overflow: scale down
				f = (x/2 - prev.v/2) / (an.v/2 - prev.v/2)
			}
			return math.Min(1, math.Max(0, (prev.r+f*(an.r-prev.r))/n))
		}
		prev = an
	}
	return 1
}
