package tdigest

import "math"

// The digest's estimate of the inverse CDF is piecewise linear in rank,
// through these anchor points (rank, value):
//
//   - (0, min), and when the first centroid is mixed (min, up to rank 1):
//     the smallest sample is known exactly and holds the first unit of rank;
//   - for a single-valued ("pure") centroid over ranks [L, L+w]: (L, mean)
//     and (L+w, mean), so every rank inside it returns its exact value;
//   - for a mixed centroid: (L+w/2, mean);
//   - symmetrically (max, from rank n-1) and (n, max) at the top.
//
// Quantile walks the anchors from whichever end is nearer; CDF inverts the
// same function.

// interp returns the value at rank r on the segment (r0,v0)-(r1,v1), with
// r0 < r <= r1.
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
	c := t.cents
	last := len(c) - 1
	if q <= 0.5 {
		r := q * n
		pr, pv := 0.0, t.min
		if !t.isPure(0) {
			u := math.Min(1, c[0].weight/2)
			if r <= u {
				return t.min
			}
			pr = u
		}
		l := 0.0
		for i := range c {
			m, w := c[i].mean, c[i].weight
			if t.isPure(i) {
				if r <= l {
					return interp(pr, pv, l, m, r)
				}
				if r <= l+w {
					return m
				}
				pr, pv = l+w, m
			} else {
				mid := l + w/2
				if r <= mid {
					return interp(pr, pv, mid, m, r)
				}
				pr, pv = mid, m
			}
			l += w
		}
		end := n
		if !t.isPure(last) {
			end = n - math.Min(1, c[last].weight/2)
		}
		if r >= end {
			return t.max
		}
		return interp(pr, pv, end, t.max, r)
	}
	// Upper half: the same walk from the top, ranks counted downward.
	s := (1 - q) * n
	pr, pv := 0.0, t.max
	if !t.isPure(last) {
		u := math.Min(1, c[last].weight/2)
		if s <= u {
			return t.max
		}
		pr = u
	}
	l := 0.0
	for i := last; i >= 0; i-- {
		m, w := c[i].mean, c[i].weight
		if t.isPure(i) {
			if s <= l {
				return interp(pr, pv, l, m, s)
			}
			if s <= l+w {
				return m
			}
			pr, pv = l+w, m
		} else {
			mid := l + w/2
			if s <= mid {
				return interp(pr, pv, mid, m, s)
			}
			pr, pv = mid, m
		}
		l += w
	}
	end := n
	if !t.isPure(0) {
		end = n - math.Min(1, c[0].weight/2)
	}
	if s >= end {
		return t.min
	}
	return interp(pr, pv, end, t.min, s)
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
	c := t.cents
	last := len(c) - 1
	// Walk anchors upward until one exceeds x; interpolate from the
	// previous one.
	pr, pv := 0.0, t.min
	at := func(r, v float64) (float64, bool) {
		if v > x {
			if r <= pr {
				return math.Min(1, pr/n), true
			}
			f := (x - pv) / (v - pv)
			if f != f || f < 0 || f > 1 { // overflow: scale down
				f = (x/2 - pv/2) / (v/2 - pv/2)
			}
			return math.Min(1, math.Max(0, (pr+f*(r-pr))/n)), true
		}
		pr, pv = r, v
		return 0, false
	}
	if !t.isPure(0) {
		at(math.Min(1, c[0].weight/2), t.min)
	}
	l := 0.0
	for i := range c {
		m, w := c[i].mean, c[i].weight
		if t.isPure(i) {
			if f, ok := at(l, m); ok {
				return f
			}
			if f, ok := at(l+w, m); ok {
				return f
			}
		} else if f, ok := at(l+w/2, m); ok {
			return f
		}
		l += w
	}
	if !t.isPure(last) {
		if f, ok := at(n-math.Min(1, c[last].weight/2), t.max); ok {
			return f
		}
	}
	if f, ok := at(n, t.max); ok {
		return f
	}
	return 1
}
