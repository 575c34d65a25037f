package samplers

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/axiomhq/hyperloglog"

	"github.com/veneur/veneur/tdigest"
)

// Kind is how a sink should treat a flushed value.
type Kind uint8

// Kinds of flushed values.
const (
	// GaugeKind is a point-in-time value.
	GaugeKind Kind = iota
	// RateKind is a per-second rate over the flush interval.
	RateKind
)

func (k Kind) String() string {
	if k == RateKind {
		return "rate"
	}
	return "gauge"
}

// Series is what every value flushed from one series shares. A flush
// carries hundreds of thousands of values, so they point to their series
// instead of each holding a copy.
type Series struct {
	Name string
	// Tags are sorted and shared: sinks must not modify them. Sinks
	// append their own configured tags.
	Tags []string
	// Host and Device override the sink's defaults when not empty.
	Host   string
	Device string
}

// InterMetric is one flushed value on its way to a sink. Name and Suffix
// together form the metric name (Name, Tags, Host and Device come from the
// embedded Series); keeping them apart spares a string concatenation per
// flushed value.
type InterMetric struct {
	*Series
	Value     float64
	Timestamp int64
	Suffix    Suffix
	Kind      Kind
}

// FullName returns Name+Suffix.
func (m *InterMetric) FullName() string { return m.Name + m.Suffix.String() }

// Aggregates is the set of histogram aggregates to flush.
type Aggregates uint8

// The histogram aggregates of the config key "aggregates".
const (
	AggMin Aggregates = 1 << iota
	AggMax
	AggMedian
	AggAvg
	AggCount
	AggSum
)

var aggregateNames = [...]struct {
	agg  Aggregates
	name string
}{
	{AggMin, "min"}, {AggMax, "max"}, {AggMedian, "median"},
	{AggAvg, "avg"}, {AggCount, "count"}, {AggSum, "sum"},
}

// ParseAggregates turns the names of the "aggregates" config key into a set.
func ParseAggregates(names []string) (Aggregates, error) {
	var a Aggregates
outer:
	for _, n := range names {
		for _, an := range aggregateNames {
			if n == an.name {
				a |= an.agg
				continue outer
			}
		}
		return 0, fmt.Errorf("unknown aggregate %q; use min, max, median, avg, count or sum", n)
	}
	return a, nil
}

// Percentile is a quantile to flush and the suffix naming it.
type Percentile struct {
	Q      float64
	Suffix Suffix
}

// NewPercentiles precomputes the suffixes of the given quantiles.
func NewPercentiles(qs []float64) []Percentile {
	ps := make([]Percentile, len(qs))
	for i, q := range qs {
		ps[i] = Percentile{Q: q, Suffix: SuffixOf("." + PercentileName(q) + "percentile")}
	}
	return ps
}

// PercentileName writes 100q without trailing zeros: 0.5 -> "50",
// 0.999 -> "99.9". It shifts the decimal point of q's shortest decimal form,
// so no binary rounding error shows up in the name.
func PercentileName(q float64) string {
	s := strconv.FormatFloat(q, 'f', -1, 64)
	intPart, frac, _ := strings.Cut(s, ".")
	for len(frac) < 2 {
		frac += "0"
	}
	digits := strings.TrimLeft(intPart+frac[:2], "0")
	if digits == "" {
		digits = "0"
	}
	if rest := strings.TrimRight(frac[2:], "0"); rest != "" {
		return digits + "." + rest
	}
	return digits
}

// Counter accumulates a DogStatsD counter.
type Counter struct {
	Value float64
}

// Sample adds v scaled up by the sample rate.
func (c *Counter) Sample(v, rate float64) { c.Value += v / rate }

// Flush appends the counter as a per-second rate.
func (c *Counter) Flush(dst []InterMetric, base InterMetric, intervalSec float64) []InterMetric {
	base.Kind = RateKind
	base.Value = c.Value / intervalSec
	return append(dst, base)
}

// Gauge keeps the last value received.
type Gauge struct {
	Value float64
}

// Sample records v.
func (g *Gauge) Sample(v float64) { g.Value = v }

// Flush appends the gauge.
func (g *Gauge) Flush(dst []InterMetric, base InterMetric) []InterMetric {
	base.Kind = GaugeKind
	base.Value = g.Value
	return append(dst, base)
}

// Histo is a histogram or timer: a t-digest of every sample it has seen
// (directly or merged from other instances) and exact statistics of the
// samples received directly, which are the ones this host reports.
//
// Most histograms get a few samples an interval, and a digest costs a few
// hundred bytes: a Histo keeps its first histoInline samples in itself and
// makes its digest only for the next one, for a merge, or when Digest is
// called. Flush computes the percentiles of the samples it holds in a
// scratch digest, which gives exactly what a digest of its own would: a
// digest's state depends only on the samples added, in order.
type Histo struct {
	digest      *tdigest.TDigest // nil until made; then it holds every sample
	LocalMin    float64
	LocalMax    float64
	LocalSum    float64
	LocalWeight float64
	n           int // samples in few, while digest is nil
	few         [histoInline]weighted
}

// histoInline is how many samples a Histo keeps before it makes a digest.
const histoInline = 4

type weighted struct{ v, w float64 }

// NewHisto returns an empty histogram.
func NewHisto() *Histo {
	return &Histo{LocalMin: math.Inf(1), LocalMax: math.Inf(-1)}
}

// Reset empties the histogram for reuse, keeping its digest's buffers if
// it has one: it then behaves exactly as a new one.
func (h *Histo) Reset() {
	if h.digest != nil {
		h.digest.Reset()
	}
	h.n = 0
	h.LocalMin, h.LocalMax = math.Inf(1), math.Inf(-1)
	h.LocalSum, h.LocalWeight = 0, 0
}

// Digest returns the digest of every sample, making it if the histogram
// has none yet. The histogram keeps using it.
func (h *Histo) Digest() *tdigest.TDigest {
	if h.digest == nil {
		h.digest = tdigest.New()
		h.fill(h.digest)
		h.n = 0
	}
	return h.digest
}

// fill adds the samples kept in h to d, in order. They were checked when
// they came.
func (h *Histo) fill(d *tdigest.TDigest) {
	for _, s := range h.few[:h.n] {
		d.Add(s.v, s.w)
	}
}

// Sample adds v with weight 1/rate. It returns the digest's error when it
// refuses the sample (tdigest.Check): the parser has already refused
// non-finite values, so that is a weight beyond tdigest.MaxWeight (a rate
// such as @1e-300).
func (h *Histo) Sample(v, rate float64) error {
	w := 1 / rate
	switch {
	case h.digest != nil:
		if err := h.digest.Add(v, w); err != nil {
			return err
		}
	case h.n < histoInline:
		if err := tdigest.Check(v, w); err != nil {
			return err
		}
		h.few[h.n] = weighted{v, w}
		h.n++
	default:
		if err := tdigest.Check(v, w); err != nil {
			return err
		}
		h.Digest().Add(v, w)
	}
	h.LocalMin = math.Min(h.LocalMin, v)
	h.LocalMax = math.Max(h.LocalMax, v)
	h.LocalSum += v * w
	h.LocalWeight += w
	return nil
}

// Merge folds a digest from another instance into this one. It does not
// touch the local statistics: those samples are reported by their own host.
func (h *Histo) Merge(d *tdigest.TDigest) { h.Digest().Merge(d) }

// quantiles returns the digest to take percentiles from: h's own, or
// scratch filled with the samples h keeps (a new digest when scratch is
// nil), or nil when h holds no sample.
func (h *Histo) quantiles(scratch *tdigest.TDigest) *tdigest.TDigest {
	if h.digest != nil {
		if h.digest.Count() == 0 {
			return nil
		}
		return h.digest
	}
	if h.n == 0 {
		return nil
	}
	if scratch == nil {
		scratch = tdigest.New()
	} else {
		scratch.Reset()
	}
	h.fill(scratch)
	return scratch
}

// Flush appends the configured aggregates of the local samples (when
// withAggregates and there were any) and the percentiles of the digest (when
// withPercentiles). scratch, when not nil, is a digest Flush may reset and
// use to compute them (one per goroutine).
func (h *Histo) Flush(dst []InterMetric, base InterMetric, aggs Aggregates, pcts []Percentile, withAggregates, withPercentiles bool, intervalSec float64, scratch *tdigest.TDigest) []InterMetric {
	base.Kind = GaugeKind
	var d *tdigest.TDigest
	if (withAggregates && aggs&AggMedian != 0) || (withPercentiles && len(pcts) > 0) {
		d = h.quantiles(scratch)
	}
	if withAggregates && h.LocalWeight > 0 {
		add := func(suffix Suffix, v float64, kind Kind) {
			m := base
			m.Suffix, m.Value, m.Kind = suffix, v, kind
			dst = append(dst, m)
		}
		if aggs&AggMax != 0 {
			add(SuffixMax, h.LocalMax, GaugeKind)
		}
		if aggs&AggMin != 0 {
			add(SuffixMin, h.LocalMin, GaugeKind)
		}
		if aggs&AggSum != 0 {
			add(SuffixSum, h.LocalSum, GaugeKind)
		}
		if aggs&AggAvg != 0 {
			add(SuffixAvg, h.LocalSum/h.LocalWeight, GaugeKind)
		}
		if aggs&AggCount != 0 {
			add(SuffixCount, h.LocalWeight/intervalSec, RateKind)
		}
		if aggs&AggMedian != 0 {
			add(SuffixMedian, d.Quantile(0.5), GaugeKind)
		}
	}
	if withPercentiles && d != nil {
		for _, p := range pcts {
			m := base
			m.Suffix, m.Value = p.Suffix, d.Quantile(p.Q)
			dst = append(dst, m)
		}
	}
	return dst
}

// Set counts distinct members with a HyperLogLog sketch.
type Set struct {
	Sketch *hyperloglog.Sketch
	// inserts counts Sample calls; merged says a sketch was merged in.
	// Together they tell whether the sketch is surely still sparse.
	inserts int
	merged  bool
}

// setSparseMax is how many members a New14 sketch surely takes without
// turning dense: it does once its sparse list takes more than 2^14 bytes,
// and a member adds at most a 5-byte varint to it.
const setSparseMax = (1 << 14) / 5

// NewSet returns an empty set. The sketch starts sparse, so a set with few
// members stays small.
func NewSet() *Set { return &Set{Sketch: hyperloglog.New14()} }

// Sample adds a member.
func (s *Set) Sample(member []byte) {
	s.inserts++
	s.Sketch.Insert(member)
}

// Merge folds a sketch from another instance into this one.
func (s *Set) Merge(other *hyperloglog.Sketch) error {
	s.merged = true
	return s.Sketch.Merge(other)
}

// Reuse empties the set for another interval and reports true when it
// then behaves exactly as a new one: when its sketch is surely still
// sparse (a sketch resets to the representation it has, and a dense one
// estimates small sets differently). It reports false, having changed
// nothing, otherwise.
func (s *Set) Reuse() bool {
	if s.merged || s.inserts > setSparseMax {
		return false
	}
	s.Sketch.Reset()
	s.inserts = 0
	return true
}

// Flush appends the estimated number of distinct members.
func (s *Set) Flush(dst []InterMetric, base InterMetric) []InterMetric {
	base.Kind = GaugeKind
	base.Value = float64(s.Sketch.Estimate())
	return append(dst, base)
}
