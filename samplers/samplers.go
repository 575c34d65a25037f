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
	Suffix    string
	Value     float64
	Timestamp int64
	Kind      Kind
}

// FullName returns Name+Suffix.
func (m *InterMetric) FullName() string { return m.Name + m.Suffix }

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
	Suffix string
}

// NewPercentiles precomputes the suffixes of the given quantiles.
func NewPercentiles(qs []float64) []Percentile {
	ps := make([]Percentile, len(qs))
	for i, q := range qs {
		ps[i] = Percentile{Q: q, Suffix: "." + PercentileName(q) + "percentile"}
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
type Histo struct {
	Digest      *tdigest.TDigest
	LocalMin    float64
	LocalMax    float64
	LocalSum    float64
	LocalWeight float64
}

// NewHisto returns an empty histogram.
func NewHisto() *Histo {
	return &Histo{Digest: tdigest.New(), LocalMin: math.Inf(1), LocalMax: math.Inf(-1)}
}

// Reset empties the histogram for reuse, keeping its digest's buffers: it
// then behaves exactly as a new one.
func (h *Histo) Reset() {
	h.Digest.Reset()
	h.LocalMin, h.LocalMax = math.Inf(1), math.Inf(-1)
	h.LocalSum, h.LocalWeight = 0, 0
}

// Sample adds v with weight 1/rate. It returns the digest's error when it
// refuses the sample: the parser has already refused non-finite values, so
// that is a weight beyond tdigest.MaxWeight (a rate such as @1e-300).
func (h *Histo) Sample(v, rate float64) error {
	w := 1 / rate
	if err := h.Digest.Add(v, w); err != nil {
		return err
	}
	h.LocalMin = math.Min(h.LocalMin, v)
	h.LocalMax = math.Max(h.LocalMax, v)
	h.LocalSum += v * w
	h.LocalWeight += w
	return nil
}

// Merge folds a digest from another instance into this one. It does not
// touch the local statistics: those samples are reported by their own host.
func (h *Histo) Merge(d *tdigest.TDigest) { h.Digest.Merge(d) }

// Flush appends the configured aggregates of the local samples (when
// withAggregates and there were any) and the percentiles of the digest (when
// withPercentiles).
func (h *Histo) Flush(dst []InterMetric, base InterMetric, aggs Aggregates, pcts []Percentile, withAggregates, withPercentiles bool, intervalSec float64) []InterMetric {
	base.Kind = GaugeKind
	if withAggregates && h.LocalWeight > 0 {
		add := func(suffix string, v float64, kind Kind) {
			m := base
			m.Suffix, m.Value, m.Kind = suffix, v, kind
			dst = append(dst, m)
		}
		if aggs&AggMax != 0 {
			add(".max", h.LocalMax, GaugeKind)
		}
		if aggs&AggMin != 0 {
			add(".min", h.LocalMin, GaugeKind)
		}
		if aggs&AggSum != 0 {
			add(".sum", h.LocalSum, GaugeKind)
		}
		if aggs&AggAvg != 0 {
			add(".avg", h.LocalSum/h.LocalWeight, GaugeKind)
		}
		if aggs&AggCount != 0 {
			add(".count", h.LocalWeight/intervalSec, RateKind)
		}
		if aggs&AggMedian != 0 {
			add(".median", h.Digest.Quantile(0.5), GaugeKind)
		}
	}
	if withPercentiles && h.Digest.Count() > 0 {
		for _, p := range pcts {
			m := base
			m.Suffix, m.Value = p.Suffix, h.Digest.Quantile(p.Q)
			dst = append(dst, m)
		}
	}
	return dst
}

// Set counts distinct members with a HyperLogLog sketch.
type Set struct {
	Sketch *hyperloglog.Sketch
}

// NewSet returns an empty set. The sketch starts sparse, so a set with few
// members stays small.
func NewSet() *Set { return &Set{Sketch: hyperloglog.New14()} }

// Sample adds a member.
func (s *Set) Sample(member []byte) { s.Sketch.Insert(member) }

// Merge folds a sketch from another instance into this one.
func (s *Set) Merge(other *hyperloglog.Sketch) error { return s.Sketch.Merge(other) }

// Flush appends the estimated number of distinct members.
func (s *Set) Flush(dst []InterMetric, base InterMetric) []InterMetric {
	base.Kind = GaugeKind
	base.Value = float64(s.Sketch.Estimate())
	return append(dst, base)
}
