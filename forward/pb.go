package forward

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/axiomhq/hyperloglog"

	"github.com/veneur/veneur/forward/metricpb"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// This file converts between samplers.Forwarded and metricpb.Metric, the
// series as veneur v14 forwards them over gRPC:
//
//   - counter: CounterValue, an int64 sum (ours is a float64: see
//     EncodeMetricpb for the rounding);
//   - gauge: v14 forwards gauges with scope Global and merges them last
//     wins; our workers merge no gauges, so they are refused (ErrGauge);
//   - histogram and timer: the centroids of a merging t-digest
//     (MergingDigestData) with the exact min and max, which become our
//     t-digest through tdigest.SetCentroids;
//   - set: a HyperLogLog sketch in axiomhq/hyperloglog's binary form, of
//     precision 14 like ours.
//
// Scope: v14 publishes forwarded counters and gauges globally whatever the
// scope says, refuses local-scope series, and keeps a histogram, timer or
// set in the scope it came with. Our JSON import gives forwarded counters
// the global scope and histograms, timers and sets the mixed one (so that
// they merge with the receiver's own series and with what JSON imports);
// DecodeMetricpb does the same, whether they came Mixed or Global, and
// refuses Local ones (ErrScope).

// Errors of DecodeMetricpb beyond those of DecodeJSON. Each wraps the
// DecodeJSON error of its kind, so that a counter that knows only those
// counts it under that cause; GRPCServer counts them under causes of their
// own (see GRPCServer.Report).
var (
	// ErrScope: the series came with scope Local, which is never
	// forwarded, or with an unknown scope.
	ErrScope = fmt.Errorf("%w: local or unknown scope", ErrType)
	// ErrGauge: the series is a gauge, which this instance does not
	// merge (v14 forwards gauges tagged veneurglobalonly).
	ErrGauge = fmt.Errorf("%w: gauges are not merged from other instances", ErrType)
	// ErrCentroids: the t-digest has more than MaxMetricpbCentroids
	// centroids.
	ErrCentroids = fmt.Errorf("%w: too many t-digest centroids", ErrValue)
	// ErrNonFinite: a t-digest's mean, weight, min or max is NaN or
	// infinite.
	ErrNonFinite = fmt.Errorf("%w: a t-digest value is not finite", ErrValue)
	// ErrPrecision: the HyperLogLog sketch's precision is not ours (14),
	// so it cannot merge into our sets.
	ErrPrecision = fmt.Errorf("%w: HyperLogLog precision is not 14", ErrValue)
	// ErrCounterRange: a counter sum that is not finite or does not
	// round into an int64, so that it cannot be sent as a v14 counter.
	ErrCounterRange = errors.New("forwarding: counter is not finite or beyond the int64 range")
)

// MaxMetricpbCentroids bounds the centroids of an imported t-digest. A v14
// digest has at most about π/2 × compression of them (157 at its default
// of 100); ours about 1.5 × compression (600 at 400), 15,000 at the
// highest compression. Past this bound a digest is refused (ErrCentroids)
// rather than merged.
const MaxMetricpbCentroids = 1 << 15

// setPrecision is the HyperLogLog precision of our sets
// (samplers.NewSet) and of v14's.
const setPrecision = 14

// DecodeMetricpb checks m, a series as veneur v14 forwards it, and converts
// it (see the top of this file): tags sorted, the scope as DecodeJSON
// gives it, the counter as a float64, the digest and sketch decoded. Its
// errors wrap ErrName, ErrType, ErrTags or ErrValue, and some of them one
// of the more precise errors above. f keeps no reference to m.
func DecodeMetricpb(m *metricpb.Metric) (samplers.Forwarded, error) {
	f := samplers.Forwarded{Name: m.GetName()}
	if f.Name == "" || len(f.Name) > maxName {
		return f, ErrName
	}
	if len(m.GetTags()) > maxTags {
		return f, ErrTags
	}
	for _, t := range m.GetTags() {
		if t == "" || strings.IndexByte(t, ',') >= 0 || len(t) > maxName {
			return f, ErrTags
		}
	}
	switch m.GetScope() {
	case metricpb.Scope_Mixed, metricpb.Scope_Global:
	default:
		return f, fmt.Errorf("%w (%v)", ErrScope, m.GetScope())
	}
	switch m.GetType() {
	case metricpb.Type_Counter:
		c, ok := m.GetValue().(*metricpb.Metric_Counter)
		if !ok || c.Counter == nil {
			return f, fmt.Errorf("%w: a counter without a counter value", ErrValue)
		}
		// Every int64 is within float64's range; beyond 2^53 it is
		// rounded to the nearest float64, as our own sums are.
		f.Type, f.Scope, f.Counter = samplers.CounterMetric, samplers.GlobalOnly, float64(c.Counter.GetValue())
	case metricpb.Type_Gauge:
		return f, ErrGauge
	case metricpb.Type_Histogram, metricpb.Type_Timer:
		h, ok := m.GetValue().(*metricpb.Metric_Histogram)
		if !ok || h.Histogram == nil || h.Histogram.GetTDigest() == nil {
			return f, fmt.Errorf("%w: a %v without a t-digest", ErrValue, m.GetType())
		}
		d, err := digestFromPB(h.Histogram.GetTDigest())
		if err != nil {
			return f, err
		}
		f.Type, f.Scope, f.Digest = samplers.HistogramMetric, samplers.MixedScope, d
		if m.GetType() == metricpb.Type_Timer {
			f.Type = samplers.TimerMetric
		}
	case metricpb.Type_Set:
		s, ok := m.GetValue().(*metricpb.Metric_Set)
		if !ok || s.Set == nil {
			return f, fmt.Errorf("%w: a set without a sketch", ErrValue)
		}
		sk, err := sketchFromPB(s.Set.GetHyperLogLog())
		if err != nil {
			return f, err
		}
		f.Type, f.Scope, f.Set = samplers.SetMetric, samplers.MixedScope, sk
	default:
		return f, fmt.Errorf("%w (%v)", ErrType, m.GetType())
	}
	f.Tags = slices.Clone(m.GetTags())
	slices.Sort(f.Tags)
	return f, nil
}

// centroidScratch holds the centroids of one digest being converted,
// reused across conversions: SetCentroids copies them.
var centroidScratch = sync.Pool{New: func() any { return new([]tdigest.Centroid) }}

// digestFromPB is our t-digest of d: its centroids with their weights, and
// its exact min and max. A centroid is single-valued when its weight is at
// most 1 (one sample: weights are 1/sample rate, at least 1) or when it
// lists samples that all equal its mean (v14's debug mode lists them all;
// our EncodeMetricpb lists the one value of a single-valued centroid).
// reciprocalSum is dropped: our digest has no harmonic mean. The digest
// has our default compression; it only matters once the digest is merged
// into, and then the receiver's own compression rules.
func digestFromPB(d *metricpb.MergingDigestData) (*tdigest.TDigest, error) {
	pcs := d.GetMainCentroids()
	if len(pcs) > MaxMetricpbCentroids {
		return nil, fmt.Errorf("%w: %d, at most %d", ErrCentroids, len(pcs), MaxMetricpbCentroids)
	}
	out := tdigest.New()
	if len(pcs) == 0 {
		// An empty digest, as v14 sends one (min +Inf, max -Inf).
		return out, nil
	}
	lo, hi := d.GetMin(), d.GetMax()
	if !isFinite(lo) || !isFinite(hi) {
		return nil, fmt.Errorf("%w: min %v, max %v", ErrNonFinite, lo, hi)
	}
	sp := centroidScratch.Get().(*[]tdigest.Centroid)
	defer centroidScratch.Put(sp)
	cents := (*sp)[:0]
	for i, c := range pcs {
		if c == nil {
			return nil, fmt.Errorf("%w: centroid %d is missing", ErrValue, i)
		}
		mean, w := c.GetMean(), c.GetWeight()
		if !isFinite(mean) || !isFinite(w) {
			return nil, fmt.Errorf("%w: centroid %d has mean %v, weight %v", ErrNonFinite, i, mean, w)
		}
		if !(w > 0) {
			return nil, fmt.Errorf("%w: centroid %d has weight %v", ErrValue, i, w)
		}
		single := w <= 1
		if s := c.GetSamples(); !single && len(s) > 0 {
			single = true
			for _, v := range s {
				if v != mean {
					single = false
					break
				}
			}
		}
		cents = append(cents, tdigest.Centroid{Mean: mean, Weight: w, Single: single})
	}
	*sp = cents
	if err := out.SetCentroids(cents, lo, hi); err != nil {
		// Only the total weight or an overflowing sum is left to refuse.
		return nil, fmt.Errorf("%w: %v", ErrValue, err)
	}
	return out, nil
}

func isFinite(f float64) bool { return f-f == 0 }

// sketchFromPB decodes a sketch that must merge into our sets: precision
// 14 (else ErrPrecision), in either version of axiomhq/hyperloglog's
// binary form (v14 writes version 1, whose dense registers are 4-bit
// offsets from a base; we write version 2). The decoder validates its
// input; a panic in it counts as a bad value all the same.
func sketchFromPB(b []byte) (s *hyperloglog.Sketch, err error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: a sketch of %d bytes", ErrValue, len(b))
	}
	if b[1] != setPrecision {
		return nil, fmt.Errorf("%w: precision %d", ErrPrecision, b[1])
	}
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%w: malformed sketch: %v", ErrValue, r)
		}
	}()
	s = hyperloglog.New14()
	if err := s.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrValue, err)
	}
	return s, nil
}

// EncodeMetricpb is the metricpb.Metric of f, as v14 sends it, so that a
// v14 global instance (or ours) merges it:
//
//   - counter: scope Global; the sum rounded to the nearest integer,
//     halves away from zero (v14 counters are int64). A sampled counter's
//     fractional part is lost; the forward client counts the counters it
//     rounds. A sum that is not finite or does not fit an int64 is
//     refused (ErrCounterRange).
//   - histogram and timer: the scope of f (Mixed or Global), and the
//     digest's centroids with its compression and exact min and max. A
//     single-valued centroid heavier than one sample lists its value as
//     its one sample, so that our receivers keep it exact (they take a
//     centroid of weight 1 or less as single-valued anyway); v14 ignores
//     samples when it merges.
//     reciprocalSum, which our digest does not keep, is the sum of
//     weight/mean over the centroids: exact for single-valued centroids,
//     an estimate for the others.
//   - set: the scope of f, and the sketch in the binary form v14's
//     HyperLogLog reads (version 1: see appendSketchV1).
//
// Gauges are not forwarded. Encoding a digest folds its buffered samples
// into its centroids (as EncodeJSON does).
func EncodeMetricpb(f *samplers.Forwarded) (*metricpb.Metric, error) {
	m := &metricpb.Metric{Name: f.Name, Tags: f.Tags, Scope: scopeToPB(f.Scope)}
	switch f.Type {
	case samplers.CounterMetric:
		v, ok := counterToInt64(f.Counter)
		if !ok {
			return nil, fmt.Errorf("forwarding counter %q = %v: %w", f.Name, f.Counter, ErrCounterRange)
		}
		m.Type, m.Scope = metricpb.Type_Counter, metricpb.Scope_Global
		m.Value = &metricpb.Metric_Counter{Counter: &metricpb.CounterValue{Value: v}}
	case samplers.HistogramMetric, samplers.TimerMetric:
		if f.Digest == nil {
			return nil, fmt.Errorf("forwarding %s %q: no digest", f.Type, f.Name)
		}
		m.Type = metricpb.Type_Histogram
		if f.Type == samplers.TimerMetric {
			m.Type = metricpb.Type_Timer
		}
		m.Value = &metricpb.Metric_Histogram{Histogram: &metricpb.HistogramValue{TDigest: digestToPB(f.Digest)}}
	case samplers.SetMetric:
		if f.Set == nil {
			return nil, fmt.Errorf("forwarding set %q: no sketch", f.Name)
		}
		b, err := appendSketchV1(nil, f.Set)
		if err != nil {
			return nil, fmt.Errorf("forwarding set %q: %w", f.Name, err)
		}
		m.Type = metricpb.Type_Set
		m.Value = &metricpb.Metric_Set{Set: &metricpb.SetValue{HyperLogLog: b}}
	default:
		return nil, fmt.Errorf("forwarding %q: a %s is not forwarded", f.Name, f.Type)
	}
	return m, nil
}

// counterToInt64 rounds v to the nearest int64, halves away from zero; ok
// is false when v is not finite or out of the int64 range.
func counterToInt64(v float64) (int64, bool) {
	r := math.Round(v)
	// -2^63 is an int64, 2^63 is not; NaN fails both comparisons.
	if !(r >= math.MinInt64 && r < -math.MinInt64) {
		return 0, false
	}
	return int64(r), true
}

func scopeToPB(s samplers.MetricScope) metricpb.Scope {
	switch s {
	case samplers.LocalOnly:
		return metricpb.Scope_Local
	case samplers.GlobalOnly:
		return metricpb.Scope_Global
	}
	return metricpb.Scope_Mixed
}

// digestToPB is the MergingDigestData of d (see EncodeMetricpb). The
// centroids share two allocations, one for the messages and one for the
// samples they list.
func digestToPB(d *tdigest.TDigest) *metricpb.MergingDigestData {
	sp := centroidScratch.Get().(*[]tdigest.Centroid)
	defer centroidScratch.Put(sp)
	cents := d.AppendCentroids((*sp)[:0])
	*sp = cents
	out := &metricpb.MergingDigestData{Compression: d.Compression()}
	if len(cents) == 0 {
		// v14's empty digest.
		out.Min, out.Max = math.Inf(1), math.Inf(-1)
		return out
	}
	out.Min, out.Max = d.Min(), d.Max()
	msgs := make([]metricpb.Centroid, len(cents))
	out.MainCentroids = make([]*metricpb.Centroid, len(cents))
	// A receiver of ours takes a centroid of weight 1 or less as single
	// valued anyway: only the heavier ones list their value.
	listed := 0
	for _, c := range cents {
		if c.Single && c.Weight > 1 {
			listed++
		}
	}
	values := make([]float64, 0, listed)
	recip := 0.0
	for i, c := range cents {
		pc := &msgs[i]
		pc.Mean, pc.Weight = c.Mean, c.Weight
		if c.Single && c.Weight > 1 {
			values = append(values, c.Mean)
			pc.Samples = values[len(values)-1 : len(values) : len(values)]
		}
		recip += c.Weight / c.Mean
		out.MainCentroids[i] = pc
	}
	out.ReciprocalSum = recip
	return out
}

// appendSketchV1 appends s to dst in version 1 of axiomhq/hyperloglog's
// binary form, the one v14's copy of the library reads (it ignores the
// version byte). Ours writes version 2, which differs from version 1 in
// the dense form only:
//
//   - sparse: the same bytes but the version byte;
//   - dense: version 2 has one byte per register (m of them, after an m
//     count); version 1 has a base b in byte 2, then a count of m/2, then
//     m/2 bytes of two 4-bit registers each (the even register in the
//     high nibble), each the register's value minus b.
//
// For the dense form b is the smallest register, and a register more than
// 15 above it is written as b+15: version 1 keeps no more (v14's sketches
// cut their registers the same way), which lowers the estimate of those
// registers only. Our decoder reads both versions.
func appendSketchV1(dst []byte, s *hyperloglog.Sketch) ([]byte, error) {
	start := len(dst)
	dst, err := s.AppendBinary(dst)
	if err != nil {
		return dst[:start], err
	}
	b := dst[start:]
	if len(b) < 8 || b[0] != 2 {
		return dst[:start], fmt.Errorf("hyperloglog: unexpected encoding (%d bytes, version %d)", len(b), b[0])
	}
	b[0] = 1
	if b[3] == 1 {
		return dst, nil // sparse
	}
	regs := b[8:]
	if len(regs)%2 != 0 || uint32(len(regs)) != binary.BigEndian.Uint32(b[4:8]) {
		return dst[:start], fmt.Errorf("hyperloglog: dense encoding of %d registers", len(regs))
	}
	base := slices.Min(regs)
	b[2] = base
	binary.BigEndian.PutUint32(b[4:8], uint32(len(regs)/2))
	// Pack in place: byte i takes registers 2i and 2i+1, which were read
	// before (they lie at or after it).
	for i := 0; i < len(regs)/2; i++ {
		hi := min(regs[2*i]-base, 15)
		lo := min(regs[2*i+1]-base, 15)
		regs[i] = hi<<4 | lo
	}
	return dst[:start+8+len(regs)/2], nil
}
