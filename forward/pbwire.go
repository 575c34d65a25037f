package forward

import (
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

// fast decodes b when it is a Metric that DecodeMetricpb accepts and that
// it can read exactly (see the top of this file); ok is false otherwise.
func (d *wireDecoder) fast(b []byte) (f samplers.Forwarded, ok bool) {
	var (
		name       []byte
		typ, scope int32
		value      []byte // the member of the oneof value
		valueField protowire.Number
	)
	d.strs, d.tagEnds = d.strs[:0], d.tagEnds[:0]
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return f, false
		}
		b = b[n:]
		switch {
		case num == fieldMetricName && wt == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return f, false
			}
			name, b = v, b[n:]
		case num == fieldMetricTags && wt == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || len(d.tagEnds) == maxTags {
				return f, false
			}
			if len(v) == 0 || len(v) > maxName || !utf8.Valid(v) || slices.Contains(v, ',') {
				return f, false
			}
			d.strs = append(d.strs, v...)
			d.tagEnds = append(d.tagEnds, len(d.strs))
			b = b[n:]
		case (num == fieldMetricType || num == fieldMetricScope) && wt == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return f, false
			}
			// An enum is an int32: the generated code keeps the low 32
			// bits of the varint.
			if num == fieldMetricType {
				typ = int32(v)
			} else {
				scope = int32(v)
			}
			b = b[n:]
		case num >= fieldMetricCounter && num <= fieldMetricSet && wt == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || valueField != 0 {
				// A second member: the generated code merges or
				// replaces it.
				return f, false
			}
			value, valueField, b = v, num, b[n:]
		default:
			return f, false
		}
	}
	if len(name) == 0 || len(name) > maxName || !utf8.Valid(name) {
		return f, false
	}
	if s := metricpb.Scope(scope); s != metricpb.Scope_Mixed && s != metricpb.Scope_Global {
		return f, false
	}
	switch metricpb.Type(typ) {
	case metricpb.Type_Counter:
		if valueField != fieldMetricCounter {
			return f, false
		}
		v, ok := counterFromWire(value)
		if !ok {
			return f, false
		}
		f.Type, f.Scope, f.Counter = samplers.CounterMetric, samplers.GlobalOnly, float64(v)
	case metricpb.Type_Histogram, metricpb.Type_Timer:
		if valueField != fieldMetricHistogram {
			return f, false
		}
		dg, ok := d.digestFromWire(value)
		if !ok {
			return f, false
		}
		f.Type, f.Scope, f.Digest = samplers.HistogramMetric, samplers.MixedScope, dg
		if metricpb.Type(typ) == metricpb.Type_Timer {
			f.Type = samplers.TimerMetric
		}
	case metricpb.Type_Set:
		if valueField != fieldMetricSet {
			return f, false
		}
		sk, ok := sketchFromWire(value)
		if !ok {
			return f, false
		}
		f.Type, f.Scope, f.Set = samplers.SetMetric, samplers.MixedScope, sk
	default: // gauges, unknown types: refused
		return f, false
	}
	d.setStrings(&f, name)
	return f, true
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
	var md []byte
	seen := false
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 || num != fieldValue || wt != protowire.BytesType || seen {
			return nil, false
		}
		b = b[n:]
		if md, n = protowire.ConsumeBytes(b); n < 0 {
			return nil, false
		}
		b, seen = b[n:], true
	}
	if !seen {
		return nil, false // a histogram without a t-digest
	}
	var lo, hi float64
	cents := d.cents[:0]
	defer func() { d.cents = cents[:0] }()
	for len(md) > 0 {
		num, wt, n := protowire.ConsumeTag(md)
		if n < 0 {
			return nil, false
		}
		md = md[n:]
		switch {
		case num == fieldDigestCentroids && wt == protowire.BytesType:
			v, n := protowire.ConsumeBytes(md)
			if n < 0 || len(cents) == MaxMetricpbCentroids {
				return nil, false
			}
			c, ok := centroidFromWire(v)
			if !ok {
				return nil, false
			}
			cents, md = append(cents, c), md[n:]
		case num >= fieldDigestCompression && num <= fieldDigestRecipSum && wt == protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(md)
			if n < 0 {
				return nil, false
			}
			switch num {
			case fieldDigestMin:
				lo = math.Float64frombits(v)
			case fieldDigestMax:
				hi = math.Float64frombits(v)
			}
			md = md[n:]
		default:
			return nil, false
		}
	}
	if len(cents) > 0 && (!isFinite(lo) || !isFinite(hi)) {
		return nil, false
	}
	// With no centroids, an empty digest (digestFromPB's tdigest.New()).
	out, err := d.digests.Digest(cents, lo, hi)
	return out, err == nil
}

// centroidFromWire reads a Centroid: finite, of positive weight, and
// single-valued as digestFromPB judges it (weight at most 1, or samples
// that all equal its mean).
func centroidFromWire(b []byte) (tdigest.Centroid, bool) {
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
