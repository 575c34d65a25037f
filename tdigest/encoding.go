package tdigest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Encoding format, version 1 (all integers little-endian):
//
//	byte      version (1)
//	byte      flags: 1 compression present, 2 min present, 4 max present,
//	          8 sum present, 16 count present; other bits must be zero
//	[8 bytes] compression, float64 (absent: DefaultCompression)
//	uvarint   number of centroids N
//	[8 bytes] min, float64 (absent: mean of the first centroid)
//	[8 bytes] max, float64 (absent: mean of the last centroid)
//	[8 bytes] sum, float64 (absent: Σ mean·weight over the centroids,
//	          summed in order)
//	[8 bytes] count, float64 (absent: Σ weight over the centroids, summed
//	          in order; present only when rounding makes them differ)
//	N times, in nondecreasing order of mean:
//	  8 bytes mean, float64
//	  uvarint tag: bit 1 is set when the centroid holds a single distinct
//	          value; when bit 0 is clear the weight is the integer tag>>2
//	          (at least 1); when bit 0 is set, tag is 1 or 3 and the weight
//	          follows as a float64.
//
// The optional fields are left out when they can be recomputed exactly, so
// a digest of a few samples costs little more than 9 bytes a sample.

const (
	encodingVersion = 1

	flagCompression = 1
	flagMin         = 2
	flagMax         = 4
	flagSum         = 8
	flagCount       = 16
	flagsKnown      = flagCompression | flagMin | flagMax | flagSum | flagCount

	minCentroidBytes = 9       // 8-byte mean and a 1-byte tag
	maxExactWeight   = 1 << 53 // integral weights up to here use a varint
)

// ErrCorrupt wraps every decoding error.
var ErrCorrupt = errors.New("tdigest: corrupt encoding")

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// MarshalBinary encodes the digest (see the format above). It first folds
// buffered samples into the centroids.
func (t *TDigest) MarshalBinary() ([]byte, error) {
	t.process()
	return t.AppendBinary(make([]byte, 0, t.encodedSizeHint()))
}

func (t *TDigest) encodedSizeHint() int {
	return 2 + 8 + binary.MaxVarintLen64 + 24 + len(t.cents)*(8+4)
}

// AppendBinary appends the encoding of the digest to b.
func (t *TDigest) AppendBinary(b []byte) ([]byte, error) {
	t.process()
	c := t.cents
	flags := byte(0)
	if t.compression != DefaultCompression {
		flags |= flagCompression
	}
	if len(c) > 0 {
		if math.Float64bits(t.min) != math.Float64bits(c[0].mean) {
			flags |= flagMin
		}
		if math.Float64bits(t.max) != math.Float64bits(c[len(c)-1].mean) {
			flags |= flagMax
		}
		if math.Float64bits(t.sum) != math.Float64bits(centroidSum(c)) {
			flags |= flagSum
		}
		if t.merged != centroidWeight(c) {
			flags |= flagCount
		}
	}
	b = append(b, encodingVersion, flags)
	if flags&flagCompression != 0 {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(t.compression))
	}
	b = binary.AppendUvarint(b, uint64(len(c)))
	if flags&flagMin != 0 {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(t.min))
	}
	if flags&flagMax != 0 {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(t.max))
	}
	if flags&flagSum != 0 {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(t.sum))
	}
	if flags&flagCount != 0 {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(t.merged))
	}
	for i, x := range c {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x.mean))
		p := uint64(0)
		if t.isPure(i) {
			p = 2
		}
		if x.weight >= 1 && x.weight <= maxExactWeight && x.weight == math.Trunc(x.weight) {
			b = binary.AppendUvarint(b, uint64(x.weight)<<2|p)
		} else {
			b = binary.AppendUvarint(b, p|1)
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x.weight))
		}
	}
	return b, nil
}

func centroidSum(c []centroid) float64 {
	s := 0.0
	for _, x := range c {
		s += x.mean * x.weight
	}
	return s
}

func centroidWeight(c []centroid) float64 {
	s := 0.0
	for _, x := range c {
		s += x.weight
	}
	return s
}

func finite(f float64) bool { return f-f == 0 }

// UnmarshalBinary replaces the digest's contents with the decoded data. On
// error the digest is left empty (with its compression unchanged) and the
// error wraps ErrCorrupt. It never allocates more than a small multiple of
// len(data).
func (t *TDigest) UnmarshalBinary(data []byte) error {
	if err := t.decode(data); err != nil {
		t.Reset()
		return err
	}
	return nil
}

func (t *TDigest) decode(data []byte) error {
	d := decoder{b: data}
	if len(data) < 2 {
		return corrupt("%d bytes is too short", len(data))
	}
	if data[0] != encodingVersion {
		return corrupt("unknown version %d", data[0])
	}
	flags := data[1]
	if flags&^flagsKnown != 0 {
		return corrupt("unknown flags %#x", flags)
	}
	d.b = data[2:]
	comp := float64(DefaultCompression)
	if flags&flagCompression != 0 {
		comp = d.float()
		if d.err == nil && !(comp >= MinCompression && comp <= MaxCompression) {
			return corrupt("compression %v out of range", comp)
		}
	}
	n := d.uvarint()
	if d.err != nil {
		return d.err
	}
	if n > uint64(len(d.b)/minCentroidBytes) {
		return corrupt("%d centroids cannot fit in %d bytes", n, len(d.b))
	}
	if n == 0 && flags&(flagMin|flagMax|flagSum|flagCount) != 0 {
		return corrupt("empty digest with min, max, sum or count")
	}
	var mn, mx, sum, count float64
	if flags&flagMin != 0 {
		mn = d.float()
	}
	if flags&flagMax != 0 {
		mx = d.float()
	}
	if flags&flagSum != 0 {
		sum = d.float()
	}
	if flags&flagCount != 0 {
		count = d.float()
	}
	if d.err != nil {
		return d.err
	}
	if !finite(mn) || !finite(mx) {
		return corrupt("min or max not finite")
	}
	if sum != sum {
		return corrupt("sum is NaN")
	}

	t.setCompression(comp)
	t.Reset()
	cnt := int(n)
	if cap(t.cents) < cnt {
		t.cents = make([]centroid, 0, cnt)
	}
	words := (cnt + 63) >> 6
	if cap(t.pure) < words {
		t.pure = make([]uint64, words)
	}
	t.pure = t.pure[:words]
	clear(t.pure)
	cents := t.cents[:cnt]
	total := 0.0
	prev := math.Inf(-1)
	b := d.b
	for i := range cents {
		if len(b) < 9 {
			return corrupt("truncated")
		}
		m := math.Float64frombits(binary.LittleEndian.Uint64(b))
		var tag uint64
		if b[8] < 0x80 { // one-byte tag, the common case
			tag = uint64(b[8])
			b = b[9:]
		} else {
			v, k := binary.Uvarint(b[8:])
			if k <= 0 {
				return corrupt("centroid %d: bad varint", i)
			}
			tag = v
			b = b[8+k:]
		}
		var w float64
		if tag&1 == 0 {
			w = float64(tag >> 2)
			if tag>>2 == 0 || tag>>2 > maxExactWeight {
				return corrupt("centroid %d: bad weight tag %d", i, tag)
			}
		} else {
			if tag > 3 {
				return corrupt("centroid %d: bad weight tag %d", i, tag)
			}
			if len(b) < 8 {
				return corrupt("truncated")
			}
			w = math.Float64frombits(binary.LittleEndian.Uint64(b))
			b = b[8:]
		}
		if !finite(m) {
			return corrupt("centroid %d: mean not finite", i)
		}
		if m < prev {
			return corrupt("centroid %d: out of order", i)
		}
		if !(w > 0) || !finite(w) {
			return corrupt("centroid %d: bad weight %v", i, w)
		}
		prev = m
		total += w
		cents[i] = centroid{m, w}
		if tag&2 != 0 {
			t.pure[i>>6] |= 1 << (uint(i) & 63)
		}
	}
	d.b = b
	if len(d.b) != 0 {
		return corrupt("%d trailing bytes", len(d.b))
	}
	if !(total <= maxTotalWeight) {
		return corrupt("total weight %v too large", total)
	}
	if cnt > 0 {
		if flags&flagMin == 0 {
			mn = cents[0].mean
		}
		if flags&flagMax == 0 {
			mx = cents[cnt-1].mean
		}
		if flags&flagSum == 0 {
			sum = centroidSum(cents)
		}
		if flags&flagCount == 0 {
			count = total
		} else if !(math.Abs(count-total) <= 1e-9*total) {
			return corrupt("count %v inconsistent with centroid weights %v", count, total)
		}
		if mn > cents[0].mean || mx < cents[cnt-1].mean {
			return corrupt("min or max inconsistent with centroids")
		}
		t.min, t.max, t.sum = mn, mx, sum
	}
	t.cents = cents
	t.merged = count
	return nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) float() float64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.err = corrupt("truncated")
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = corrupt("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}
