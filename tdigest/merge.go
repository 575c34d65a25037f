package tdigest

import (
	"math"
	"sync"
)

// The merge pass: buffered samples (or another digest's centroids) are
// sorted, merged with the centroids, and packed into new centroids as far
// as the scale function and the rules for single values and gaps allow.

// bigGapFactor: see pack.
const bigGapFactor = 32

// strandFactor: a centroid holding less than 1/strandFactor of its limit may
// join a next item that does not fit.
const strandFactor = 16

// scratch is working space for a merge pass, shared between digests.
type scratch struct {
	gaps  []float64
	items []centroid
	keys  []uint64
	src   []centroid
	out   []centroid
	bits  []uint64
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// process merges the buffer into the centroids.
func (t *TDigest) process() {
	n := len(t.vals)
	if n == 0 {
		return
	}
	s := scratchPool.Get().(*scratch)
	items := s.itemsFor(len(t.cents) + n)
	if t.mixed {
		if cap(s.src) < n {
			s.src = make([]centroid, n)
		}
		src := s.src[:n]
		for i, v := range t.vals {
			src[i] = centroid{v, t.wts[i]}
		}
		sortCentroids(src)
		mergeItems(items, t.cents, t.pure, src, nil)
	} else {
		if cap(s.keys) < n {
			s.keys = make([]uint64, n)
		}
		sortFloats(t.vals, s.keys[:n])
		mergeValues(items, t.cents, t.pure, t.vals, t.bufW)
	}
	w := t.buffered
	t.vals = t.vals[:0]
	t.wts = t.wts[:0]
	t.mixed = false
	t.buffered = 0
	t.packItems(s, items, w)
	scratchPool.Put(s)
}

// mergeSorted merges sorted centroids src (purity bits srcPure) of total
// weight srcWeight into t.
func (t *TDigest) mergeSorted(src []centroid, srcPure []uint64, srcWeight float64) {
	s := scratchPool.Get().(*scratch)
	items := s.itemsFor(len(t.cents) + len(src))
	mergeItems(items, t.cents, t.pure, src, srcPure)
	t.packItems(s, items, srcWeight)
	scratchPool.Put(s)
}

func (s *scratch) itemsFor(n int) []centroid {
	if cap(s.items) < n {
		s.items = make([]centroid, n)
	}
	return s.items[:n]
}

// mergeItems merges sorted centroids a and b (purity bits aPure and bPure,
// nil meaning all pure) into items, which carry purity in the sign of their
// weight.
func mergeItems(items, a []centroid, aPure []uint64, b []centroid, bPure []uint64) {
	i, j := 0, 0
	for k := range items {
		if j >= len(b) || (i < len(a) && a[i].mean <= b[j].mean) {
			items[k] = a[i]
			if bitAt(aPure, i) {
				items[k].weight = -items[k].weight
			}
			i++
		} else {
			items[k] = b[j]
			if bitAt(bPure, j) {
				items[k].weight = -items[k].weight
			}
			j++
		}
	}
}

// mergeValues is mergeItems for sorted samples vals, all of weight w.
func mergeValues(items, a []centroid, aPure []uint64, vals []float64, w float64) {
	i, j := 0, 0
	for k := range items {
		if j >= len(vals) || (i < len(a) && a[i].mean <= vals[j]) {
			items[k] = a[i]
			if bitAt(aPure, i) {
				items[k].weight = -items[k].weight
			}
			i++
		} else {
			items[k] = centroid{vals[j], -w}
			j++
		}
	}
}

func (t *TDigest) isPure(i int) bool {
	return t.pure[i>>6]&(1<<(uint(i)&63)) != 0
}

func bitAt(bits []uint64, i int) bool {
	if bits == nil {
		return true
	}
	return bits[i>>6]&(1<<(uint(i)&63)) != 0
}

func setBit(bits []uint64, i int, v bool) {
	if v {
		bits[i>>6] |= 1 << (uint(i) & 63)
	} else {
		bits[i>>6] &^= 1 << (uint(i) & 63)
	}
}

// scale is the scale function of a merge pass; see doc.go. With
// k(q) = c·ln(q/(1-q)), a centroid starting at quantile q0 may extend to the
// q1 with odds(q1) = odds(q0)·e, e = e^(1/c): about q0(1-q0)/c wide, which
// keeps tail centroids tiny. In the middle, where that would exceed
// 1/(middleFactor·c), the width is capped there instead. c is chosen so
// that the number of centroids stays near the compression.
type scale struct {
	e   float64 // odds multiplier e^(1/c); 1 keeps every distinct value
	cap float64 // largest centroid weight anywhere
	// gaps are the ranks, in pass order, of gaps in the data: centroids
	// near one are kept as small as near an end of the data, growing by
	// half at each step away from it.
	gaps []float64
}

const (
	// gapRatio: a step between centroid means, per unit of weight, this
	// many times the four steps around it (all but the largest of them,
	// which may be the other half of a gap split by a stray sample) is a
	// gap in the data.
	gapRatio = 32
	// maxGaps is how many gaps a pass treats as ends of the data; each
	// costs a few dozen centroids.
	maxGaps = 4
)

func secondLargest(a, b, c, d float64) float64 {
	hi1, hi2 := max(a, b), min(a, b)
	for _, x := range [2]float64{c, d} {
		if x > hi1 {
			hi1, hi2 = x, hi1
		} else if x > hi2 {
			hi2 = x
		}
	}
	return hi2
}

// findGaps appends to g the ranks among items (sorted, weights signed) of
// up to maxGaps gaps found between the current centroids.
func (t *TDigest) findGaps(g []float64, items []centroid) []float64 {
	c := t.cents
	if len(c) < 8 {
		return g
	}
	step := func(i int) float64 {
		return (c[i+1].mean - c[i].mean) / ((c[i].weight + c[i+1].weight) / 2)
	}
	var vals [maxGaps]float64
	nv := 0
	s0, s1, s2, s3 := step(0), step(1), step(2), step(3)
	for i := 2; i+3 < len(c) && nv < maxGaps; i++ {
		s4 := step(i + 2)
		if s2 > gapRatio*secondLargest(s0, s1, s3, s4) {
			vals[nv] = c[i].mean/2 + c[i+1].mean/2
			nv++
		}
		s0, s1, s2, s3 = s1, s2, s3, s4
	}
	if nv == 0 {
		return g
	}
	r, k := 0.0, 0
	for _, it := range items {
		for k < nv && it.mean >= vals[k] {
			g = append(g, r)
			k++
		}
		if k == nv {
			break
		}
		r += math.Abs(it.weight)
	}
	return g
}

// middleFactor: centroids in the middle hold at most 1/(middleFactor·c) of
// the weight, a third of what k(q) alone allows at the median.
const middleFactor = 12

func newScale(compression, n float64) scale {
	// Centroids number about 2c·(ln(n/4c)+2) under k(q), plus
	// c·((1-2q0)·middleFactor - 2·ln((1-q0)/q0)) more for the cap in the
	// middle, where q0(1-q0) = 1/middleFactor.
	q0 := (1 - math.Sqrt(1-4.0/middleFactor)) / 2
	extra := (1-2*q0)*middleFactor - 2*math.Log((1-q0)/q0)
	c := compression / 20
	for i := 0; i < 4; i++ {
		d := 2*(math.Log(n/(4*c))+2) + extra
		if d < 4 {
			d = 4
		}
		c = compression / d
	}
	return scale{e: math.Exp(1 / c), cap: n / (middleFactor * c)}
}

// packItems replaces the centroids with items (the centroids merged with
// sorted new items of total weight srcWeight, pure ones with negated
// weights), packing adjacent items into centroids as far as the scale
// function allows. The output is built in s and copied back.
func (t *TDigest) packItems(s *scratch, items []centroid, srcWeight float64) {
	total := len(items)
	if cap(s.out) < total {
		s.out = make([]centroid, total)
	}
	words := (total + 63) >> 6
	if cap(s.bits) < words {
		s.bits = make([]uint64, words)
	}
	out, bits := s.out[:total], s.bits[:words]
	n := t.merged + srcWeight
	sc := scale{e: 1} // no room to grow: only equal values are merged
	if n >= exactWeight*t.compression {
		// Until the digest has seen this much weight it keeps every
		// sample exactly; that costs at most about as many centroids as a
		// full digest has.
		sc = newScale(t.compression, n)
	}
	if sc.e != 1 {
		sc.gaps = t.findGaps(s.gaps[:0], items)
		s.gaps = sc.gaps
		if !t.forward {
			// Ranks counted from the top, nearest first.
			g := sc.gaps
			for i, j := 0, len(g)-1; i < j; i, j = i+1, j-1 {
				g[i], g[j] = g[j], g[i]
			}
			for i := range g {
				g[i] = n - g[i]
			}
		}
	}
	lo, hi := pack(out, bits, items, t.forward, n, sc)
	t.forward = !t.forward
	m := hi - lo
	if cap(t.cents) < m {
		t.cents = make([]centroid, m, m+m/16+4)
	}
	t.cents = t.cents[:m]
	copy(t.cents, out[lo:hi])
	pw := (m + 63) >> 6
	if cap(t.pure) < pw {
		t.pure = make([]uint64, pw, pw+1)
	}
	t.pure = t.pure[:pw]
	if lo&63 == 0 {
		copy(t.pure, bits[lo>>6:])
		if m&63 != 0 {
			t.pure[pw-1] &= 1<<(uint(m)&63) - 1
		}
	} else {
		clear(t.pure)
		for i := 0; i < m; i++ {
			if bitAt(bits, lo+i) {
				setBit(t.pure, i, true)
			}
		}
	}
	t.merged = n
}

// mergeMean is the weighted mean of a (weight aw) and b (weight bw),
// aw+bw = n, computed so that it cannot overflow and stays in [a, b].
func mergeMean(a, aw, b, bw, n float64) float64 {
	m := a*(aw/n) + b*(bw/n)
	lo, hi := a, b
	if lo > hi {
		lo, hi = hi, lo
	}
	if m < lo {
		return lo
	}
	if m > hi {
		return hi
	}
	return m
}

// limit returns the largest weight a centroid may reach when the weight
// already packed (from the end the pass started at) is done, of n in total:
// with q0 = done/n, the q1 whose odds are e times q0's, less q0, times n,
// capped at sc.cap.
func limit(done, n float64, sc scale) float64 {
	if done >= n {
		return 0
	}
	e := sc.e
	lim := min(done*(n-done)*(e-1)/(n-done+done*e), sc.cap)
	// Near a gap: grow by half at each step away from it.
	for _, g := range sc.gaps {
		if g <= done {
			lim = min(lim, (done-g)/2)
		} else {
			lim = min(lim, (g-done)/3)
			break
		}
	}
	return max(lim, 0)
}

// pack packs sorted items (pure ones with negated weights) into centroids,
// from the smallest mean up when forward is set and from the largest down
// otherwise, as far as the scale function allows, writing them to out and
// their purity to obits. Output is written from the start of out going
// forward and from the end going backward; pack returns the range written.
//
// The open centroid has weight cw and Σ mean·weight sum (finite while inc
// is clear); cm is its value while it is single-valued (cp), and its
// running mean once sum would overflow (inc). first and last are the means
// of its first and latest items, lastW the latest item's weight.
func pack(out []centroid, obits []uint64, items []centroid, forward bool, n float64, sc scale) (lo, hi int) {
	total := len(items)
	if total == 0 {
		return 0, 0
	}
	w, dw := 0, 1
	idx, di := 0, 1
	if !forward {
		w, dw = total-1, -1
		idx, di = total-1, -1
	}
	cm, cw := items[idx].mean, items[idx].weight
	cp := cw < 0
	cw = math.Abs(cw)
	sum := cm * cw
	inc := sum-sum != 0
	first, last := cm, cm
	lastW := cw
	// e1 and e2 are the last two centroids emitted.
	var e1, e2 centroid
	emitted := 0
	done, lim := 0.0, 0.0
	for k := 1; k < total; k++ {
		idx += di
		m, wt := items[idx].mean, items[idx].weight
		p := wt < 0
		wt = math.Abs(wt)
		nw := cw + wt
		var ok bool
		switch {
		case m == cm && cp && p:
			ok = true // lossless: same single value
		case p && wt >= lim/2:
			// Keep a substantial single-valued item single-valued.
			ok = false
		case nw > lim && (cw*strandFactor > lim || wt > lim):
			ok = false
		default:
			// Within the limit, or the open centroid is tiny: left alone
			// between two full neighbours it would pin the estimate to its
			// value at a rank it only borders, so it may overfill the next
			// centroid by a little instead.
			jump, extent := math.Abs(m-last), math.Abs(last-first)
			switch {
			case jump <= gapFactor*extent:
				// Closing a centroid that is at least half full early
				// costs at most one extra centroid per half-full one: do
				// it to keep a single-valued one single-valued.
				ok = !(cp && cw >= lim/2)
			case cw >= lim/2:
				ok = false // a gap, or nearly: close the half-full centroid
			default:
				// A jump far beyond what the density behind suggests is a
				// gap however little the centroid holds: a centroid
				// straddling a gap has a mean where no sample is. Smooth
				// data almost never shows one, so this costs few centroids.
				// Items of the pass interleave (new samples fall between
				// and inside old centroids), so the weight that could lie
				// between two items is up to the larger centroid nearby.
				// density is the value per unit of weight between the
				// means of e1 and e2.
				ok = emitted < 2
				if !ok {
					density := math.Abs(e1.mean-e2.mean) / ((e1.weight + e2.weight) / 2)
					ok = !(jump > bigGapFactor*density*max(1, (wt+lastW)/2, e1.weight/2, cw/2))
				}
			}
		}
		if ok {
			if m == cm && cp {
				// cm stays the exact mean; sum must stay finite while
				// inc is clear.
				cp = p
				if s := sum + m*wt; s-s == 0 {
					sum = s
				} else {
					inc = true
				}
			} else {
				wasPure := cp
				cp = false
				if !inc {
					if s := sum + m*wt; s-s == 0 {
						sum = s
					} else {
						// Overflow: continue with a running mean.
						if !wasPure {
							cm = sum / cw
						}
						inc = true
					}
				}
				if inc {
					cm = mergeMean(cm, cw, m, wt, nw)
				}
			}
			cw = nw
			last, lastW = m, wt
			continue
		}
		c := closeCentroid(cm, cw, sum, cp || inc, first, last)
		out[w] = c
		setBit(obits, w, cp)
		w += dw
		done += cw
		emitted++
		e1, e2 = c, e1
		cm, cw, cp = m, wt, p
		sum = m * wt
		inc = sum-sum != 0
		first, last, lastW = m, m, wt
		lim = limit(done, n, sc)
	}
	out[w] = closeCentroid(cm, cw, sum, cp || inc, first, last)
	setBit(obits, w, cp)
	if forward {
		return 0, w + 1
	}
	return w, total
}

// closeCentroid returns the centroid of weight cw whose mean is cm when
// exact is set and sum/cw otherwise, kept within [first, last].
func closeCentroid(cm, cw, sum float64, exact bool, first, last float64) centroid {
	if exact {
		return centroid{cm, cw}
	}
	lo, hi := first, last
	if lo > hi {
		lo, hi = hi, lo
	}
	return centroid{min(max(sum/cw, lo), hi), cw}
}
