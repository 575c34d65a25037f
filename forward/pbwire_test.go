package forward

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/forward/metricpb"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// seriesDiff is how a and b differ, "" when they are the same series: the
// same fields, digests with the same centroids, extremes, count, sum and
// compression, sketches with the same encoding.
func seriesDiff(a, b samplers.Forwarded) string {
	if a.Type != b.Type || a.Scope != b.Scope || a.Name != b.Name || !slices.Equal(a.Tags, b.Tags) ||
		math.Float64bits(a.Counter) != math.Float64bits(b.Counter) {
		return fmt.Sprintf("%v %v %q %q %v, and %v %v %q %q %v", a.Type, a.Scope, a.Name, a.Tags, a.Counter, b.Type, b.Scope, b.Name, b.Tags, b.Counter)
	}
	if (a.Digest == nil) != (b.Digest == nil) || (a.Set == nil) != (b.Set == nil) {
		return fmt.Sprintf("digest %v/%v, set %v/%v", a.Digest != nil, b.Digest != nil, a.Set != nil, b.Set != nil)
	}
	if a.Digest != nil {
		x, y := a.Digest, b.Digest
		if !slices.Equal(x.AppendCentroids(nil), y.AppendCentroids(nil)) {
			return fmt.Sprintf("centroids %v and %v", x.AppendCentroids(nil), y.AppendCentroids(nil))
		}
		same := func(p, q float64) bool { return math.Float64bits(p) == math.Float64bits(q) }
		if !same(x.Min(), y.Min()) || !same(x.Max(), y.Max()) || !same(x.Count(), y.Count()) || !same(x.Sum(), y.Sum()) || x.Compression() != y.Compression() {
			return fmt.Sprintf("min, max, count, sum, compression %v %v %v %v %v and %v %v %v %v %v",
				x.Min(), x.Max(), x.Count(), x.Sum(), x.Compression(), y.Min(), y.Max(), y.Count(), y.Sum(), y.Compression())
		}
	}
	if a.Set != nil {
		x, err1 := a.Set.MarshalBinary()
		y, err2 := b.Set.MarshalBinary()
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			return fmt.Sprintf("sketches differ (%v, %v)", err1, err2)
		}
	}
	return ""
}

// decodeGenerated is the decoding the gRPC import did before it read the
// bytes itself: the generated code, then DecodeMetricpb.
func decodeGenerated(b []byte) (samplers.Forwarded, error) {
	var m metricpb.Metric
	if err := proto.Unmarshal(b, &m); err != nil {
		return samplers.Forwarded{}, fmt.Errorf("%w: %v", ErrProtobuf, err)
	}
	return DecodeMetricpb(&m)
}

// checkSameDecoding fails t unless DecodeMetricpbWire answers b as the
// generated code and DecodeMetricpb do: the same series, or the same
// error.
func checkSameDecoding(t testing.TB, b []byte) (samplers.Forwarded, error) {
	t.Helper()
	want, wantErr := decodeGenerated(b)
	got, err := DecodeMetricpbWire(b)
	switch {
	case (err == nil) != (wantErr == nil):
		t.Fatalf("wire decoding: %v; generated decoding: %v", err, wantErr)
	case err != nil:
		if err.Error() != wantErr.Error() {
			t.Fatalf("wire decoding refuses with %q, the generated one with %q", err, wantErr)
		}
	default:
		if d := seriesDiff(got, want); d != "" {
			t.Fatalf("wire and generated decodings differ: %s", d)
		}
	}
	checkSameCompact(t, b, want, wantErr)
	return got, err
}

// checkSameCompact fails t unless a Compact import of b (the fast path,
// or what grpcCall does when it is not taken: the decoding, then
// AddForwarded) holds want, the series of the generated decoding, or
// nothing when wantErr is not nil.
func checkSameCompact(t testing.TB, b []byte, want samplers.Forwarded, wantErr error) {
	t.Helper()
	var (
		c Compact
		d wireDecoder
	)
	if !d.fastCompact(b, &c) {
		if f, err := d.decode(b); err == nil {
			c.AddForwarded(&f)
		}
	} else if wantErr != nil {
		t.Fatalf("the compact fast path took a series the generated decoding refuses: %v", wantErr)
	}
	switch {
	case wantErr != nil && c.Len() != 0:
		t.Fatalf("the compact decoding kept %d series of a refused one", c.Len())
	case wantErr != nil:
	case c.Len() != 1:
		t.Fatalf("the compact decoding kept %d series, want 1", c.Len())
	default:
		if diff := seriesDiff(compactSeriesOf(t, &c, 0), want); diff != "" {
			t.Fatalf("compact and generated decodings differ: %s", diff)
		}
	}
}

// compactSeriesOf is series i of c as the series it stands for
// (compactForwarded), failing t when it is malformed.
func compactSeriesOf(t testing.TB, c *Compact, i int) samplers.Forwarded {
	t.Helper()
	f, err := compactForwarded(c, i)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// compactForwarded is series i of c as the series it stands for: its key
// decoded, and a digest built from its centroids as a worker builds it.
func compactForwarded(c *Compact, i int) (samplers.Forwarded, error) {
	k, err := samplers.DecodeKey(string(c.Key(i)))
	if err != nil {
		return samplers.Forwarded{}, fmt.Errorf("compact key %q: %v", c.Key(i), err)
	}
	f := samplers.Forwarded{Type: k.Type, Scope: k.Scope, Name: k.Name, Tags: k.Tags}
	switch k.Type {
	case samplers.CounterMetric:
		f.Counter = c.Counter(i)
	case samplers.HistogramMetric, samplers.TimerMetric:
		f.Digest = tdigest.New()
		cents, lo, hi := c.Digest(i)
		if err := f.Digest.SetCentroids(cents, lo, hi); err != nil {
			return f, fmt.Errorf("compact digest: %v", err)
		}
	case samplers.SetMetric:
		f.Set = c.Set(i)
	}
	if len(f.Tags) == 0 {
		f.Tags = nil
	}
	return f, nil
}

// FuzzDecodeMetricpbWire checks the hand decoder of the gRPC import against
// the generated code: for any bytes, DecodeMetricpbWire gives the series
// that proto.Unmarshal then DecodeMetricpb give, or refuses with the same
// error (ErrProtobuf when the bytes do not parse). The seed corpus is in
// testdata/fuzz (see TestWriteMetricpbFuzzCorpus), with the unusual
// encodings of TestDecodeMetricpbWireUnusual.
func FuzzDecodeMetricpbWire(f *testing.F) {
	for _, tc := range unusualEncodings() {
		f.Add(tc.wire)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSameDecoding(t, data)
	})
}

// The encodings that v14 and our forward client send take the fast path
// (not the generated code), and decode as the generated code does.
func TestDecodeMetricpbWireFast(t *testing.T) {
	ms, _ := smallDigests(t, 3)
	big := pbDigest(t)
	for i := range 20_000 {
		big.Add(float64(i%1000)*1.5+float64(i%7), 1)
	}
	var ours []*metricpb.Metric
	for _, f := range []samplers.Forwarded{
		{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: "requests", Tags: []string{"b:2", "a:1"}, Counter: -42},
		{Type: samplers.HistogramMetric, Scope: samplers.MixedScope, Name: "latency", Tags: []string{"svc:api"}, Digest: pbDigest(t, 3, 3, 3, 1, 9)},
		{Type: samplers.TimerMetric, Scope: samplers.GlobalOnly, Name: "db", Digest: big},
		{Type: samplers.TimerMetric, Scope: samplers.MixedScope, Name: "idle", Digest: pbDigest(t)},
		{Type: samplers.SetMetric, Scope: samplers.MixedScope, Name: "users", Tags: []string{"z", "y", "x"}, Set: pbSketch("u", 40)},
		{Type: samplers.SetMetric, Scope: samplers.GlobalOnly, Name: "users", Set: pbSketch("u", 100_000)},
	} {
		m, err := EncodeMetricpb(&f)
		if err != nil {
			t.Fatal(err)
		}
		ours = append(ours, m)
	}
	v14 := pbHisto("latency", metricpb.Type_Timer, metricpb.Scope_Global, 0.5, 9,
		&metricpb.Centroid{Mean: 1, Weight: 1}, &metricpb.Centroid{Mean: 4, Weight: 3.5}, &metricpb.Centroid{Mean: 9, Weight: 2, Samples: []float64{9, 9}})
	// Extremes beyond the centroids' means, as a digest with centroids of
	// several samples has them.
	wide := pbHisto("wide", metricpb.Type_Histogram, metricpb.Scope_Mixed, -3, 12,
		&metricpb.Centroid{Mean: 1, Weight: 4}, &metricpb.Centroid{Mean: 9, Weight: 2.5})
	for i, m := range append(append(ms, ours...), v14, wide, pbCounter("n", math.MinInt64, "t")) {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var d wireDecoder
		fast, ok := d.fast(b)
		if !ok {
			t.Errorf("series %d (%v %q) did not take the fast path", i, m.GetType(), m.GetName())
			continue
		}
		want, err := decodeGenerated(b)
		if err != nil {
			t.Fatal(err)
		}
		if diff := seriesDiff(fast, want); diff != "" {
			t.Errorf("series %d: %s", i, diff)
		}
		var c Compact
		if !d.fastCompact(b, &c) {
			t.Errorf("series %d (%v %q) did not take the compact fast path", i, m.GetType(), m.GetName())
			continue
		}
		if diff := seriesDiff(compactSeriesOf(t, &c, 0), want); diff != "" {
			t.Errorf("series %d, compact: %s", i, diff)
		}
	}
}

// unusualEncodings are well-formed protobuf that no sender of ours writes:
// fields out of order, repeated, unknown, of another wire type, unpacked
// or split repeated doubles, merged messages; and malformed ones.
func unusualEncodings() []struct {
	name string
	wire []byte
} {
	cents := wireMessage(nil, 1, wireCentroid(1, 1))
	cents = wireMessage(cents, 1, wireCentroid(7, 2, 7, 7))
	extremes := wireDouble(wireDouble(nil, 3, 1), 4, 7)
	digest := append(slices.Clone(cents), extremes...)
	histo := wireMessage(nil, 1, digest)
	metric := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	name := wireString(nil, 1, "latency")
	tag := wireString(nil, 2, "svc:api")
	timer := wireVarint(nil, 3, 4)
	global := wireVarint(nil, 9, 2)
	unpacked := wireDouble(wireDouble(wireDouble(wireDouble(nil, 1, 7), 2, 2), 3, 7), 3, 7)
	split := wireDouble(wireDouble(nil, 1, 7), 2, 2)
	split = wireMessage(split, 3, protowire.AppendFixed64(nil, math.Float64bits(7)))
	split = wireDouble(split, 3, 7)
	differ := wireDouble(wireDouble(nil, 1, 7), 2, 2)
	differ = wireDouble(wireDouble(differ, 3, 7), 3, 7.5)
	nanSample := wireDouble(wireDouble(wireDouble(nil, 1, 7), 2, 2), 3, math.NaN())
	unknown := protowire.AppendTag(nil, 15, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 3)
	group := protowire.AppendTag(nil, 20, protowire.StartGroupType)
	group = append(group, unknown...)
	group = protowire.AppendTag(group, 20, protowire.EndGroupType)
	typeAsBytes := wireString(nil, 3, "x")
	counter := func(v int64) []byte { return wireMessage(nil, 5, wireVarint(nil, 1, uint64(v))) }
	sketch, _ := pbSketch("u", 30).MarshalBinary()
	set := wireMessage(nil, 8, wireString(nil, 1, string(sketch)))
	return []struct {
		name string
		wire []byte
	}{
		{"oneof first, scope before name", metric(global, wireMessage(nil, 7, histo), timer, tag, name)},
		{"name twice", metric(wireString(nil, 1, "other"), name, timer, wireMessage(nil, 7, histo))},
		{"type twice", metric(name, wireVarint(nil, 3, 3), timer, wireMessage(nil, 7, histo))},
		{"unpacked samples", metric(name, timer, wireMessage(nil, 7, wireMessage(nil, 1, append(wireMessage(nil, 1, unpacked), extremes...))))},
		{"packed and unpacked samples", metric(name, timer, wireMessage(nil, 7, wireMessage(nil, 1, append(wireMessage(nil, 1, split), extremes...))))},
		{"samples that differ", metric(name, timer, wireMessage(nil, 7, wireMessage(nil, 1, append(wireMessage(nil, 1, differ), extremes...))))},
		{"a NaN sample", metric(name, timer, wireMessage(nil, 7, wireMessage(nil, 1, append(wireMessage(nil, 1, nanSample), extremes...))))},
		{"extremes twice", metric(name, timer, wireMessage(nil, 7, wireMessage(nil, 1, append(wireDouble(wireDouble(nil, 3, -5), 4, 50), digest...))))},
		{"histogram twice (merged)", metric(name, timer, wireMessage(nil, 7, wireMessage(nil, 1, cents)), wireMessage(nil, 7, wireMessage(nil, 1, extremes)))},
		{"digest twice (merged)", metric(name, timer, wireMessage(nil, 7, append(wireMessage(nil, 1, cents), wireMessage(nil, 1, extremes)...)))},
		{"counter replaced by a histogram", metric(name, timer, counter(3), wireMessage(nil, 7, histo))},
		{"histogram replaced by a counter", metric(name, wireMessage(nil, 7, histo), counter(3))},
		{"counter twice (merged)", metric(name, counter(3), counter(-4))},
		{"counter value twice", metric(name, wireMessage(nil, 5, append(wireVarint(nil, 1, 3), wireVarint(nil, 1, 9)...)))},
		{"counter of 2^64-1", metric(name, counter(-1))},
		{"type beyond int32", metric(name, wireVarint(nil, 3, 1<<32|4), wireMessage(nil, 7, histo))},
		{"unknown field", metric(name, unknown, timer, wireMessage(nil, 7, histo))},
		{"unknown field in a digest", metric(name, timer, wireMessage(nil, 7, wireMessage(nil, 1, append(slices.Clone(digest), unknown...))))},
		{"unknown field in a centroid", metric(name, timer, wireMessage(nil, 7, wireMessage(nil, 1, append(wireMessage(nil, 1, append(wireCentroid(2, 1), unknown...)), extremes...))))},
		{"unknown group", metric(name, group, wireVarint(nil, 3, 3), set)},
		{"type as bytes (unknown)", metric(name, typeAsBytes, counter(3))},
		{"set twice", metric(name, wireVarint(nil, 3, 3), set, set)},
		{"sketch twice", metric(name, wireVarint(nil, 3, 3), wireMessage(nil, 8, append(wireString(nil, 1, "x"), wireString(nil, 1, string(sketch))...)))},
		{"empty sketch", metric(name, wireVarint(nil, 3, 3), wireMessage(nil, 8, nil))},
		{"empty counter", metric(name, wireMessage(nil, 5, nil))},
		{"empty histogram", metric(name, timer, wireMessage(nil, 7, nil))},
		{"empty digest", metric(name, timer, wireMessage(nil, 7, wireMessage(nil, 1, nil)))},
		{"invalid UTF-8 name", metric(wireString(nil, 1, "lat\xffency"), counter(1))},
		{"invalid UTF-8 tag", metric(name, wireString(nil, 2, "a\xc0"), counter(1))},
		{"field 0", metric(name, protowire.AppendVarint(nil, 0), counter(1))},
		{"truncated", metric(name, timer, wireMessage(nil, 7, histo))[:20]},
		{"packed samples of 12 bytes", metric(name, timer, wireMessage(nil, 7, wireMessage(nil, 1, append(wireMessage(nil, 1, wireMessage(wireDouble(wireDouble(nil, 1, 7), 2, 2), 3, make([]byte, 12))), extremes...))))},
		{"end group alone", metric(name, protowire.AppendTag(nil, 4, protowire.EndGroupType))},
		{"overlong varint", metric(name, []byte{3 << 3, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00})},
		{"gauge", metric(name, wireVarint(nil, 3, 1), wireMessage(nil, 6, wireDouble(nil, 1, 2)))},
		{"local", metric(name, wireVarint(nil, 9, 1), counter(1))},
		{"empty", nil},
	}
}

// Unusual and malformed encodings get the generated code's answer.
func TestDecodeMetricpbWireUnusual(t *testing.T) {
	for _, tc := range unusualEncodings() {
		t.Run(tc.name, func(t *testing.T) {
			checkSameDecoding(t, tc.wire)
		})
	}
	// Bytes that do not parse are refused as such.
	if _, err := DecodeMetricpbWire([]byte{0x0a, 0x05, 'a'}); !errors.Is(err, ErrProtobuf) || !errors.Is(err, ErrValue) {
		t.Errorf("truncated bytes: error %v, want ErrProtobuf, an ErrValue", err)
	}
}

// Each series DecodeMetricpb refuses is refused the same on the wire.
func TestDecodeMetricpbWireRefuses(t *testing.T) {
	for _, tc := range refusedSeries(t) {
		b, err := proto.Marshal(tc.m)
		if err != nil {
			continue // a nil centroid does not marshal
		}
		_, err = checkSameDecoding(t, b)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
}

// The decoded series keeps nothing of the bytes, which the gRPC server
// reuses for the next message.
func TestDecodeMetricpbWireCopies(t *testing.T) {
	sketch, _ := pbSketch("u", 30).MarshalBinary()
	for _, m := range []*metricpb.Metric{
		pbCounter("requests", 3, "b", "a"),
		pbSet(t, "users", metricpb.Scope_Mixed, &metricpb.SetValue{HyperLogLog: sketch}),
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var d wireDecoder
		f, err := d.decode(b)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := decodeGenerated(b)
		for i := range b {
			b[i] = 0xff
		}
		if diff := seriesDiff(f, want); diff != "" || strings.Contains(f.Name, "\xff") {
			t.Errorf("%s changed with the bytes it came from: %s", m.GetName(), diff)
		}
	}
}
