package forward

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"

	"github.com/axiomhq/hyperloglog"

	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// This file decodes the /import elements of veneur 1.1.0 (stripe/veneur at
// tag v1.1.0), whose locals forward another state encoding than ours:
//
//   - counter: the interval's count as 8 bytes of a little-endian int64;
//   - histogram and timer: the encoding/gob form of its merging t-digest,
//     four gob values in a row: the centroids ([]struct{Mean, Weight
//     float64; Samples []float64}), then the compression, min and max
//     (float64 each);
//   - set: the encoding/gob form of a HyperLogLog++ sketch of
//     github.com/clarkduvall/hyperloglog at precision 18: the registers
//     ([]uint8), m (uint32), p (uint8) and whether it is sparse (bool);
//     a sparse one goes on with its unmerged keys (map[uint32]bool), then
//     its compressed list: key count (uint32), the bytes of the
//     delta-varint stream ([]uint8) and the last key (uint32).
//
// Its elements carry "tagstring" (the sorted tags joined by commas), which
// ours never have: DecodeJSON takes an element with that key, empty or
// not, as one of 1.1.0 (see JSONMetric.TagString).

// Bounds of a 1.1.0 value, checked before anything is allocated from it.
const (
	// maxLegacyValue caps the bytes of a gob value: a 1.1.0 digest of
	// compression 100 holds about 160 centroids (a few KiB), and a dense
	// p=18 sketch is 2^18 register bytes and a little framing.
	maxLegacyValue = 1<<18 + 4096
	// maxLegacyCentroids caps the centroids of a digest.
	maxLegacyCentroids = 8192
	// legacyP is the precision of 1.1.0's sketches, legacyM its registers.
	legacyP = 18
	legacyM = 1 << legacyP
	// maxLegacyTmpSet caps the unmerged keys of a sparse sketch: the
	// library merges them into its list once there are more than m/100.
	maxLegacyTmpSet = legacyM/100 + 1
	// ourP is the precision of our sketches (hyperloglog.New14).
	ourP = 14
	// legacyPPrime is the precision of the sparse keys (the library's
	// pPrime).
	legacyPPrime = 25
)

// decodeLegacyJSON decodes m, a 1.1.0 element whose name and tags have
// been checked and put in f. Its errors wrap ErrTags, ErrType or ErrValue.
func decodeLegacyJSON(m *JSONMetric, f samplers.Forwarded) (samplers.Forwarded, error) {
	// 1.1.0 keys its series by the tag string, its sorted tags joined; one
	// that disagrees with the (sorted) tags is not an element 1.1.0 writes.
	if *m.TagString != strings.Join(f.Tags, ",") {
		return f, fmt.Errorf("%w: tagstring %q is not the tags joined", ErrTags, *m.TagString)
	}
	switch m.Type {
	case "counter":
		f.Type, f.Scope = samplers.CounterMetric, samplers.GlobalOnly
		if len(m.Value) != 8 {
			return f, fmt.Errorf("%w: a 1.1.0 counter is 8 bytes, got %d", ErrValue, len(m.Value))
		}
		f.Counter = float64(int64(binary.LittleEndian.Uint64(m.Value)))
	case "histogram", "timer":
		f.Type = samplers.HistogramMetric
		if m.Type == "timer" {
			f.Type = samplers.TimerMetric
		}
		d, err := decodeLegacyDigest(m.Value)
		if err != nil {
			return f, fmt.Errorf("%w: %v", ErrValue, err)
		}
		f.Digest = d
	case "set":
		f.Type = samplers.SetMetric
		s, err := decodeLegacySet(m.Value)
		if err != nil {
			return f, fmt.Errorf("%w: %v", ErrValue, err)
		}
		f.Set = s
	default:
		return f, ErrType
	}
	return f, nil
}

// legacyCentroid is a centroid of 1.1.0's digest as gob carries it; its
// Samples field (filled only in 1.1.0's debug mode) is skipped by gob, as
// a field the receiving struct does not have.
type legacyCentroid struct {
	Mean, Weight float64
}

// gobMessages walks the gob stream b message by message and calls each
// with the type id and body of every value message (type definitions,
// which have negative ids, are skipped). It returns an error for a
// message that does not fit in b. It only reads framing, so it allocates
// nothing: it lets the decoders check counts before gob allocates.
func gobMessages(b []byte, each func(n int, body []byte) error) error {
	for n := 0; len(b) > 0; {
		size, rest, ok := gobUint(b)
		if !ok || size == 0 || size > uint64(len(rest)) {
			return errors.New("gob message length out of bounds")
		}
		msg := rest[:size]
		b = rest[size:]
		u, body, ok := gobUint(msg)
		if !ok {
			return errors.New("gob type id cut short")
		}
		if u&1 == 1 { // a negative id: a type definition
			continue
		}
		if err := each(n, body); err != nil {
			return err
		}
		n++
	}
	return nil
}

// gobUint reads one unsigned integer as gob writes it: a byte below 0x80
// is the value; otherwise its negation is the count of big-endian bytes
// that follow.
func gobUint(b []byte) (v uint64, rest []byte, ok bool) {
	if len(b) == 0 {
		return 0, nil, false
	}
	if b[0] < 0x80 {
		return uint64(b[0]), b[1:], true
	}
	// The count is 256 minus the byte (computed in int: negating 0x80 as
	// an int8 overflows).
	n := 256 - int(b[0])
	if n > 8 || n+1 > len(b) {
		return 0, nil, false
	}
	for _, c := range b[1 : n+1] {
		v = v<<8 | uint64(c)
	}
	return v, b[n+1:], true
}

// gobSingletonCount is the element count at the start of body, the body of
// a value message holding a slice or a map (gob sends such a top-level
// value as a singleton: a zero field delta, then the count).
func gobSingletonCount(body []byte) (uint64, error) {
	delta, rest, ok := gobUint(body)
	if !ok || delta != 0 {
		return 0, errors.New("gob value is not a singleton")
	}
	n, _, ok := gobUint(rest)
	if !ok {
		return 0, errors.New("gob count cut short")
	}
	return n, nil
}

// gobReader decodes gob values one after another from a byte slice. gob
// trusts its input in places, so a panic while decoding is an error.
type gobReader struct{ dec *gob.Decoder }

func newGobReader(b []byte) gobReader { return gobReader{gob.NewDecoder(bytes.NewReader(b))} }

// next decodes the next values into each of vals in turn.
func (g gobReader) next(vals ...any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed gob: %v", r)
		}
	}()
	for _, v := range vals {
		if err := g.dec.Decode(v); err != nil {
			return err
		}
	}
	return nil
}

// decodeLegacyDigest decodes 1.1.0's gob t-digest into ours, keeping the
// centroids' weights and the exact min and max. The centroid count is
// checked on the wire before gob allocates the slice.
func decodeLegacyDigest(b []byte) (*tdigest.TDigest, error) {
	if len(b) > maxLegacyValue {
		return nil, fmt.Errorf("gob digest of %d bytes, more than %d", len(b), maxLegacyValue)
	}
	err := gobMessages(b, func(n int, body []byte) error {
		if n != 0 {
			return nil
		}
		c, err := gobSingletonCount(body)
		if err == nil && c > maxLegacyCentroids {
			err = fmt.Errorf("%d centroids, more than %d", c, maxLegacyCentroids)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var (
		cents               []legacyCentroid
		compression, lo, hi float64
	)
	if err := newGobReader(b).next(&cents, &compression, &lo, &hi); err != nil {
		return nil, err
	}
	if len(cents) > maxLegacyCentroids { // the wire count was checked; be sure
		return nil, fmt.Errorf("%d centroids", len(cents))
	}
	out := make([]tdigest.Centroid, len(cents))
	for i, c := range cents {
		// 1.1.0 weighs a sample 1/rate with its rate in (0, 1], so every
		// sample weighs at least 1 and a centroid lighter than 2 holds a
		// single sample: its mean is that sample, and it is marked Single
		// so that quantiles return it exactly, as our digest of the same
		// samples does.
		out[i] = tdigest.Centroid{Mean: c.Mean, Weight: c.Weight, Single: c.Weight < 2}
	}
	d := tdigest.New()
	if err := d.SetCentroids(out, lo, hi); err != nil {
		return nil, err
	}
	return d, nil
}

// decodeLegacySet decodes 1.1.0's gob HyperLogLog++ sketch (precision 18,
// sparse or dense) and folds it into a sketch of ours (precision 14).
func decodeLegacySet(b []byte) (*hyperloglog.Sketch, error) {
	if len(b) > maxLegacyValue {
		return nil, fmt.Errorf("gob sketch of %d bytes, more than %d", len(b), maxLegacyValue)
	}
	// gob sizes a map from the count on the wire, so the unmerged keys'
	// count (the fifth value) is checked first.
	err := gobMessages(b, func(n int, body []byte) error {
		if n != 4 {
			return nil
		}
		c, err := gobSingletonCount(body)
		if err == nil && c > maxLegacyTmpSet {
			err = fmt.Errorf("%d unmerged keys, more than %d", c, maxLegacyTmpSet)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var (
		reg    []uint8
		m      uint32
		p      uint8
		sparse bool
	)
	g := newGobReader(b)
	if err := g.next(&reg, &m, &p, &sparse); err != nil {
		return nil, err
	}
	if p != legacyP || m != legacyM {
		return nil, fmt.Errorf("sketch of precision %d and %d registers, want %d and %d", p, m, legacyP, legacyM)
	}
	var regs [1 << ourP]uint8
	if !sparse {
		if len(reg) != legacyM {
			return nil, fmt.Errorf("dense sketch of %d registers, want %d", len(reg), legacyM)
		}
		for i, r := range reg {
			if r > 64-legacyP+1 {
				return nil, fmt.Errorf("register %d is %d", i, r)
			}
			foldRegister(&regs, uint32(i), r)
		}
		return ourSketch(&regs)
	}
	var (
		tmp         map[uint32]bool
		count, last uint32
		list        []uint8
	)
	if err := g.next(&tmp, &count, &list, &last); err != nil {
		return nil, err
	}
	for k := range tmp {
		if err := foldSparseKey(&regs, k); err != nil {
			return nil, err
		}
	}
	// The list is the keys in increasing order as varint deltas (seven
	// bits a byte, least significant first, the high bit set on all but
	// a key's last byte).
	var key uint32
	n := uint32(0)
	for i := 0; i < len(list); {
		var delta uint64
		j := 0
		for ; ; j++ {
			if i+j >= len(list) || j >= 5 {
				return nil, errors.New("sparse list: varint cut short or too long")
			}
			c := list[i+j]
			delta |= uint64(c&0x7f) << (7 * j)
			if c&0x80 == 0 {
				break
			}
		}
		i += j + 1
		if delta > math.MaxUint32-uint64(key) {
			return nil, errors.New("sparse list: key overflows")
		}
		key += uint32(delta)
		n++
		if err := foldSparseKey(&regs, key); err != nil {
			return nil, err
		}
	}
	if n != count || key != last {
		return nil, fmt.Errorf("sparse list of %d keys ending at %d, header says %d and %d", n, key, count, last)
	}
	return ourSketch(&regs)
}

// foldSparseKey folds one sparse key of the library into regs. A key whose
// low bit is set is the 25-bit index, then six bits of the count of zeros
// after it, plus one; the index's seven bits past the 18-bit index are
// zero, so the rank at precision 18 is that count plus 7. Otherwise the key
// is the 25-bit index shifted by one, and the rank at precision 18 is the
// position of the first 1 among the index's seven low bits.
func foldSparseKey(regs *[1 << ourP]uint8, k uint32) error {
	var idx uint32
	var rank uint8
	if k&1 == 1 {
		idx = k >> (32 - legacyP)
		rank = uint8(k>>1&0x3f) + legacyPPrime - legacyP
		if k>>7&(1<<(legacyPPrime-legacyP)-1) != 0 || rank > 64-legacyP+1 {
			return fmt.Errorf("sparse key %#x out of range", k)
		}
	} else {
		low := k >> 1 & (1<<(legacyPPrime-legacyP) - 1)
		if k>>(legacyPPrime+1) != 0 || low == 0 {
			return fmt.Errorf("sparse key %#x out of range", k)
		}
		idx = k >> (legacyPPrime - legacyP + 1)
		rank = uint8(bits.LeadingZeros32(low<<(32-(legacyPPrime-legacyP)))) + 1
	}
	foldRegister(regs, idx, rank)
	return nil
}

// foldRegister folds register idx of rank r at precision 18 into regs at
// precision 14. The new index is the top 14 bits of idx. The hash bits that
// follow it are the 4 dropped index bits, then those r counted: when the
// dropped bits are not all zero the new rank is the position of their first
// 1, else r plus 4. Each register keeps the largest rank folded into it.
func foldRegister(regs *[1 << ourP]uint8, idx uint32, r uint8) {
	if r == 0 {
		return // an empty register adds nothing
	}
	const d = legacyP - ourP
	dropped := idx & (1<<d - 1)
	nr := r + d
	if dropped != 0 {
		nr = uint8(bits.LeadingZeros32(dropped<<(32-d))) + 1
	}
	i := idx >> d
	regs[i] = max(regs[i], nr)
}

// ourSketch is our precision-14 sketch with the registers regs. The
// library fills registers only through hashing, so this builds its binary
// encoding (version 2, dense: the header, the register count, the
// registers) and decodes that.
func ourSketch(regs *[1 << ourP]uint8) (*hyperloglog.Sketch, error) {
	enc := make([]byte, 0, 8+len(regs))
	enc = append(enc, 2, ourP, 0, 0)
	enc = binary.BigEndian.AppendUint32(enc, uint32(len(regs)))
	enc = append(enc, regs[:]...)
	s := hyperloglog.New14()
	if err := s.UnmarshalBinary(enc); err != nil {
		return nil, err
	}
	return s, nil
}
