package tdigest

import (
	"cmp"
	"fmt"
	"slices"
)

// Centroid is one centroid of a digest as other t-digest implementations
// exchange them (veneur v14 forwards its digests as lists of centroids):
// the weighted mean of neighbouring samples.
type Centroid struct {
	Mean, Weight float64
	// Single is set when every sample of the centroid has the value
	// Mean, so that quantiles within it return Mean exactly rather than
	// an interpolation (see "Exact values" in the package documentation).
	Single bool
}

// AppendCentroids appends the digest's centroids to dst, in nondecreasing
// order of mean, and returns the extended slice. It first folds buffered
// samples into the centroids, as the other read methods do. Their weights
// add up to Count; Min and Max are the exact extremes that the centroids
// do not carry.
func (t *TDigest) AppendCentroids(dst []Centroid) []Centroid {
	t.process()
	dst = slices.Grow(dst, len(t.cents))
	for i, c := range t.cents {
		dst = append(dst, Centroid{Mean: c.mean, Weight: c.weight, Single: t.isPure(i)})
	}
	return dst
}

// SetCentroids replaces the digest's contents with cents, whose samples
// range from lo to hi: the way to build a digest from another
// implementation's centroids. cents may come in any order (they are
// sorted by mean, stably, in the digest, not in place); SetCentroids keeps
// no reference to it. The digest keeps its compression: the centroids are
// taken as they are, and packed by the compression at the next merge
// pass, when the digest is merged into another or gets more samples.
//
// Count becomes the sum of the weights, Sum the sum of mean×weight (the
// exact sum is not known), and Min and Max lo and hi, widened to the
// smallest and largest mean when the centroids lie outside them (another
// implementation's running means may round past its extremes). With no
// centroids the digest is left empty, whatever lo and hi are.
//
// It refuses means, lo and hi that are NaN or infinite
// (ErrInvalidValue), weights that are not finite and positive
// (ErrInvalidWeight), a total weight above 2^200 (ErrInvalidWeight, as
// UnmarshalBinary refuses it), and a sum that overflows both ways into NaN
// (ErrInvalidValue). On error the digest is left empty, with its
// compression unchanged.
func (t *TDigest) SetCentroids(cents []Centroid, lo, hi float64) error {
	t.Reset()
	return t.setCentroids(cents, lo, hi, func(n, words int) ([]centroid, []uint64) {
		c, p := t.cents, t.pure
		if cap(c) < n {
			c = make([]centroid, 0, n)
		}
		if cap(p) < words {
			p = make([]uint64, words)
		}
		return c[:n], p[:words]
	})
}

// MergeCentroids merges into t the digest that SetCentroids(cents, lo, hi)
// would build, with the same checks and errors, leaving t unchanged on
// error: the result is that of t.Merge on that digest. Centroids in order
// of mean, each single-valued (as a local forwards the few samples of a
// small digest), are added as the weighted samples they are, without
// building the digest; others are built in scratch (which MergeCentroids
// resets and fills) and merged from there. scratch may be nil when the
// caller knows every centroid is single-valued and in order.
func (t *TDigest) MergeCentroids(cents []Centroid, lo, hi float64, scratch *TDigest) error {
	if len(cents) == 0 {
		return nil
	}
	simple := true
	total, sum := 0.0, 0.0
	for i, c := range cents {
		if !c.Single || (i > 0 && c.Mean < cents[i-1].Mean) {
			simple = false
			break
		}
		total += c.Weight
		sum += c.Mean * c.Weight
	}
	if !simple || !finite(lo) || !finite(hi) || !(total <= maxTotalWeight) || sum != sum {
		if scratch == nil {
			scratch = New()
		}
		if err := scratch.SetCentroids(cents, lo, hi); err != nil {
			return err
		}
		t.Merge(scratch)
		return nil
	}
	for i, c := range cents {
		if !finite(c.Mean) || !(c.Weight > 0) || !finite(c.Weight) {
			// SetCentroids gives the error.
			if scratch == nil {
				scratch = New()
			}
			return scratch.SetCentroids(cents[:i+1], lo, hi)
		}
	}
	if n := len(t.vals); !t.mixed && n > 0 && n+len(cents) <= cap(t.vals) && uniform(cents, t.bufW) {
		// What add does for each, when they all fit the buffer and
		// weigh what its samples weigh.
		for _, c := range cents {
			t.vals = append(t.vals, c.Mean)
			t.buffered += c.Weight
		}
	} else {
		for _, c := range cents {
			t.add(c.Mean, c.Weight)
		}
	}
	t.addSum(sum)
	// As Merge takes the extremes of the digest SetCentroids builds.
	if lo := min(lo, cents[0].Mean); lo < t.min {
		t.min = lo
	}
	if hi := max(hi, cents[len(cents)-1].Mean); hi > t.max {
		t.max = hi
	}
	return nil
}

// uniform reports whether every centroid weighs w.
func uniform(cents []Centroid, w float64) bool {
	for _, c := range cents {
		if c.Weight != w {
			return false
		}
	}
	return true
}

// setCentroids is SetCentroids on an empty digest, taking the space for n
// centroids and their words of purity bits from space once cents are
// checked. On error the digest is left empty.
func (t *TDigest) setCentroids(cents []Centroid, lo, hi float64, space func(n, words int) ([]centroid, []uint64)) error {
	if len(cents) == 0 {
		return nil
	}
	if !finite(lo) || !finite(hi) {
		return fmt.Errorf("%w: min %v or max %v", ErrInvalidValue, lo, hi)
	}
	total := 0.0
	sorted := true
	for i, c := range cents {
		if !finite(c.Mean) {
			return fmt.Errorf("%w: centroid %d has mean %v", ErrInvalidValue, i, c.Mean)
		}
		if !(c.Weight > 0) || !finite(c.Weight) {
			return fmt.Errorf("%w: centroid %d has weight %v", ErrInvalidWeight, i, c.Weight)
		}
		total += c.Weight
		if i > 0 && c.Mean < cents[i-1].Mean {
			sorted = false
		}
	}
	if !(total <= maxTotalWeight) {
		return fmt.Errorf("%w: total weight %v above 2^200", ErrInvalidWeight, total)
	}
	if !sorted {
		cents = slices.Clone(cents)
		slices.SortStableFunc(cents, func(a, b Centroid) int { return cmp.Compare(a.Mean, b.Mean) })
	}

	n := len(cents)
	t.cents, t.pure = space(n, (n+63)>>6)
	clear(t.pure)
	for i, c := range cents {
		t.cents[i] = centroid{mean: c.Mean, weight: c.Weight}
		setBit(t.pure, i, c.Single)
	}
	sum := centroidSum(t.cents)
	if sum != sum {
		t.Reset()
		return fmt.Errorf("%w: the sum of mean×weight overflows both ways", ErrInvalidValue)
	}
	t.merged = total
	t.sum = sum
	t.min = min(lo, t.cents[0].mean)
	t.max = max(hi, t.cents[n-1].mean)
	return nil
}

// Builder builds digests from other implementations' centroids, as
// SetCentroids does, for a caller that builds many at once (an importer
// decoding a stream of small digests): their structs, centroids and
// purity bits are carved from blocks it allocates a few hundred digests'
// worth at a time, instead of three allocations each. It never hands out
// the same memory twice, so a digest it built may be kept, modified and
// grown like any other (its slices are cut to their length, so growing
// one reallocates rather than spill into a neighbour's). A kept digest
// keeps its whole block alive. The zero value is ready to use; a Builder
// is not safe for concurrent use.
type Builder struct {
	digests []TDigest
	cents   []centroid
	pure    []uint64
}

// Builder block sizes: digests, and centroids and purity words unless one
// digest needs more.
const (
	builderDigests = 256
	builderCents   = 4096
	builderPure    = 256
)

// Digest returns a new digest of DefaultCompression holding cents, whose
// samples range from lo to hi: SetCentroids on a New digest, with its
// checks and errors.
func (b *Builder) Digest(cents []Centroid, lo, hi float64) (*TDigest, error) {
	if len(b.digests) == 0 {
		b.digests = make([]TDigest, builderDigests)
	}
	t := &b.digests[0]
	b.digests = b.digests[1:]
	t.setCompression(DefaultCompression)
	t.Reset()
	err := t.setCentroids(cents, lo, hi, func(n, words int) ([]centroid, []uint64) {
		if cap(b.cents)-len(b.cents) < n {
			b.cents = make([]centroid, 0, max(n, builderCents))
		}
		if cap(b.pure)-len(b.pure) < words {
			b.pure = make([]uint64, 0, max(words, builderPure))
		}
		c := b.cents[len(b.cents) : len(b.cents)+n : len(b.cents)+n]
		p := b.pure[len(b.pure) : len(b.pure)+words : len(b.pure)+words]
		b.cents, b.pure = b.cents[:len(b.cents)+n], b.pure[:len(b.pure)+words]
		return c, p
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}
