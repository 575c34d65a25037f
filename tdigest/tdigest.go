package tdigest

import (
	"errors"
	"math"
)

// DefaultCompression is the compression used by New. 400 is the smallest
// round value at which every accuracy bound of the package documentation
// (rank error 0.0001 at p99.9 over 100,000 samples, and the rest) holds with
// a margin of almost 2× on every tested distribution, for one digest and
// for 16 merged ones; 300 passes with little room and 200 fails. A full
// digest then has about 600 centroids and encodes in about 5.8 KB, under
// the 8 KiB budget.
const DefaultCompression = 400

const (
	// MinCompression and MaxCompression bound the compression parameter;
	// NewWithCompression clamps to them. The upper bound also bounds the
	// buffer a decoded digest may later allocate.
	MinCompression = 20
	MaxCompression = 10000
)

// MaxWeight is the largest weight Add accepts (2^64, far beyond any
// 1/sample-rate), so that total weights cannot overflow.
const MaxWeight = 1 << 64

// maxTotalWeight bounds the total weight of a decoded digest.
const maxTotalWeight = 1 << 200

// Sentinel errors returned by Add. Callers count them as bad samples.
var (
	ErrInvalidValue  = errors.New("tdigest: value is NaN or infinite")
	ErrInvalidWeight = errors.New("tdigest: weight is not positive and at most MaxWeight")
)

// centroid is a weighted mean.
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

	// vals holds samples not yet merged into cents, in arrival order. It
	// grows lazily up to bufCap and is merged when full. While every
	// buffered sample has the same weight that weight is bufW and wts is
	// unused; otherwise mixed is set and wts[i] is the weight of vals[i].
	vals   []float64
	wts    []float64
	bufW   float64
	mixed  bool
	bufCap int

	merged   float64 // total weight in cents
	buffered float64 // total weight in vals
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

// bufferCapacity is how many samples are buffered before a merge pass: the
// larger, the fewer passes over the centroids per sample.
func bufferCapacity(c float64) int {
	return int(c * 3)
}

// exactWeight: a digest keeps every sample exactly until its total weight
// reaches exactWeight×compression.
const exactWeight = 2

// Compression returns the digest's compression parameter.
func (t *TDigest) Compression() float64 { return t.compression }

// Reset empties the digest, keeping its buffers for reuse: it then
// behaves exactly as a new digest of its compression.
func (t *TDigest) Reset() {
	t.cents = t.cents[:0]
	t.pure = t.pure[:0]
	t.vals = t.vals[:0]
	t.wts = t.wts[:0]
	t.bufW = 0
	t.forward = false
	t.mixed = false
	t.merged, t.buffered, t.sum = 0, 0, 0
	t.min, t.max = math.Inf(1), math.Inf(-1)
}

// Check returns the error Add would return for value and weight, without
// adding anything: nil when Add takes them.
func Check(value, weight float64) error {
	if value-value != 0 { // NaN or ±Inf
		return ErrInvalidValue
	}
	if !(weight > 0 && weight <= MaxWeight) {
		return ErrInvalidWeight
	}
	return nil
}

// Add records value with the given weight (1 for a plain sample, 1/rate for
// a sampled one). NaN or infinite values return ErrInvalidValue; a weight
// that is not positive and at most MaxWeight returns ErrInvalidWeight.
// The sum saturates at ±Inf if it overflows. The digest is
// unchanged when an error is returned.
func (t *TDigest) Add(value, weight float64) error {
	if err := Check(value, weight); err != nil {
		return err
	}
	t.add(value, weight)
	t.addSum(value * weight)
	if value < t.min {
		t.min = value
	}
	if value > t.max {
		t.max = value
	}
	return nil
}

// addSum adds x to the sum. On overflow the sum stays at the first
// infinity it reaches, so it is never NaN.
func (t *TDigest) addSum(x float64) {
	if t.sum-t.sum == 0 {
		t.sum += x
	}
}

// add buffers one sample, leaving min, max and sum to the caller.
func (t *TDigest) add(value, weight float64) {
	if len(t.vals) == cap(t.vals) {
		if cap(t.vals) >= t.bufCap {
			t.process()
		} else {
			t.growBuf()
		}
	}
	if len(t.vals) == 0 {
		t.bufW = weight
	} else if weight != t.bufW && !t.mixed {
		t.mixWeights()
	}
	if t.mixed {
		t.wts = append(t.wts, weight)
	}
	t.vals = append(t.vals, value)
	t.buffered += weight
}

func (t *TDigest) growBuf() {
	n := 2 * cap(t.vals)
	if n < 8 {
		n = 8
	}
	if n > t.bufCap {
		n = t.bufCap
	}
	nb := make([]float64, len(t.vals), n)
	copy(nb, t.vals)
	t.vals = nb
	if t.mixed {
		nw := make([]float64, len(t.wts), n)
		copy(nw, t.wts)
		t.wts = nw
	}
}

// mixWeights switches the buffer to per-sample weights.
func (t *TDigest) mixWeights() {
	if cap(t.wts) < cap(t.vals) {
		t.wts = make([]float64, 0, cap(t.vals))
	}
	t.wts = t.wts[:len(t.vals)]
	for i := range t.wts {
		t.wts[i] = t.bufW
	}
	t.mixed = true
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

// Clone returns an independent copy of t.
func (t *TDigest) Clone() *TDigest {
	c := *t
	c.cents = append([]centroid(nil), t.cents...)
	c.pure = append([]uint64(nil), t.pure...)
	c.vals = append([]float64(nil), t.vals...)
	c.wts = append([]float64(nil), t.wts...)
	return &c
}

func (t *TDigest) allPure() bool {
	for i := range t.cents {
		if !t.isPure(i) {
			return false
		}
	}
	return true
}

// Merge folds other into t. other is not modified; a nil or empty other is a
// no-op. The result keeps t's compression.
func (t *TDigest) Merge(other *TDigest) {
	if other == nil || other.Count() == 0 {
		return
	}
	if other == t {
		t.process()
		for i := range t.cents {
			t.cents[i].weight *= 2
		}
		t.merged *= 2
		t.sum *= 2
		return
	}
	if len(other.cents) > 0 {
		if other.allPure() {
			// Single-valued centroids are just weighted samples: buffer
			// them, so that merging the many small digests of a global
			// aggregation costs no merge pass each.
			for _, c := range other.cents {
				t.add(c.mean, c.weight)
			}
		} else {
			t.process()
			t.mergeSorted(other.cents, other.pure, other.merged)
		}
	}
	for i, v := range other.vals {
		w := other.bufW
		if other.mixed {
			w = other.wts[i]
		}
		t.add(v, w)
	}
	t.addSum(other.sum)
	if other.min < t.min {
		t.min = other.min
	}
	if other.max > t.max {
		t.max = other.max
	}
}
