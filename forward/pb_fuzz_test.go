package forward

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/forward/metricpb"
	"github.com/veneur/veneur/samplers"
)

// FuzzDecodeMetricpb feeds bytes to the gRPC import's decoding path: a
// protobuf Metric, then DecodeMetricpb. Whatever the bytes, it must not
// panic, must refuse with an error of a counted kind, and what it accepts
// must be a well-formed series that encodes back (EncodeMetricpb) to one
// that decodes the same. The seed corpus is in testdata/fuzz; regenerate
// it with
//
//	FORWARD_WRITE_CORPUS=1 go test -run TestWriteMetricpbFuzzCorpus ./forward/
func FuzzDecodeMetricpb(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var m metricpb.Metric
		if err := proto.Unmarshal(data, &m); err != nil {
			return
		}
		got, err := DecodeMetricpb(&m)
		if err != nil {
			if !errors.Is(err, ErrName) && !errors.Is(err, ErrType) && !errors.Is(err, ErrTags) && !errors.Is(err, ErrValue) {
				t.Fatalf("error %v is of no counted kind", err)
			}
			return
		}
		checkForwarded(t, got)
		pm, err := EncodeMetricpb(&got)
		if err != nil {
			// Only a counter beyond int64 after the float64 rounding
			// (an int64 near 2^63) may not go back.
			if got.Type != samplers.CounterMetric || !errors.Is(err, ErrCounterRange) || math.Abs(got.Counter) < 0x1p62 {
				t.Fatalf("accepted %v %q does not encode back: %v", got.Type, got.Name, err)
			}
			return
		}
		b, err := proto.Marshal(pm)
		if err != nil {
			t.Fatalf("the re-encoded series does not marshal: %v", err)
		}
		var back metricpb.Metric
		if err := proto.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		again, err := DecodeMetricpb(&back)
		if err != nil {
			t.Fatalf("the re-encoded series does not decode: %v", err)
		}
		if again.Type != got.Type || again.Scope != got.Scope || again.Name != got.Name || !slices.Equal(again.Tags, got.Tags) || again.Counter != got.Counter {
			t.Fatalf("round trip changed the series: %+v then %+v", got, again)
		}
		if got.Digest != nil && !slices.Equal(again.Digest.AppendCentroids(nil), got.Digest.AppendCentroids(nil)) {
			t.Fatal("round trip changed the centroids")
		}
	})
}

// checkForwarded checks what DecodeMetricpb accepted.
func checkForwarded(t *testing.T, f samplers.Forwarded) {
	t.Helper()
	if f.Name == "" || !slices.IsSorted(f.Tags) {
		t.Fatalf("accepted name %q, tags %q", f.Name, f.Tags)
	}
	for _, tag := range f.Tags {
		if tag == "" || strings.Contains(tag, ",") {
			t.Fatalf("accepted tag %q", tag)
		}
	}
	switch f.Type {
	case samplers.CounterMetric:
		if f.Scope != samplers.GlobalOnly || math.IsNaN(f.Counter) || math.IsInf(f.Counter, 0) {
			t.Fatalf("counter %+v", f)
		}
	case samplers.HistogramMetric, samplers.TimerMetric:
		d := f.Digest
		if f.Scope != samplers.MixedScope || d == nil {
			t.Fatalf("%v without a digest, or scope %v", f.Type, f.Scope)
		}
		if d.Count() == 0 {
			return
		}
		lo, hi := d.Min(), d.Max()
		if !(lo <= hi) {
			t.Fatalf("min %v > max %v", lo, hi)
		}
		prev := math.Inf(-1)
		for q := 0.0; q <= 1; q += 0.125 {
			v := d.Quantile(q)
			if !(v >= lo && v <= hi) || v < prev {
				t.Fatalf("Quantile(%v) = %v: outside [%v, %v] or below the one before (%v)", q, v, lo, hi, prev)
			}
			prev = v
		}
	case samplers.SetMetric:
		if f.Scope != samplers.MixedScope || f.Set == nil {
			t.Fatalf("set without a sketch, or scope %v", f.Scope)
		}
		f.Set.Estimate()
	default:
		t.Fatalf("accepted type %v", f.Type)
	}
}

// TestWriteMetricpbFuzzCorpus regenerates the committed seed corpora of
// FuzzDecodeMetricpb and FuzzDecodeMetricpbWire: valid series of each type
// and scope, and truncated and corrupted ones; for the wire decoder also
// the unusual encodings of unusualEncodings.
func TestWriteMetricpbFuzzCorpus(t *testing.T) {
	if os.Getenv("FORWARD_WRITE_CORPUS") == "" {
		t.Skip("set FORWARD_WRITE_CORPUS=1 to regenerate testdata/fuzz/FuzzDecodeMetricpb and FuzzDecodeMetricpbWire")
	}
	dirs := []string{filepath.Join("testdata", "fuzz", "FuzzDecodeMetricpb"), filepath.Join("testdata", "fuzz", "FuzzDecodeMetricpbWire")}
	writeIn := func(dir, name string, b []byte) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, b []byte) {
		for _, dir := range dirs {
			writeIn(dir, name, b)
		}
	}
	for _, tc := range unusualEncodings() {
		name := strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
				return r
			case r == ' ' || r == '-':
				return '-'
			}
			return -1
		}, tc.name)
		writeIn(dirs[1], "unusual-"+name, tc.wire)
	}
	marshal := func(m *metricpb.Metric) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	dense, _ := pbSketch("u", 100_000).MarshalBinary()
	v1, err := appendSketchV1(nil, pbSketch("u", 100_000))
	if err != nil {
		t.Fatal(err)
	}
	local := pbCounter("local", 1)
	local.Scope = metricpb.Scope_Local
	seeds := map[string]*metricpb.Metric{
		"counter":       pbCounter("requests", 42, "a:1", "b"),
		"counter-min":   pbCounter("c", math.MinInt64),
		"gauge":         pbGauge("temperature", 21.5),
		"counter-local": local,
		"histogram": pbHisto("latency", metricpb.Type_Histogram, metricpb.Scope_Mixed, 0.5, 9,
			&metricpb.Centroid{Mean: 1, Weight: 1}, &metricpb.Centroid{Mean: 4, Weight: 3.5}, &metricpb.Centroid{Mean: 9, Weight: 2, Samples: []float64{9, 9}}),
		"timer-global":    pbHisto("db", metricpb.Type_Timer, metricpb.Scope_Global, 2, 2, &metricpb.Centroid{Mean: 2, Weight: 10}),
		"histogram-empty": pbHisto("idle", metricpb.Type_Histogram, metricpb.Scope_Mixed, math.Inf(1), math.Inf(-1)),
		"histogram-unsorted": pbHisto("u", metricpb.Type_Histogram, metricpb.Scope_Mixed, 0, 10,
			&metricpb.Centroid{Mean: 10, Weight: 1}, &metricpb.Centroid{Mean: 0, Weight: 1}),
		"set-sparse":   pbSet(t, "users", metricpb.Scope_Mixed, &metricpb.SetValue{HyperLogLog: sketchBytes(t, "user", 30)}),
		"set-dense-v2": pbSet(t, "users", metricpb.Scope_Global, &metricpb.SetValue{HyperLogLog: dense}),
		"set-dense-v1": pbSet(t, "users", metricpb.Scope_Mixed, &metricpb.SetValue{HyperLogLog: v1}),
	}
	for name, m := range seeds {
		b := marshal(m)
		write("valid-"+name, b)
		write("truncated-"+name, b[:len(b)*2/3])
		c := slices.Clone(b)
		c[len(c)/2] ^= 0x40
		write("corrupt-"+name, c)
	}
}
