package forward

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"

	"github.com/axiomhq/hyperloglog"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/forward/metricpb"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// This file decodes a metricpb.Metric from its wire form without the
// generated code, for the gRPC import: the generated code builds a message
// per centroid and a string per tag before DecodeMetricpb converts them,
// which took most of the time of importing small digests. The fast path
// below reads the fields it knows straight into a samplers.Forwarded.
//
// It takes only what it can decode exactly as proto.Unmarshal then
// DecodeMetricpb would: the fields of metric.proto and tdigest.proto with
// their own wire types, each message field at most once (the generated
// code merges repeated ones), valid UTF-8 strings, and a series that
// DecodeMetricpb accepts. Anything else (unknown fields, groups, a field
// with another wire type, a series to refuse) goes through the generated
// code and DecodeMetricpb, which give the answer and the error. Both paths
// thus answer the same for every input (FuzzDecodeMetricpbWire checks it),
// and the canonical encodings that v14 and our forward client send take
// the fast one.

// ErrProtobuf: the bytes of a series are not a protobuf Metric.
var ErrProtobuf = fmt.Errorf("%w: malformed protobuf", ErrValue)

// Field numbers of metric.proto and tdigest.proto.
const (
	fieldMetricName      = 1
	fieldMetricTags      = 2
	fieldMetricType      = 3
	fieldMetricCounter   = 5
	fieldMetricGauge     = 6
	fieldMetricHistogram = 7
	fieldMetricSet       = 8
	fieldMetricScope     = 9

	fieldValue = 1 // CounterValue.value, GaugeValue.value, HistogramValue.t_digest, SetValue.hyper_log_log

	fieldDigestCentroids   = 1
	fieldDigestCompression = 2
	fieldDigestMin         = 3
	fieldDigestMax         = 4
	fieldDigestRecipSum    = 5

	fieldCentroidMean    = 1
	fieldCentroidWeight  = 2
	fieldCentroidSamples = 3
)

// DecodeMetricpbWire decodes b, the wire form of one metricpb.Metric, into
// the series DecodeMetricpb gives for it: the same series, or an error of
// the same kind. Bytes that are not a protobuf Metric are refused with
// ErrProtobuf. f keeps no reference to b.
func DecodeMetricpbWire(b []byte) (samplers.Forwarded, error) {
	var d wireDecoder
	return d.decode(b)
}

// wireDecoder decodes the series of one import. Its scratch space is
// reused from one series to the next; what it hands out (the tags slices,
// carved from tagChunk, and the digests of its Builder) is never reused,
// since a Merger may keep it.
type wireDecoder struct {
	strs     []byte             // the name, then the tags, of a series
	tagEnds  []int              // where each tag ends in strs
	cents    []tdigest.Centroid // the centroids of a digest
	tagChunk []string           // tags slices are carved from its spare capacity
	digests  tdigest.Builder
	// tags, joined and check are fastCompact's scratch space: the tags
	// of a key, the same joined, and the digest that checks centroids.
	tags   [][]byte
	joined []byte
	check  tdigest.TDigest
}

// decode is DecodeMetricpbWire with d's scratch space.
func (d *wireDecoder) decode(b []byte) (samplers.Forwarded, error) {
	if f, ok := d.fast(b); ok {
		return f, nil
	}
	var m metricpb.Metric
	if err := proto.Unmarshal(b, &m); err != nil {
		return samplers.Forwarded{}, fmt.Errorf("%w: %v", ErrProtobuf, err)
	}
	return DecodeMetricpb(&m)
}

// wireSeries is a Metric's fields as parse reads them; its tags are in
// the decoder's strs and tagEnds.
type wireSeries struct {
	name       []byte
	typ, scope int32
	value      []byte // the member of the oneof value
	valueField protowire.Number
}

// parse reads the fields of b, the wire form of a Metric, when it is one
// that the fast path reads exactly (see the top of this file) and its
// name, scope and value field are those DecodeMetricpb accepts for its
// type; ok is false otherwise. The value itself is left to the caller.
func (d *wireDecoder) parse(b []byte) (w wireSeries, ok bool) {
	d.strs, d.tagEnds = d.strs[:0], d.tagEnds[:0]
	for len(b) > 0 {
		num, wt, n := consumeTag(b)
		if n < 0 {
			return w, false
		}
		b = b[n:]
		switch {
		case num == fieldMetricName && wt == protowire.BytesType:
			v, n := consumeBytes(b)
			if n < 0 {
				return w, false
			}
			w.name, b = v, b[n:]
		case num == fieldMetricTags && wt == protowire.BytesType:
			v, n := consumeBytes(b)
			if n < 0 || len(d.tagEnds) == maxTags {
				return w, false
			}
			if len(v) == 0 || len(v) > maxName || !validTag(v) {
				return w, false
			}
			d.strs = append(d.strs, v...)
			d.tagEnds = append(d.tagEnds, len(d.strs))
			b = b[n:]
		case (num == fieldMetricType || num == fieldMetricScope) && wt == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return w, false
			}
			// An enum is an int32: the generated code keeps the low 32
			// bits of the varint.
			if num == fieldMetricType {
				w.typ = int32(v)
			} else {
				w.scope = int32(v)
			}
			b = b[n:]
		case num >= fieldMetricCounter && num <= fieldMetricSet && wt == protowire.BytesType:
			v, n := consumeBytes(b)
			if n < 0 || w.valueField != 0 {
				// A second member: the generated code merges or
				// replaces it.
				return w, false
			}
			w.value, w.valueField, b = v, num, b[n:]
		default:
			return w, false
		}
	}
	if len(w.name) == 0 || len(w.name) > maxName || !validUTF8(w.name) {
		return w, false
	}
	if s := metricpb.Scope(w.scope); s != metricpb.Scope_Mixed && s != metricpb.Scope_Global {
		return w, false
	}
	switch metricpb.Type(w.typ) {
	case metricpb.Type_Counter:
		return w, w.valueField == fieldMetricCounter
	case metricpb.Type_Histogram, metricpb.Type_Timer:
		return w, w.valueField == fieldMetricHistogram
	case metricpb.Type_Set:
		return w, w.valueField == fieldMetricSet
	}
	return w, false // gauges, unknown types: refused
}

// validTag reports whether v is valid UTF-8 without a comma.
func validTag(v []byte) bool {
	return validUTF8(v) && bytes.IndexByte(v, ',') < 0
}

// validUTF8 is utf8.Valid, looking at ASCII (the usual case) eight bytes
// at a time.
func validUTF8(v []byte) bool {
	for ; len(v) >= 8; v = v[8:] {
		if binary.LittleEndian.Uint64(v)&0x8080808080808080 != 0 {
			return utf8.Valid(v)
		}
	}
	for i, ch := range v {
		if ch >= utf8.RuneSelf {
			return utf8.Valid(v[i:])
		}
	}
	return true
}

// fast decodes b when it is a Metric that DecodeMetricpb accepts and that
// it can read exactly (see the top of this file); ok is false otherwise.
func (d *wireDecoder) fast(b []byte) (f samplers.Forwarded, ok bool) {
	w, ok := d.parse(b)
	if !ok {
		return f, false
	}
	switch metricpb.Type(w.typ) {
	case metricpb.Type_Counter:
		v, ok := counterFromWire(w.value)
		if !ok {
			return f, false
		}
		f.Type, f.Scope, f.Counter = samplers.CounterMetric, samplers.GlobalOnly, float64(v)
	case metricpb.Type_Histogram, metricpb.Type_Timer:
		dg, ok := d.digestFromWire(w.value)
		if !ok {
			return f, false
		}
		f.Type, f.Scope, f.Digest = samplers.HistogramMetric, samplers.MixedScope, dg
		if metricpb.Type(w.typ) == metricpb.Type_Timer {
			f.Type = samplers.TimerMetric
		}
	default: // parse passed sets only besides
		sk, ok := sketchFromWire(w.value)
		if !ok {
			return f, false
		}
		f.Type, f.Scope, f.Set = samplers.SetMetric, samplers.MixedScope, sk
	}
	d.setStrings(&f, w.name)
	return f, true
}

// fastCompact is fast into c, for a Compact import: it appends the series
// of b to c and returns true, or returns false having appended nothing
// (decode then gives the series, or the error, as for any other import).
// The series it appends is the one fast would return, in c's form.
func (d *wireDecoder) fastCompact(b []byte, c *Compact) bool {
	w, ok := d.parse(b)
	if !ok {
		return false
	}
	var (
		typ      samplers.MetricType
		scope    = samplers.MixedScope
		counter  int64
		cents    []tdigest.Centroid
		lo, hi   float64
		sk       *hyperloglog.Sketch
		isDigest bool
	)
	switch metricpb.Type(w.typ) {
	case metricpb.Type_Counter:
		if counter, ok = counterFromWire(w.value); !ok {
			return false
		}
		typ, scope = samplers.CounterMetric, samplers.GlobalOnly
	case metricpb.Type_Histogram, metricpb.Type_Timer:
		if cents, lo, hi, ok = d.centroidsFromWire(w.value); !ok {
			return false
		}
		// What SetCentroids checks, so that the digest a worker builds
		// from these centroids builds without error, and a series the
		// fast path refuses goes to the generated code as decode's
		// does.
		if !centroidsTake(cents) && d.check.SetCentroids(cents, lo, hi) != nil {
			return false
		}
		typ, isDigest = samplers.HistogramMetric, true
		if metricpb.Type(w.typ) == metricpb.Type_Timer {
			typ = samplers.TimerMetric
		}
	default: // parse passed sets only besides
		if sk, ok = sketchFromWire(w.value); !ok {
			return false
		}
		typ = samplers.SetMetric
	}
	start := c.startKey()
	c.keys = d.appendKey(c.keys, typ, scope, w.name)
	switch {
	case typ == samplers.CounterMetric:
		c.addCounter(start, float64(counter))
	case isDigest:
		c.addDigest(start, cents, lo, hi)
	default:
		c.addSet(start, sk)
	}
	return true
}

// appendKey appends the key of a series of name and the tags parse left
// in d.strs, as samplers.AppendForwardedKey lays it out (tags sorted).
func (d *wireDecoder) appendKey(dst []byte, typ samplers.MetricType, scope samplers.MetricScope, name []byte) []byte {
	d.tags = d.tags[:0]
	start := 0
	sorted := true
	for _, end := range d.tagEnds {
		tag := d.strs[start:end]
		if n := len(d.tags); n > 0 && bytes.Compare(d.tags[n-1], tag) > 0 {
			sorted = false
		}
		d.tags = append(d.tags, tag)
		start = end
	}
	if !sorted {
		slices.SortFunc(d.tags, bytes.Compare)
	}
	d.joined = d.joined[:0]
	for i, t := range d.tags {
		if i > 0 {
			d.joined = append(d.joined, ',')
		}
		d.joined = append(d.joined, t...)
	}
	return samplers.AppendKeyJoined(dst, typ, scope, name, d.joined)
}

// setStrings sets f's name and its tags, sorted, from name and the tags in
// d.strs: one string for them all, and a slice carved from d.tagChunk.
func (d *wireDecoder) setStrings(f *samplers.Forwarded, name []byte) {
	tagBytes := len(d.strs)
	d.strs = append(d.strs, name...)
	s := string(d.strs)
	f.Name = s[tagBytes:]
	k := len(d.tagEnds)
	if k == 0 {
		return
	}
	if cap(d.tagChunk)-len(d.tagChunk) < k {
		d.tagChunk = make([]string, 0, max(k, 256))
	}
	at := len(d.tagChunk)
	d.tagChunk = d.tagChunk[:at+k]
	tags := d.tagChunk[at : at+k : at+k]
	start := 0
	for i, end := range d.tagEnds {
		tags[i] = s[start:end]
		start = end
	}
	if !slices.IsSorted(tags) {
		slices.Sort(tags)
	}
	f.Tags = tags
}

// counterFromWire reads a CounterValue.
func counterFromWire(b []byte) (int64, bool) {
	var v uint64
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 || num != fieldValue || wt != protowire.VarintType {
			return 0, false
		}
		b = b[n:]
		if v, n = protowire.ConsumeVarint(b); n < 0 {
			return 0, false
		}
		b = b[n:]
	}
	return int64(v), true
}

// sketchFromWire reads a SetValue and decodes its sketch (sketchFromPB).
func sketchFromWire(b []byte) (*hyperloglog.Sketch, bool) {
	var hll []byte
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 || num != fieldValue || wt != protowire.BytesType {
			return nil, false
		}
		b = b[n:]
		if hll, n = protowire.ConsumeBytes(b); n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	sk, err := sketchFromPB(hll)
	return sk, err == nil
}

// digestFromWire reads a HistogramValue and converts its digest as
// digestFromPB does.
func (d *wireDecoder) digestFromWire(b []byte) (*tdigest.TDigest, bool) {
	cents, lo, hi, ok := d.centroidsFromWire(b)
	if !ok {
		return nil, false
	}
	// With no centroids, an empty digest (digestFromPB's tdigest.New()).
	out, err := d.digests.Digest(cents, lo, hi)
	return out, err == nil
}

// centroidsFromWire reads a HistogramValue: the centroids of its digest
// (in d's scratch space, valid until the next call) and the extremes of
// its samples, as digestFromPB reads them.
func (d *wireDecoder) centroidsFromWire(b []byte) (cents []tdigest.Centroid, lo, hi float64, ok bool) {
	var md []byte
	seen := false
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 || num != fieldValue || wt != protowire.BytesType || seen {
			return nil, 0, 0, false
		}
		b = b[n:]
		if md, n = protowire.ConsumeBytes(b); n < 0 {
			return nil, 0, 0, false
		}
		b, seen = b[n:], true
	}
	if !seen {
		return nil, 0, 0, false // a histogram without a t-digest
	}
	cents = d.cents[:0]
	defer func() { d.cents = cents[:0] }()
	for len(md) > 0 {
		// The canonical encoding of a centroid without samples: field
		// 1 of 18 bytes, its mean and weight (fixed64).
		if len(md) >= 20 && md[0] == centroidTag && md[1] == 18 && md[2] == meanTag && md[11] == weightTag {
			c := tdigest.Centroid{
				Mean:   math.Float64frombits(binary.LittleEndian.Uint64(md[3:])),
				Weight: math.Float64frombits(binary.LittleEndian.Uint64(md[12:])),
			}
			if len(cents) == MaxMetricpbCentroids || !isFinite(c.Mean) || !isFinite(c.Weight) || !(c.Weight > 0) {
				return nil, 0, 0, false
			}
			c.Single = c.Weight <= 1
			cents, md = append(cents, c), md[20:]
			continue
		}
		num, wt, n := consumeTag(md)
		if n < 0 {
			return nil, 0, 0, false
		}
		md = md[n:]
		switch {
		case num == fieldDigestCentroids && wt == protowire.BytesType:
			v, n := consumeBytes(md)
			if n < 0 || len(cents) == MaxMetricpbCentroids {
				return nil, 0, 0, false
			}
			c, ok := centroidFromWire(v)
			if !ok {
				return nil, 0, 0, false
			}
			cents, md = append(cents, c), md[n:]
		case num >= fieldDigestCompression && num <= fieldDigestRecipSum && wt == protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(md)
			if n < 0 {
				return nil, 0, 0, false
			}
			switch num {
			case fieldDigestMin:
				lo = math.Float64frombits(v)
			case fieldDigestMax:
				hi = math.Float64frombits(v)
			}
			md = md[n:]
		default:
			return nil, 0, 0, false
		}
	}
	if len(cents) > 0 && (!isFinite(lo) || !isFinite(hi)) {
		return nil, 0, 0, false
	}
	return cents, lo, hi, true
}

// The one-byte tags of a centroid in a MergingDigestData and of its mean
// and weight.
const (
	centroidTag = fieldDigestCentroids<<3 | byte(protowire.BytesType)
	meanTag     = fieldCentroidMean<<3 | byte(protowire.Fixed64Type)
	weightTag   = fieldCentroidWeight<<3 | byte(protowire.Fixed64Type)
)

// consumeTag is protowire.ConsumeTag, reading a tag of one byte (fields 1
// to 15) itself.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	if len(b) > 0 && b[0] < 0x80 && b[0]>>3 != 0 {
		return protowire.Number(b[0] >> 3), protowire.Type(b[0] & 7), 1
	}
	return protowire.ConsumeTag(b)
}

// consumeBytes is protowire.ConsumeBytes, reading a length of one or two
// bytes (under 16,384) itself.
func consumeBytes(b []byte) ([]byte, int) {
	var n, k int
	switch {
	case len(b) > 0 && b[0] < 0x80:
		n, k = int(b[0]), 1
	case len(b) > 1 && b[1] < 0x80 && b[1] != 0:
		// A second byte of 0 would make a non-minimal varint, which
		// protowire reads too; it is left to it.
		n, k = int(b[0]&0x7f)|int(b[1])<<7, 2
	default:
		return protowire.ConsumeBytes(b)
	}
	if n > len(b)-k {
		return nil, -1
	}
	return b[k : k+n], k + n
}

// centroidsTake reports whether SetCentroids surely takes cents, whose
// means and weights centroidFromWire checked (finite, weights positive),
// and whose extremes centroidsFromWire did: when the total weight is at
// most 2^200 and the magnitudes of mean×weight add up to a finite number
// (no partial sum of the digest's, in any order, then overflows). It is
// false when it cannot tell, and SetCentroids decides.
func centroidsTake(cents []tdigest.Centroid) bool {
	total, abs := 0.0, 0.0
	for _, c := range cents {
		total += c.Weight
		abs += math.Abs(c.Mean * c.Weight)
	}
	return total <= 0x1p200 && isFinite(abs)
}

// centroidFromWire reads a Centroid: finite, of positive weight, and
// single-valued as digestFromPB judges it (weight at most 1, or samples
// that all equal its mean).
func centroidFromWire(b []byte) (tdigest.Centroid, bool) {
	// The canonical encoding of a centroid without samples: mean (field
	// 1) and weight (field 2), fixed64 each.
	if len(b) == 18 && b[0] == meanTag && b[9] == weightTag {
		c := tdigest.Centroid{
			Mean:   math.Float64frombits(binary.LittleEndian.Uint64(b[1:])),
			Weight: math.Float64frombits(binary.LittleEndian.Uint64(b[10:])),
		}
		if !isFinite(c.Mean) || !isFinite(c.Weight) || !(c.Weight > 0) {
			return c, false
		}
		c.Single = c.Weight <= 1
		return c, true
	}
	var (
		c       tdigest.Centroid
		samples int
		first   float64 // the first sample
		same    = true  // every sample equals first (and is not NaN)
	)
	sample := func(v float64) {
		if samples == 0 {
			first = v
		}
		same = same && v == first
		samples++
	}
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return c, false
		}
		b = b[n:]
		switch {
		case (num == fieldCentroidMean || num == fieldCentroidWeight || num == fieldCentroidSamples) && wt == protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return c, false
			}
			switch num {
			case fieldCentroidMean:
				c.Mean = math.Float64frombits(v)
			case fieldCentroidWeight:
				c.Weight = math.Float64frombits(v)
			default:
				sample(math.Float64frombits(v))
			}
			b = b[n:]
		case num == fieldCentroidSamples && wt == protowire.BytesType:
			// Packed samples.
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || len(v)%8 != 0 {
				return c, false
			}
			for ; len(v) > 0; v = v[8:] {
				sample(math.Float64frombits(binary.LittleEndian.Uint64(v)))
			}
			b = b[n:]
		default:
			return c, false
		}
	}
	if !isFinite(c.Mean) || !isFinite(c.Weight) || !(c.Weight > 0) {
		return c, false
	}
	c.Single = c.Weight <= 1 || (samples > 0 && same && first == c.Mean)
	return c, true
}
