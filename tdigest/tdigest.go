package tdigest

import (
	"errors"
	"math"
)

// DefaultCompression is the compression used by New. See the package
// documentation for what it buys: at this value a digest of 100,000 samples
// meets the published rank-error bounds (0.0001 at p99.9) on every tested
// distribution, and its encoding stays far under 8 KiB.
const DefaultCompression = 400

const (
	// MinCompression and MaxCompression bound the compression parameter;
	// NewWithCompression clamps to them. The upper bound also bounds the
	// buffer a decoded digest may later allocate.
	MinCompression = 20
	MaxCompression = 10000
)

// Sentinel errors returned by Add. Callers count them as bad samples.
var (
	ErrInvalidValue  = errors.New("tdigest: value is NaN or infinite")
	ErrInvalidWeight = errors.New("tdigest: weight is not a finite positive number")
)

// centroid is a weighted mean. In the buffer it is one sample.
type centroid struct {
	mean, weight float64
}

// TDigest is a merging t-digest. The zero value is not usable; call New.
//
// A TDigest is not safe for concurrent use: even the read methods (Quantile,
// CDF, MarshalBinary) first fold buffered samples into the centroids.
type TDigest struct {
	compression float64

	// cents are the centroids, sorted by mean. pure has bit i set when
	// centroid i holds a single distinct value (every sample in it equals
	// its mean), so that Quantile can return that value exactly.
	cents []centroid
	pure  []uint64

	// buf holds samples not yet merged into cents, in arrival order. It
	// grows lazily up to bufCap and is merged when full.
	buf    []centroid
	bufCap int

	merged   float64 // total weight in cents
	buffered float64 // total weight in buf
	sum      float64
	min, max float64

	// forward alternates the direction of the merge pass so that the
	// greedy packing does not favour one tail.
	forward bool
}

// New returns an empty digest with DefaultCompression. It allocates no
// buffers: they grow as samples arrive.
func New() *TDigest {
	return NewWithCompression(DefaultCompression)
}

// NewWithCompression returns an empty digest with the given compression,
// clamped to [MinCompression, MaxCompression] (NaN gives the default).
// Higher compression means more centroids, more accuracy and more bytes.
func NewWithCompression(compression float64) *TDigest {
	t := &TDigest{}
	t.setCompression(compression)
	t.Reset()
	return t
}

func (t *TDigest) setCompression(c float64) {
	switch {
	case c != c:
		c = DefaultCompression
	case c < MinCompression:
		c = MinCompression
	case c > MaxCompression:
		c = MaxCompression
	}
	t.compression = c
	t.bufCap = bufferCapacity(c)
}

// bufferCapacity is how many samples are buffered before a merge pass.
func bufferCapacity(c float64) int {
	return int(c * 2)
}

// Compression returns the digest's compression parameter.
func (t *TDigest) Compression() float64 { return t.compression }

// Reset empties the digest, keeping its buffers for reuse.
func (t *TDigest) Reset() {
	t.cents = t.cents[:0]
	t.pure = t.pure[:0]
	t.buf = t.buf[:0]
	t.merged, t.buffered, t.sum = 0, 0, 0
	t.min, t.max = math.Inf(1), math.Inf(-1)
}

// Add records value with the given weight (1 for a plain sample, 1/rate for
// a sampled one). NaN or infinite values return ErrInvalidValue; a weight
// that is not finite and positive returns ErrInvalidWeight. The digest is
// unchanged when an error is returned.
func (t *TDigest) Add(value, weight float64) error {
	if value-value != 0 { // NaN or ±Inf
		return ErrInvalidValue
	}
	if !(weight > 0) || weight-weight != 0 {
		return ErrInvalidWeight
	}
	if len(t.buf) == cap(t.buf) {
		if cap(t.buf) >= t.bufCap {
			t.process()
		} else {
			t.growBuf()
		}
	}
	t.buf = append(t.buf, centroid{value, weight})
	t.buffered += weight
	t.sum += value * weight
	if value < t.min {
		t.min = value
	}
	if value > t.max {
		t.max = value
	}
	return nil
}

func (t *TDigest) growBuf() {
	n := 2 * cap(t.buf)
	if n < 8 {
		n = 8
	}
	if n > t.bufCap {
		n = t.bufCap
	}
	nb := make([]centroid, len(t.buf), n)
	copy(nb, t.buf)
	t.buf = nb
}

// Count returns the total weight added.
func (t *TDigest) Count() float64 { return t.merged + t.buffered }

// Sum returns the sum of value*weight over all samples added.
func (t *TDigest) Sum() float64 { return t.sum }

// Min returns the smallest value added, or NaN when empty.
func (t *TDigest) Min() float64 {
	if t.Count() == 0 {
		return math.NaN()
	}
	return t.min
}

// Max returns the largest value added, or NaN when empty.
func (t *TDigest) Max() float64 {
	if t.Count() == 0 {
		return math.NaN()
	}
	return t.max
}

// Centroids returns the number of centroids after folding in buffered
// samples.
func (t *TDigest) Centroids() int {
	t.process()
	return len(t.cents)
}

// Merge folds other into t. other is not modified; a nil or empty other is a
// no-op. The result keeps t's compression.
func (t *TDigest) Merge(other *TDigest) {
	if other == nil || other == t || other.Count() == 0 {
		if other == t && t.Count() > 0 {
			t.mergeSelf()
		}
		return
	}
	t.process()
	if len(other.cents) > 0 {
		t.mergeSorted(other.cents, other.pure, other.merged)
	}
	if len(other.buf) > 0 {
		if cap(t.buf) < len(other.buf) {
			t.buf = make([]centroid, 0, max(len(other.buf), min(t.bufCap, 2*len(other.buf))))
		}
		t.buf = append(t.buf[:0], other.buf...)
		t.buffered = other.buffered
		t.process()
	}
	t.sum += other.sum
	if other.min < t.min {
		t.min = other.min
	}
	if other.max > t.max {
		t.max = other.max
	}
}

// mergeSelf doubles every weight: merging a digest with itself.
func (t *TDigest) mergeSelf() {
	t.process()
	for i := range t.cents {
		t.cents[i].weight *= 2
	}
	t.merged *= 2
	t.sum *= 2
}

// process merges the buffer into the centroids.
func (t *TDigest) process() {
	if len(t.buf) == 0 {
		return
	}
	sortCentroids(t.buf)
	w := t.buffered
	t.buffered = 0
	t.mergeSorted(t.buf, nil, w)
	t.buf = t.buf[:0]
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

// scale returns the odds multiplier of the scale function for a merge pass
// over total weight n. See doc.go: the scale function is
// k(q) = c·ln(q/(1-q)), and a centroid starting at quantile q0 may extend to
// q1 with odds(q1) = odds(q0)·e^(1/c). c is chosen so that the number of
// centroids, about 2c·(ln(n/4c)+2), stays near the compression.
func scaleFactor(compression, n float64) float64 {
	c := compression / 20
	for i := 0; i < 4; i++ {
		d := 2 * (math.Log(n/(4*c)) + 2)
		if d < 4 {
			d = 4
		}
		c = compression / d
	}
	return math.Exp(1 / c)
}

// mergeSorted merges the sorted items src (with purity bits srcPure, nil
// meaning all pure) of total weight srcWeight into the centroids, packing
// adjacent items into centroids as far as the scale function allows.
func (t *TDigest) mergeSorted(src []centroid, srcPure []uint64, srcWeight float64) {
	na, ns := len(t.cents), len(src)
	total := na + ns
	if cap(t.cents) < total {
		nc := make([]centroid, na, max(total, 2*cap(t.cents)))
		copy(nc, t.cents)
		t.cents = nc
	}
	words := (total + 63) >> 6
	if cap(t.pure) < words {
		np := make([]uint64, len(t.pure), max(words, 2*cap(t.pure)))
		copy(np, t.pure)
		t.pure = np
	}
	t.pure = t.pure[:words]
	arr := t.cents[:total]
	n := t.merged + srcWeight
	e := scaleFactor(t.compression, n)

	var out int
	if t.forward {
		// Move the existing centroids to the back, then write from the front.
		copy(arr[ns:], arr[:na])
		for i := na - 1; i >= 0; i-- {
			setBit(t.pure, i+ns, t.isPure(i))
		}
		out = t.packForward(arr, ns, src, srcPure, n, e)
	} else {
		start := t.packBackward(arr, na, src, srcPure, n, e)
		out = total - start
		copy(arr, arr[start:])
		for i := 0; i < out; i++ {
			setBit(t.pure, i, t.isPure(i+start))
		}
	}
	t.forward = !t.forward
	t.cents = arr[:out]
	t.pure = t.pure[:(out+63)>>6]
	t.merged = n
}

// limit returns the largest weight a centroid may reach when the weight
// already packed (from the end the pass started at) is done, of n in total.
func limit(done, n, e float64) float64 {
	q0 := done / n
	if q0 >= 1 {
		return 0
	}
	o := q0 / (1 - q0) * e
	q1 := o / (1 + o)
	return (q1 - q0) * n
}

// accept decides whether item (m, w, p) joins the open centroid
// (cm, cw, cp) whose weight limit is lim.
func accept(cm, cw float64, cp bool, m, w float64, p bool, lim float64) bool {
	if m == cm && p && cp {
		return true // lossless: same single value
	}
	if cw+w > lim {
		return false
	}
	// Keep substantial single-valued centroids single-valued: closing one
	// early costs at most one extra centroid per half-full one.
	if cp && cw >= lim/2 {
		return false
	}
	if p && w >= lim/2 {
		return false
	}
	return true
}

// packBackward merges arr[:na] (the centroids) and src from the largest
// mean down, writing output from the end of arr. It returns the index of
// the first output centroid.
func (t *TDigest) packBackward(arr []centroid, na int, src []centroid, srcPure []uint64, n, e float64) int {
	i, j := na-1, len(src)-1
	w := len(arr)
	var cm, cw float64
	var cp bool
	open := false
	done := 0.0
	lim := 0.0
	for i >= 0 || j >= 0 {
		var m, wt float64
		var p bool
		if j < 0 || (i >= 0 && arr[i].mean > src[j].mean) {
			m, wt, p = arr[i].mean, arr[i].weight, t.isPure(i)
			i--
		} else {
			m, wt, p = src[j].mean, src[j].weight, bitAt(srcPure, j)
			j--
		}
		if open && accept(cm, cw, cp, m, wt, p, lim) {
			nw := cw + wt
			if m != cm {
				cm += (m - cm) * wt / nw
				cp = false
			} else {
				cp = cp && p
			}
			cw = nw
			continue
		}
		if open {
			w--
			arr[w] = centroid{cm, cw}
			setBit(t.pure, w, cp)
			done += cw
		}
		cm, cw, cp, open = m, wt, p, true
		lim = limit(done, n, e)
	}
	if open {
		w--
		arr[w] = centroid{cm, cw}
		setBit(t.pure, w, cp)
	}
	return w
}

// packForward merges arr[off:] (the centroids, moved there) and src from
// the smallest mean up, writing output from the start of arr. It returns
// the number of output centroids.
func (t *TDigest) packForward(arr []centroid, off int, src []centroid, srcPure []uint64, n, e float64) int {
	i, j := off, 0
	w := 0
	var cm, cw float64
	var cp bool
	open := false
	done := 0.0
	lim := 0.0
	for i < len(arr) || j < len(src) {
		var m, wt float64
		var p bool
		if j >= len(src) || (i < len(arr) && arr[i].mean < src[j].mean) {
			m, wt, p = arr[i].mean, arr[i].weight, t.isPure(i)
			i++
		} else {
			m, wt, p = src[j].mean, src[j].weight, bitAt(srcPure, j)
			j++
		}
		if open && accept(cm, cw, cp, m, wt, p, lim) {
			nw := cw + wt
			if m != cm {
				cm += (m - cm) * wt / nw
				cp = false
			} else {
				cp = cp && p
			}
			cw = nw
			continue
		}
		if open {
			arr[w] = centroid{cm, cw}
			setBit(t.pure, w, cp)
			w++
			done += cw
		}
		cm, cw, cp, open = m, wt, p, true
		lim = limit(done, n, e)
	}
	if open {
		arr[w] = centroid{cm, cw}
		setBit(t.pure, w, cp)
		w++
	}
	return w
}
