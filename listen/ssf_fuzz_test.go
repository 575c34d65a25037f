package listen

import (
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/ssf"
)

// ssfFuzzSeeds are spans for FuzzSSFDatagram's corpus: samples of every
// kind, and names, members and tags that DogStatsD gives a meaning of its
// own (events, service checks, separators, a line's trailing '\r').
func ssfFuzzSeeds() []*ssf.SSFSpan {
	return []*ssf.SSFSpan{
		{TraceId: 1, Id: 2, StartTimestamp: 10, EndTimestamp: 20, Name: "op", Metrics: []*ssf.SSFSample{
			{Metric: ssf.SSFSample_COUNTER, Name: "hits", Value: 1, SampleRate: 0.1, Tags: map[string]string{"a": "b", "flag": ""}},
			{Metric: ssf.SSFSample_GAUGE, Name: "temp", Value: 1e6},
			{Metric: ssf.SSFSample_HISTOGRAM, Name: "lat", Value: 0.1},
			{Metric: ssf.SSFSample_SET, Name: "users", Message: "a:b"},
			{Metric: ssf.SSFSample_STATUS, Name: "up", Status: ssf.SSFSample_CRITICAL, Message: "down"},
		}},
		{Metrics: []*ssf.SSFSample{
			{Metric: ssf.SSFSample_COUNTER, Name: "_e{1,1}", Value: 1},
			{Metric: ssf.SSFSample_COUNTER, Name: "_sc", Value: 1},
			{Metric: ssf.SSFSample_GAUGE, Name: "g\r", Value: 1},
			{Metric: ssf.SSFSample_SET, Name: "s", Message: "m\r"},
			{Metric: ssf.SSFSample_COUNTER, Name: "c", Value: 1, Tags: map[string]string{"k": "v\r"}},
			{Metric: ssf.SSFSample_COUNTER, Name: "c", Value: float32(math.Inf(1))},
			{Metric: ssf.SSFSample_COUNTER, Name: "a|b", Value: 1},
		}},
	}
}

// FuzzSSFDatagram feeds arbitrary datagrams to the SSF listener's decoding.
// Nothing may panic; a datagram that does not decode is counted and hands
// nothing over; every sample of a span that decodes becomes a line, a
// service check, or an invalid_metric count; and every line parses as a
// DogStatsD metric with its sample's name, type, value or set member, and
// sample rate.
func FuzzSSFDatagram(f *testing.F) {
	for _, sp := range ssfFuzzSeeds() {
		f.Add(marshalSpan(f, sp))
	}
	f.Add([]byte("not a protobuf \xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		snk := newSink(t)
		l, err := NewSSF(SSFConfig{Address: "127.0.0.1:0", MaxLength: 1 << 16}, snk.newIngester, Options{Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		l.handle(snk.newIngester(), data, nil)
		got := snk.get()
		rec := &statstest.Recorder{}
		l.Report(rec)

		var span ssf.SSFSpan
		if proto.Unmarshal(data, &span) != nil {
			if n := rec.Sum("ssf.error_total", "cause:decode"); n != 1 {
				t.Fatalf("undecodable datagram counted %d times under decode", n)
			}
			if len(got.lines)+len(got.checks)+len(got.spans) != 0 {
				t.Fatalf("undecodable datagram handed over %+v", got)
			}
			return
		}
		invalid := rec.Sum("ssf.error_total", "cause:invalid_metric")
		if n := int64(len(got.lines)+len(got.checks)) + invalid; n != int64(len(span.Metrics)) {
			t.Fatalf("%d samples gave %d lines, %d checks and %d invalid_metric", len(span.Metrics), len(got.lines), len(got.checks), invalid)
		}
		// The lines and checks follow the samples in order; a sample that
		// matches neither was refused.
		var p samplers.Parser
		lines, checks := got.lines, got.checks
		for _, m := range span.Metrics {
			if m.Metric == ssf.SSFSample_STATUS {
				if len(checks) > 0 && checks[0].Name == m.Name && m.Name != "" {
					checks = checks[1:]
				}
				continue
			}
			if len(lines) > 0 && ssfLineCarries(t, &p, lines[0], m) {
				lines = lines[1:]
			}
		}
		if len(lines) != 0 || len(checks) != 0 {
			t.Fatalf("lines %q and checks %+v match no sample of %v", lines, checks, span.Metrics)
		}
	})
}

// ssfLineCarries reports whether line is m as a DogStatsD line. A line that
// does not parse as a metric fails the test: no sample may become one.
func ssfLineCarries(t *testing.T, p *samplers.Parser, line string, m *ssf.SSFSample) bool {
	t.Helper()
	var l samplers.Line
	if err := p.ParseLine([]byte(line), &l); err != nil {
		t.Fatalf("sample %v became line %q, which does not parse as a metric: %v", m, line, err)
	}
	want := map[ssf.SSFSample_Metric]samplers.MetricType{
		ssf.SSFSample_COUNTER: samplers.CounterMetric, ssf.SSFSample_GAUGE: samplers.GaugeMetric,
		ssf.SSFSample_HISTOGRAM: samplers.HistogramMetric, ssf.SSFSample_SET: samplers.SetMetric,
	}
	if string(l.Name) != m.Name || l.Type != want[m.Metric] {
		return false
	}
	if l.Type == samplers.SetMetric {
		return string(l.Values) == m.Message
	}
	rate := float32(1)
	if m.SampleRate > 0 && m.SampleRate < 1 {
		rate = m.SampleRate
	}
	return !l.Packed && float32(l.Value) == m.Value && float32(l.SampleRate) == rate
}
