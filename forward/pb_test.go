package forward

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strconv"
	"testing"

	"github.com/axiomhq/hyperloglog"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/forward/metricpb"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// pbDigest is a digest of values, each of weight 1.
func pbDigest(t testing.TB, values ...float64) *tdigest.TDigest {
	t.Helper()
	d := tdigest.New()
	for _, v := range values {
		if err := d.Add(v, 1); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// pbSketch is a sketch of n members named prefix0, prefix1, ...
func pbSketch(prefix string, n int) *hyperloglog.Sketch {
	s := hyperloglog.New14()
	for i := range n {
		s.Insert([]byte(prefix + strconv.Itoa(i)))
	}
	return s
}

// Hand-assembled wire encodings of v14 messages, written field by field
// with protowire from the field numbers and types of v14's metric.proto
// and tdigest.proto, so that a mistake in our .proto files (a number, a
// type, a packed repeated field) shows here rather than agreeing with
// itself.

func wireString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func wireMessage(b []byte, num protowire.Number, m []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

func wireDouble(b []byte, num protowire.Number, v float64) []byte {
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(v))
}

func wireVarint(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// wireMetric is a v14 Metric: name (1), tags (2), type (3), the value
// message in field valueNum, scope (9).
func wireMetric(name string, tags []string, typ, scope uint64, valueNum protowire.Number, value []byte) []byte {
	b := wireString(nil, 1, name)
	for _, t := range tags {
		b = wireString(b, 2, t)
	}
	b = wireVarint(b, 3, typ)
	b = wireMessage(b, valueNum, value)
	if scope != 0 {
		b = wireVarint(b, 9, scope)
	}
	return b
}

// wireCentroid is a v14 Centroid: mean (1), weight (2), samples (3,
// packed, as proto3 writes repeated doubles).
func wireCentroid(mean, weight float64, samples ...float64) []byte {
	b := wireDouble(nil, 1, mean)
	b = wireDouble(b, 2, weight)
	if len(samples) > 0 {
		var packed []byte
		for _, s := range samples {
			packed = protowire.AppendFixed64(packed, math.Float64bits(s))
		}
		b = wireMessage(b, 3, packed)
	}
	return b
}

// decodeWire decodes b as the gRPC import does (DecodeMetricpbWire), and
// checks that the generated code and DecodeMetricpb decode it the same.
func decodeWire(t *testing.T, b []byte) (samplers.Forwarded, error) {
	t.Helper()
	var m metricpb.Metric
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatalf("the wire bytes do not parse as a Metric: %v", err)
	}
	return checkSameDecoding(t, b)
}

// The golden v14 series of each type and scope, as bytes on the wire, and
// exactly what they decode to.
func TestDecodeMetricpbGolden(t *testing.T) {
	const (
		typeCounter, typeGauge, typeHistogram, typeSet, typeTimer = 0, 1, 2, 3, 4
		scopeMixed, scopeLocal, scopeGlobal                       = 0, 1, 2
	)
	t.Run("counter", func(t *testing.T) {
		for _, tc := range []struct {
			v     int64
			scope uint64
		}{{42, scopeGlobal}, {-7, scopeGlobal}, {0, scopeMixed}, {1 << 53, scopeGlobal}} {
			value := wireVarint(nil, 1, uint64(tc.v))
			f, err := decodeWire(t, wireMetric("requests", []string{"z:1", "a:2"}, typeCounter, tc.scope, 5, value))
			if err != nil {
				t.Fatal(err)
			}
			want := samplers.Forwarded{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: "requests", Tags: []string{"a:2", "z:1"}, Counter: float64(tc.v)}
			if !forwardedEqual(f, want) {
				t.Errorf("counter %d, scope %d: got %+v, want %+v", tc.v, tc.scope, f, want)
			}
		}
	})

	// One digest: samples 1 (alone), four around 2.5, 7 twice (listed in
	// samples, as v14's debug mode does), 10 (alone); v14's compression
	// 100; reciprocalSum is dropped.
	digest := wireMessage(nil, 1, wireCentroid(1, 1))
	digest = wireMessage(digest, 1, wireCentroid(2.5, 4))
	digest = wireMessage(digest, 1, wireCentroid(7, 2, 7, 7))
	digest = wireMessage(digest, 1, wireCentroid(10, 1))
	digest = wireDouble(digest, 2, 100)
	digest = wireDouble(digest, 3, 1)
	digest = wireDouble(digest, 4, 10)
	digest = wireDouble(digest, 5, 2.1)
	histo := wireMessage(nil, 1, digest)
	wantCents := []tdigest.Centroid{{Mean: 1, Weight: 1, Single: true}, {Mean: 2.5, Weight: 4}, {Mean: 7, Weight: 2, Single: true}, {Mean: 10, Weight: 1, Single: true}}
	for _, tc := range []struct {
		name  string
		typ   uint64
		scope uint64
		want  samplers.MetricType
	}{
		{"histogram/mixed", typeHistogram, scopeMixed, samplers.HistogramMetric},
		{"histogram/global", typeHistogram, scopeGlobal, samplers.HistogramMetric},
		{"timer/mixed", typeTimer, scopeMixed, samplers.TimerMetric},
		{"timer/global", typeTimer, scopeGlobal, samplers.TimerMetric},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := decodeWire(t, wireMetric("latency", []string{"svc:api"}, tc.typ, tc.scope, 7, histo))
			if err != nil {
				t.Fatal(err)
			}
			if f.Type != tc.want || f.Scope != samplers.MixedScope || f.Name != "latency" || !slices.Equal(f.Tags, []string{"svc:api"}) {
				t.Errorf("got %v %v %q %v, want %v mixed latency [svc:api]", f.Type, f.Scope, f.Name, f.Tags, tc.want)
			}
			d := f.Digest
			if got := d.AppendCentroids(nil); !slices.Equal(got, wantCents) {
				t.Errorf("centroids %+v, want %+v", got, wantCents)
			}
			if d.Count() != 8 || d.Min() != 1 || d.Max() != 10 || d.Sum() != 35 {
				t.Errorf("Count, Min, Max, Sum = %v, %v, %v, %v; want 8, 1, 10, 35", d.Count(), d.Min(), d.Max(), d.Sum())
			}
			for q, want := range map[float64]float64{0: 1, 1: 10, 0.75: 7} {
				if got := d.Quantile(q); got != want {
					t.Errorf("Quantile(%v) = %v, want %v", q, got, want)
				}
			}
		})
	}

	t.Run("histogram/empty", func(t *testing.T) {
		empty := wireDouble(nil, 2, 100)
		empty = wireDouble(empty, 3, math.Inf(1))
		empty = wireDouble(empty, 4, math.Inf(-1))
		f, err := decodeWire(t, wireMetric("idle", nil, typeHistogram, scopeMixed, 7, wireMessage(nil, 1, empty)))
		if err != nil {
			t.Fatal(err)
		}
		if f.Digest == nil || f.Digest.Count() != 0 {
			t.Errorf("an empty v14 digest decodes to %+v, want an empty digest", f.Digest)
		}
	})

	// v14's sets are version 1 of the sketch encoding. Dense: a base of 2
	// and 4-bit registers; register i is 2 + (i mod 13).
	const m = 1 << 14
	v1 := []byte{1, 14, 2, 0}
	v1 = binary.BigEndian.AppendUint32(v1, m/2)
	v2 := []byte{2, 14, 0, 0} // the same registers, as we write them
	v2 = binary.BigEndian.AppendUint32(v2, m)
	for i := 0; i < m; i += 2 {
		hi, lo := byte(i%13), byte((i+1)%13)
		v1 = append(v1, hi<<4|lo)
		v2 = append(v2, 2+hi, 2+lo)
	}
	for _, tc := range []struct {
		name  string
		scope uint64
	}{{"set/mixed", scopeMixed}, {"set/global", scopeGlobal}} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := decodeWire(t, wireMetric("users", []string{"b", "a"}, typeSet, tc.scope, 8, wireString(nil, 1, string(v1))))
			if err != nil {
				t.Fatal(err)
			}
			if f.Type != samplers.SetMetric || f.Scope != samplers.MixedScope || !slices.Equal(f.Tags, []string{"a", "b"}) {
				t.Errorf("got %v %v %v, want set mixed [a b]", f.Type, f.Scope, f.Tags)
			}
			got, err := f.Set.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, v2) {
				t.Error("the decoded registers differ from those v14 sent")
			}
		})
	}
	t.Run("set/sparse", func(t *testing.T) {
		want := pbSketch("user", 50)
		b, err := want.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if b[3] != 1 {
			t.Fatal("a sketch of 50 members is not sparse")
		}
		b[0] = 1 // v14 writes version 1; its sparse form is ours
		f, err := decodeWire(t, wireMetric("users", nil, typeSet, scopeMixed, 8, wireString(nil, 1, string(b))))
		if err != nil {
			t.Fatal(err)
		}
		if f.Set.Estimate() != want.Estimate() {
			t.Errorf("estimate %d, want %d", f.Set.Estimate(), want.Estimate())
		}
	})

	// What this instance does not take, each for its own cause.
	for _, tc := range []struct {
		name string
		wire []byte
		want error
	}{
		{"gauge", wireMetric("temp", nil, typeGauge, scopeGlobal, 6, wireDouble(nil, 1, 21.5)), ErrGauge},
		{"local counter", wireMetric("requests", nil, typeCounter, scopeLocal, 5, wireVarint(nil, 1, 1)), ErrScope},
		{"local histogram", wireMetric("latency", nil, typeHistogram, scopeLocal, 7, histo), ErrScope},
	} {
		if _, err := decodeWire(t, tc.wire); !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
}

// forwardedEqual compares the fields of counters (no digest, no set).
func forwardedEqual(a, b samplers.Forwarded) bool {
	return a.Type == b.Type && a.Scope == b.Scope && a.Name == b.Name && slices.Equal(a.Tags, b.Tags) &&
		a.Counter == b.Counter && a.Digest == nil && b.Digest == nil && a.Set == nil && b.Set == nil
}

// The same golden series built with the generated types: the
// hand-assembled bytes parse into exactly that message (no field unknown
// to our .proto, none read into another), and its own encoding parses
// back the same. (Byte equality would be too strict: protobuf writes
// fields in any order, and Go's writes oneofs last.)
func TestMetricpbMatchesTheWire(t *testing.T) {
	m := &metricpb.Metric{
		Name: "latency", Tags: []string{"svc:api"}, Type: metricpb.Type_Timer, Scope: metricpb.Scope_Global,
		Value: &metricpb.Metric_Histogram{Histogram: &metricpb.HistogramValue{TDigest: &metricpb.MergingDigestData{
			MainCentroids: []*metricpb.Centroid{{Mean: 1, Weight: 1}, {Mean: 7, Weight: 2, Samples: []float64{7, 7}}},
			Compression:   100, Min: 1, Max: 7, ReciprocalSum: 2,
		}}},
	}
	digest := wireMessage(nil, 1, wireCentroid(1, 1))
	digest = wireMessage(digest, 1, wireCentroid(7, 2, 7, 7))
	digest = wireDouble(digest, 2, 100)
	digest = wireDouble(digest, 3, 1)
	digest = wireDouble(digest, 4, 7)
	digest = wireDouble(digest, 5, 2)
	counter := &metricpb.Metric{Name: "n", Type: metricpb.Type_Counter, Scope: metricpb.Scope_Global, Value: &metricpb.Metric_Counter{Counter: &metricpb.CounterValue{Value: -3}}}
	gauge := &metricpb.Metric{Name: "g", Type: metricpb.Type_Gauge, Value: &metricpb.Metric_Gauge{Gauge: &metricpb.GaugeValue{Value: 21.5}}}
	set := &metricpb.Metric{Name: "s", Type: metricpb.Type_Set, Scope: metricpb.Scope_Local, Value: &metricpb.Metric_Set{Set: &metricpb.SetValue{HyperLogLog: []byte{1, 14, 0, 1}}}}
	for _, tc := range []struct {
		name string
		m    *metricpb.Metric
		wire []byte
	}{
		{"timer", m, wireMetric("latency", []string{"svc:api"}, 4, 2, 7, wireMessage(nil, 1, digest))},
		{"counter", counter, wireMetric("n", nil, 0, 2, 5, wireVarint(nil, 1, uint64(1<<64-3)))},
		{"gauge", gauge, wireMetric("g", nil, 1, 0, 6, wireDouble(nil, 1, 21.5))},
		{"set", set, wireMetric("s", nil, 3, 1, 8, wireString(nil, 1, string([]byte{1, 14, 0, 1})))},
	} {
		var parsed metricpb.Metric
		if err := proto.Unmarshal(tc.wire, &parsed); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !proto.Equal(&parsed, tc.m) {
			t.Errorf("%s: the wire bytes parse as %v, want %v", tc.name, &parsed, tc.m)
		}
		b, err := proto.Marshal(tc.m)
		if err != nil {
			t.Fatal(err)
		}
		var again metricpb.Metric
		if err := proto.Unmarshal(b, &again); err != nil || !proto.Equal(&again, tc.m) {
			t.Errorf("%s: the generated encoding parses as %v (%v)", tc.name, &again, err)
		}
	}
}

// refusedCase is a series DecodeMetricpb refuses, and the error it wraps.
type refusedCase struct {
	name string
	m    *metricpb.Metric
	want error
}

// refusedSeries is a series of each kind DecodeMetricpb refuses.
func refusedSeries(t testing.TB) []refusedCase {
	counter := func(v int64) *metricpb.Metric_Counter {
		return &metricpb.Metric_Counter{Counter: &metricpb.CounterValue{Value: v}}
	}
	histo := func(d *metricpb.MergingDigestData) *metricpb.Metric_Histogram {
		return &metricpb.Metric_Histogram{Histogram: &metricpb.HistogramValue{TDigest: d}}
	}
	one := []*metricpb.Centroid{{Mean: 1, Weight: 1}}
	many := make([]*metricpb.Centroid, MaxMetricpbCentroids+1)
	for i := range many {
		many[i] = &metricpb.Centroid{Mean: float64(i), Weight: 1}
	}
	sk, _ := pbSketch("m", 10).MarshalBinary()
	p16, _ := hyperloglog.New16().MarshalBinary()
	long := string(bytes.Repeat([]byte("x"), maxName+1))
	tooMany := make([]string, maxTags+1)
	for i := range tooMany {
		tooMany[i] = "t" + strconv.Itoa(i)
	}
	nan, inf := math.NaN(), math.Inf(1)
	return []refusedCase{
		{"empty name", &metricpb.Metric{Value: counter(1)}, ErrName},
		{"long name", &metricpb.Metric{Name: long, Value: counter(1)}, ErrName},
		{"too many tags", &metricpb.Metric{Name: "n", Tags: tooMany, Value: counter(1)}, ErrTags},
		{"empty tag", &metricpb.Metric{Name: "n", Tags: []string{""}, Value: counter(1)}, ErrTags},
		{"tag with a comma", &metricpb.Metric{Name: "n", Tags: []string{"a,b"}, Value: counter(1)}, ErrTags},
		{"unknown scope", &metricpb.Metric{Name: "n", Scope: 7, Value: counter(1)}, ErrScope},
		{"unknown type", &metricpb.Metric{Name: "n", Type: 9, Value: counter(1)}, ErrType},
		{"gauge", &metricpb.Metric{Name: "n", Type: metricpb.Type_Gauge, Value: &metricpb.Metric_Gauge{Gauge: &metricpb.GaugeValue{Value: 1}}}, ErrGauge},
		{"counter without value", &metricpb.Metric{Name: "n"}, ErrValue},
		{"counter with a set", &metricpb.Metric{Name: "n", Value: &metricpb.Metric_Set{Set: &metricpb.SetValue{HyperLogLog: sk}}}, ErrValue},
		{"histogram without digest", &metricpb.Metric{Name: "n", Type: metricpb.Type_Histogram, Value: histo(nil)}, ErrValue},
		{"timer with a counter", &metricpb.Metric{Name: "n", Type: metricpb.Type_Timer, Value: counter(1)}, ErrValue},
		{"too many centroids", &metricpb.Metric{Name: "n", Type: metricpb.Type_Histogram, Value: histo(&metricpb.MergingDigestData{MainCentroids: many, Max: 1 << 20})}, ErrCentroids},
		{"NaN mean", &metricpb.Metric{Name: "n", Type: metricpb.Type_Histogram, Value: histo(&metricpb.MergingDigestData{MainCentroids: []*metricpb.Centroid{{Mean: nan, Weight: 1}}})}, ErrNonFinite},
		{"infinite weight", &metricpb.Metric{Name: "n", Type: metricpb.Type_Histogram, Value: histo(&metricpb.MergingDigestData{MainCentroids: []*metricpb.Centroid{{Mean: 1, Weight: inf}}, Min: 1, Max: 1})}, ErrNonFinite},
		{"infinite min", &metricpb.Metric{Name: "n", Type: metricpb.Type_Histogram, Value: histo(&metricpb.MergingDigestData{MainCentroids: one, Min: math.Inf(-1), Max: 1})}, ErrNonFinite},
		{"NaN max", &metricpb.Metric{Name: "n", Type: metricpb.Type_Histogram, Value: histo(&metricpb.MergingDigestData{MainCentroids: one, Min: 1, Max: nan})}, ErrNonFinite},
		{"zero weight", &metricpb.Metric{Name: "n", Type: metricpb.Type_Histogram, Value: histo(&metricpb.MergingDigestData{MainCentroids: []*metricpb.Centroid{{Mean: 1}}, Min: 1, Max: 1})}, ErrValue},
		{"nil centroid", &metricpb.Metric{Name: "n", Type: metricpb.Type_Histogram, Value: histo(&metricpb.MergingDigestData{MainCentroids: []*metricpb.Centroid{nil}, Min: 1, Max: 1})}, ErrValue},
		{"weight over 2^200", &metricpb.Metric{Name: "n", Type: metricpb.Type_Histogram, Value: histo(&metricpb.MergingDigestData{MainCentroids: []*metricpb.Centroid{{Mean: 1, Weight: 0x1p201}}, Min: 1, Max: 1})}, ErrValue},
		{"set without sketch", &metricpb.Metric{Name: "n", Type: metricpb.Type_Set}, ErrValue},
		{"short sketch", &metricpb.Metric{Name: "n", Type: metricpb.Type_Set, Value: &metricpb.Metric_Set{Set: &metricpb.SetValue{HyperLogLog: []byte{1}}}}, ErrValue},
		{"precision 16", &metricpb.Metric{Name: "n", Type: metricpb.Type_Set, Value: &metricpb.Metric_Set{Set: &metricpb.SetValue{HyperLogLog: p16}}}, ErrPrecision},
		{"truncated sketch", &metricpb.Metric{Name: "n", Type: metricpb.Type_Set, Value: &metricpb.Metric_Set{Set: &metricpb.SetValue{HyperLogLog: sk[:len(sk)-1]}}}, ErrValue},
	}
}

func TestDecodeMetricpbRefuses(t *testing.T) {
	for _, tc := range refusedSeries(t) {
		_, err := DecodeMetricpb(tc.m)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
	// The precise errors are also their general kind, for a counter that
	// only knows those.
	for precise, general := range map[error]error{ErrScope: ErrType, ErrGauge: ErrType, ErrCentroids: ErrValue, ErrNonFinite: ErrValue, ErrPrecision: ErrValue} {
		if !errors.Is(precise, general) {
			t.Errorf("%v does not wrap %v", precise, general)
		}
	}
}

func TestDecodeMetricpbCopies(t *testing.T) {
	m := &metricpb.Metric{Name: "n", Tags: []string{"b", "a"}, Type: metricpb.Type_Counter, Value: &metricpb.Metric_Counter{Counter: &metricpb.CounterValue{Value: 1}}}
	f, err := DecodeMetricpb(m)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Tags, []string{"b", "a"}) || !slices.Equal(f.Tags, []string{"a", "b"}) {
		t.Errorf("message tags %v, decoded %v: want the message's untouched and a sorted copy", m.Tags, f.Tags)
	}
}

func TestEncodeMetricpbCounters(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want int64
	}{
		{0, 0}, {42, 42}, {2.5, 3}, {-2.5, -3}, {2.4999, 2}, {-0.4, 0},
		{math.MaxInt64 / 2, math.MaxInt64/2 + 1}, // rounds to a float64 first
		{-0x1p63, math.MinInt64},
	} {
		m, err := EncodeMetricpb(&samplers.Forwarded{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: "c", Counter: tc.in})
		if err != nil {
			t.Errorf("%v: %v", tc.in, err)
			continue
		}
		if got := m.GetCounter().GetValue(); got != tc.want || m.GetType() != metricpb.Type_Counter || m.GetScope() != metricpb.Scope_Global {
			t.Errorf("%v: %v %v %d, want counter global %d", tc.in, m.GetType(), m.GetScope(), got, tc.want)
		}
	}
	for _, v := range []float64{0x1p63, -0x1p64, math.Inf(1), math.NaN(), 1e300} {
		if _, err := EncodeMetricpb(&samplers.Forwarded{Type: samplers.CounterMetric, Name: "c", Counter: v}); !errors.Is(err, ErrCounterRange) {
			t.Errorf("%v: error %v, want ErrCounterRange", v, err)
		}
	}
}

func TestEncodeMetricpbRefuses(t *testing.T) {
	for _, f := range []samplers.Forwarded{
		{Type: samplers.GaugeMetric, Name: "g"},
		{Type: samplers.HistogramMetric, Name: "h"},
		{Type: samplers.TimerMetric, Name: "t"},
		{Type: samplers.SetMetric, Name: "s"},
	} {
		if m, err := EncodeMetricpb(&f); err == nil {
			t.Errorf("%v %q encoded to %v", f.Type, f.Name, m)
		}
	}
}

// A digest goes to v14's form with its centroids, extremes and the one
// value of each single-valued centroid, and comes back the same.
func TestMetricpbDigestRoundTrip(t *testing.T) {
	d := pbDigest(t, 3, 3, 3, 1, 2, 9, 0.5)
	for i := range 5000 {
		d.Add(float64(i%97)+0.25*float64(i%4), 1)
	}
	m, err := EncodeMetricpb(&samplers.Forwarded{Type: samplers.TimerMetric, Scope: samplers.GlobalOnly, Name: "lat", Tags: []string{"a"}, Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	if m.GetType() != metricpb.Type_Timer || m.GetScope() != metricpb.Scope_Global {
		t.Errorf("type %v scope %v, want Timer Global", m.GetType(), m.GetScope())
	}
	data := m.GetHistogram().GetTDigest()
	if data.GetCompression() != d.Compression() || data.GetMin() != d.Min() || data.GetMax() != d.Max() {
		t.Errorf("compression, min, max = %v, %v, %v; want %v, %v, %v", data.GetCompression(), data.GetMin(), data.GetMax(), d.Compression(), d.Min(), d.Max())
	}
	cents := d.AppendCentroids(nil)
	if len(data.GetMainCentroids()) != len(cents) {
		t.Fatalf("%d centroids sent, the digest has %d", len(data.GetMainCentroids()), len(cents))
	}
	recip := 0.0
	listed := 0
	for i, c := range cents {
		pc := data.GetMainCentroids()[i]
		if len(pc.GetSamples()) > 0 {
			listed++
		}
		if pc.GetMean() != c.Mean || pc.GetWeight() != c.Weight {
			t.Fatalf("centroid %d: sent %v/%v, want %v/%v", i, pc.GetMean(), pc.GetWeight(), c.Mean, c.Weight)
		}
		wantSamples := []float64(nil)
		if c.Single && c.Weight > 1 {
			wantSamples = []float64{c.Mean}
		}
		if !slices.Equal(pc.GetSamples(), wantSamples) {
			t.Fatalf("centroid %d (single %v): samples %v", i, c.Single, pc.GetSamples())
		}
		recip += c.Weight / c.Mean
	}
	if listed == 0 {
		t.Error("no centroid lists its value: the test data should have single-valued centroids of several samples")
	}
	if data.GetReciprocalSum() != recip {
		t.Errorf("reciprocalSum %v, want %v", data.GetReciprocalSum(), recip)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back metricpb.Metric
	if err := proto.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	f, err := DecodeMetricpb(&back)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Digest.AppendCentroids(nil); !slices.Equal(got, cents) {
		t.Error("the centroids came back different")
	}
	for q := 0.0; q <= 1; q += 0.01 {
		if f.Digest.Quantile(q) != d.Quantile(q) {
			t.Fatalf("Quantile(%v) = %v, sent %v", q, f.Digest.Quantile(q), d.Quantile(q))
		}
	}
	if f.Digest.Count() != d.Count() || f.Digest.Min() != d.Min() || f.Digest.Max() != d.Max() {
		t.Errorf("Count, Min, Max = %v, %v, %v; sent %v, %v, %v", f.Digest.Count(), f.Digest.Min(), f.Digest.Max(), d.Count(), d.Min(), d.Max())
	}

	// An empty digest goes as v14's empty one.
	m, err = EncodeMetricpb(&samplers.Forwarded{Type: samplers.HistogramMetric, Name: "h", Digest: tdigest.New()})
	if err != nil {
		t.Fatal(err)
	}
	if e := m.GetHistogram().GetTDigest(); len(e.GetMainCentroids()) != 0 || !math.IsInf(e.GetMin(), 1) || !math.IsInf(e.GetMax(), -1) {
		t.Errorf("empty digest sent as %v", e)
	}
}

// Sets go in version 1 of the sketch encoding, which v14 reads: sparse
// ones as they are, dense ones as 4-bit offsets from the smallest register.
func TestEncodeMetricpbSets(t *testing.T) {
	t.Run("sparse", func(t *testing.T) {
		s := pbSketch("u", 100)
		v2, _ := s.MarshalBinary()
		m, err := EncodeMetricpb(&samplers.Forwarded{Type: samplers.SetMetric, Scope: samplers.MixedScope, Name: "s", Set: s})
		if err != nil {
			t.Fatal(err)
		}
		b := m.GetSet().GetHyperLogLog()
		if m.GetScope() != metricpb.Scope_Mixed || b[0] != 1 || !bytes.Equal(b[1:], v2[1:]) {
			t.Errorf("scope %v, sketch %x; want Mixed and version 1 of %x", m.GetScope(), b[:8], v2[:8])
		}
	})
	t.Run("dense", func(t *testing.T) {
		s := pbSketch("u", 30_000)
		v2, _ := s.MarshalBinary()
		if v2[3] != 0 {
			t.Fatal("a sketch of 30,000 members is not dense")
		}
		m, err := EncodeMetricpb(&samplers.Forwarded{Type: samplers.SetMetric, Scope: samplers.GlobalOnly, Name: "s", Set: s})
		if err != nil {
			t.Fatal(err)
		}
		v1 := m.GetSet().GetHyperLogLog()
		regs := v2[8:]
		base := slices.Min(regs)
		if m.GetScope() != metricpb.Scope_Global || len(v1) != 8+len(regs)/2 || v1[0] != 1 || v1[1] != 14 || v1[2] != base || v1[3] != 0 ||
			binary.BigEndian.Uint32(v1[4:8]) != uint32(len(regs)/2) {
			t.Fatalf("scope %v, header %x, %d bytes; want Global, 01 0e %02x 00 %08x, %d bytes", m.GetScope(), v1[:8], len(v1), base, len(regs)/2, 8+len(regs)/2)
		}
		// Decoded back, each register is the original, cut at base+15.
		clipped := bytes.Clone(v2)
		cut := 0
		for i := 8; i < len(clipped); i++ {
			if clipped[i] > base+15 {
				clipped[i] = base + 15
				cut++
			}
		}
		f, err := DecodeMetricpb(m)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := f.Set.MarshalBinary()
		if !bytes.Equal(got, clipped) {
			t.Error("the registers came back different from the originals cut at base+15")
		}
		if est, want := float64(f.Set.Estimate()), float64(s.Estimate()); math.Abs(est-want) > 0.01*want {
			t.Errorf("estimate %v after the round trip, %v before (%d registers cut)", est, want, cut)
		}
	})
	t.Run("dense cut", func(t *testing.T) {
		// Registers 3 + i mod 40: the base is 3, and those over 18 are
		// cut to 18.
		const m = 1 << 14
		v2 := binary.BigEndian.AppendUint32([]byte{2, 14, 0, 0}, m)
		want := binary.BigEndian.AppendUint32([]byte{1, 14, 3, 0}, m/2)
		for i := 0; i < m; i += 2 {
			hi, lo := byte(3+i%40), byte(3+(i+1)%40)
			v2 = append(v2, hi, lo)
			want = append(want, min(hi-3, 15)<<4|min(lo-3, 15))
		}
		s := hyperloglog.New14()
		if err := s.UnmarshalBinary(v2); err != nil {
			t.Fatal(err)
		}
		got, err := appendSketchV1([]byte("prefix"), s)
		if err != nil {
			t.Fatal(err)
		}
		if string(got[:6]) != "prefix" || !bytes.Equal(got[6:], want) {
			t.Errorf("version 1 encoding differs from the registers cut at base+15")
		}
	})
}

// The accuracy of the global aggregation over gRPC: 16 local digests,
// each sent as MergingDigestData (encoded and decoded on the wire) and
// merged, keep quantiles within the bounds our t-digest is tested to
// (tdigest's TestAccuracy: rank error 0.001 at p50 and p90, 0.0002 at
// p99, 0.0001 at p99.9; p99 relative error 1%), exact extremes and
// count, and exact values for integer data.
func TestMetricpbMergeAccuracy(t *testing.T) {
	checkMergeAccuracy(t, true, func(t *testing.T, d *tdigest.TDigest) *tdigest.TDigest {
		m, err := EncodeMetricpb(&samplers.Forwarded{Type: samplers.HistogramMetric, Name: "h", Digest: d})
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		f, err := DecodeMetricpbWire(b)
		if err != nil {
			t.Fatal(err)
		}
		return f.Digest
	})
}

// checkMergeAccuracy splits 100,000 samples of each test distribution
// over 16 local digests, sends each through wire (encoded and decoded as
// a global receives it), merges them into one of ours and checks it
// against the exact quantiles: our rank error bounds at p50, p90, p99 and
// p99.9, 1% relative error at p99 (unimodal distributions), and exact
// count (the weights), min and max. With exactValues, integer data also
// keeps every quantile an exact sample value.
func checkMergeAccuracy(t *testing.T, exactValues bool, wire func(*testing.T, *tdigest.TDigest) *tdigest.TDigest) {
	const n, parts = 100_000, 16
	bounds := []struct{ q, maxRankErr float64 }{{0.5, 0.001}, {0.9, 0.001}, {0.99, 0.0002}, {0.999, 0.0001}}
	for di, dist := range []struct {
		name     string
		unimodal bool
		discrete bool
		gen      func(r *pcg) float64
	}{
		{"uniform", true, false, func(r *pcg) float64 { return r.float() * 1000 }},
		{"lognormal", true, false, func(r *pcg) float64 { return math.Exp(3 + 1.2*r.norm()) }},
		{"exponential", true, false, func(r *pcg) float64 { return -50 * math.Log(1-r.float()) }},
		{"pareto", true, false, func(r *pcg) float64 { return math.Pow(1-r.float(), -1/1.5) }},
		{"mixture 90/10", false, false, func(r *pcg) float64 {
			if r.float() < 0.1 {
				return 900 + 50*r.norm()
			}
			return 10 + 2*r.norm()
		}},
		{"integers 0..20", false, true, func(r *pcg) float64 { return math.Floor(r.float() * 21) }},
	} {
		t.Run(dist.name, func(t *testing.T) {
			t.Parallel()
			r := newPCG(uint64(di + 1))
			xs := make([]float64, n)
			locals := make([]*tdigest.TDigest, parts)
			for i := range locals {
				locals[i] = tdigest.New()
			}
			for i := range xs {
				xs[i] = dist.gen(r)
				locals[i%parts].Add(xs[i], 1)
			}
			global := tdigest.New()
			for i, d := range locals {
				got := wire(t, d)
				if got.Count() != d.Count() || got.Min() != d.Min() || got.Max() != d.Max() {
					t.Fatalf("part %d: count, min, max %v, %v, %v on arrival; sent %v, %v, %v", i, got.Count(), got.Min(), got.Max(), d.Count(), d.Min(), d.Max())
				}
				global.Merge(got)
			}
			slices.Sort(xs)
			for _, bd := range bounds {
				v := global.Quantile(bd.q)
				if e := pbRankError(xs, bd.q, v); e > bd.maxRankErr {
					t.Errorf("q=%v: rank error %.6f > %v", bd.q, e, bd.maxRankErr)
				}
			}
			if dist.unimodal {
				want := xs[int(math.Ceil(0.99*n))-1]
				if rel := math.Abs(global.Quantile(0.99)-want) / want; rel > 0.01 {
					t.Errorf("p99 relative error %.4f%% > 1%%", 100*rel)
				}
			}
			if global.Min() != xs[0] || global.Max() != xs[n-1] || global.Count() != n {
				t.Errorf("Min, Max, Count = %v, %v, %v; want %v, %v, %d", global.Min(), global.Max(), global.Count(), xs[0], xs[n-1], n)
			}
			if dist.discrete && exactValues {
				for q := 0.0; q <= 1; q += 0.001 {
					if v := global.Quantile(q); v != math.Trunc(v) || pbRankError(xs, q, v) > 0 {
						t.Fatalf("Quantile(%v) = %v: not the exact sample value", q, v)
					}
				}
			}
		})
	}
}

// pbRankError is the distance between q and the empirical rank interval
// [#(x<v)/n, #(x<=v)/n] of v in sorted.
func pbRankError(sorted []float64, q, v float64) float64 {
	n := float64(len(sorted))
	lo, _ := slices.BinarySearch(sorted, v)
	hi := lo
	for hi < len(sorted) && sorted[hi] <= v {
		hi++
	}
	switch {
	case q < float64(lo)/n:
		return float64(lo)/n - q
	case q > float64(hi)/n:
		return q - float64(hi)/n
	}
	return 0
}

// pcg is a small deterministic generator for the tests' samples.
type pcg struct{ state uint64 }

func newPCG(seed uint64) *pcg { return &pcg{state: seed*0x9e3779b97f4a7c15 + 1} }

// next is a 64-bit output of splitmix64.
func (r *pcg) next() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// float is uniform in [0, 1).
func (r *pcg) float() float64 { return float64(r.next()>>11) / (1 << 53) }

// norm is standard normal (Box-Muller).
func (r *pcg) norm() float64 {
	u := 1 - r.float()
	return math.Sqrt(-2*math.Log(u)) * math.Cos(2*math.Pi*r.float())
}
