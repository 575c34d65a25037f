package forward

import (
	"context"
	"math"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/forward/metricpb"
	"github.com/veneur/veneur/internal/grpcwire"
	"github.com/veneur/veneur/samplers"
)

// benchMerger counts the series it is given, and keeps nothing.
type benchMerger struct{ n atomic.Int64 }

func (m *benchMerger) Merge(metrics []samplers.Forwarded) error {
	m.n.Add(int64(len(metrics)))
	return nil
}

// benchFlush is a local's flush as v14 sends it: 1,000 series, 60%
// counters, 30% histograms and timers of 200 samples each (about 100
// centroids once encoded), 10% sets of 50 members, each with three tags.
func benchFlush(b *testing.B) []*metricpb.Metric {
	b.Helper()
	var out []*metricpb.Metric
	r := newPCG(7)
	for i := range 1000 {
		name := "service.metric." + strconv.Itoa(i)
		tags := []string{"env:prod", "region:eu-west-1", "shard:" + strconv.Itoa(i%16)}
		var f samplers.Forwarded
		switch {
		case i%10 < 6:
			f = samplers.Forwarded{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Counter: float64(i)}
		case i%10 < 9:
			vals := make([]float64, 200)
			for j := range vals {
				vals[j] = 20 * r.float() * r.float()
			}
			f = samplers.Forwarded{Type: samplers.TimerMetric, Digest: pbDigest(b, vals...)}
		default:
			f = samplers.Forwarded{Type: samplers.SetMetric, Set: pbSketch(name, 50)}
		}
		f.Name, f.Tags = name, tags
		m, err := EncodeMetricpb(&f)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// BenchmarkGRPCImport is the gRPC import path over loopback: a client
// streams a flush of 1,000 series with SendMetricsV2 (each with a new
// batch id), and the server receives, decodes (DecodeMetricpb) and merges
// them into a Merger that only counts them. It reports series merged per
// second.
func BenchmarkGRPCImport(b *testing.B) {
	m := &benchMerger{}
	h := startGRPC(b, m, ImporterConfig{}, GRPCServerConfig{})
	flush := benchFlush(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		ctx := metadata.AppendToOutgoingContext(context.Background(), BatchMetadataKey, "bench-"+strconv.Itoa(i))
		stream, err := h.client.SendMetricsV2(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for _, pm := range flush {
			if err := stream.Send(pm); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := stream.CloseAndRecv(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(m.n.Load())/b.Elapsed().Seconds(), "metrics/s")
}

// BenchmarkDecodeMetricpb is the decoding of the same flush alone.
func BenchmarkDecodeMetricpb(b *testing.B) {
	flush := benchFlush(b)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for _, pm := range flush {
			if _, err := DecodeMetricpb(pm); err != nil {
				b.Fatal(err)
			}
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "metrics/s")
}

// smallDigests is n histograms as a v14 local forwards the series that saw
// a handful of samples in an interval, over 1,000 series (2 tags each): a
// MergingDigestData of 5 centroids of one sample each (weight 1, no
// samples listed), compression 100, with min, max and reciprocalSum, scope
// Mixed. It returns the messages and their wire bytes.
func smallDigests(tb testing.TB, n int) ([]*metricpb.Metric, []grpcwire.Message) {
	tb.Helper()
	r := newPCG(11)
	ms := make([]*metricpb.Metric, n)
	raw := make([]grpcwire.Message, n)
	for i := range ms {
		cents := make([]*metricpb.Centroid, 5)
		lo, hi, recip := math.Inf(1), math.Inf(-1), 0.0
		vals := make([]float64, 5)
		for j := range vals {
			vals[j] = 1 + 500*r.float()*r.float()
		}
		slices.Sort(vals)
		for j, v := range vals {
			cents[j] = &metricpb.Centroid{Mean: v, Weight: 1}
			lo, hi, recip = min(lo, v), max(hi, v), recip+1/v
		}
		s := i % 1000
		ms[i] = &metricpb.Metric{
			Name: "svc.request.latency." + strconv.Itoa(s), Tags: []string{"env:prod", "shard:" + strconv.Itoa(s%16)},
			Type: metricpb.Type_Histogram, Scope: metricpb.Scope_Mixed,
			Value: &metricpb.Metric_Histogram{Histogram: &metricpb.HistogramValue{TDigest: &metricpb.MergingDigestData{
				MainCentroids: cents, Compression: 100, Min: lo, Max: hi, ReciprocalSum: recip,
			}}},
		}
		b, err := proto.Marshal(ms[i])
		if err != nil {
			tb.Fatal(err)
		}
		raw[i].B = b
	}
	return ms, raw
}

// reportCPU reports metrics per CPU-second of the whole process (the
// client's sending as well as the server's receiving, decoding and
// merging), from the CPU time at start.
func reportCPU(b *testing.B, start time.Duration, ok bool, metrics int64) {
	end, ok2 := processCPU()
	if ok && ok2 && end > start {
		b.ReportMetric(float64(metrics)/(end-start).Seconds(), "metrics/CPU-s")
	}
}

// BenchmarkGRPCImportSmallDigests is the gRPC import path of small
// digests: a client streams calls of 10,000 histograms of 5 samples each
// (smallDigests) with SendMetricsV2, each with a new batch id, and the
// server receives, decodes and hands them to a Merger that only counts
// them. The client sends bytes encoded once (grpcwire), so that most of
// the process's CPU is the server's. It reports series per second and per
// CPU-second of the process.
func BenchmarkGRPCImportSmallDigests(b *testing.B) {
	m := &benchMerger{}
	h := startGRPC(b, m, ImporterConfig{}, GRPCServerConfig{})
	_, raw := smallDigests(b, 10_000)
	b.ReportAllocs()
	cpu, ok := processCPU()
	for i := 0; b.Loop(); i++ {
		ctx := metadata.AppendToOutgoingContext(context.Background(), BatchMetadataKey, "bench-"+strconv.Itoa(i))
		stream, err := h.client.SendMetricsV2(ctx, grpc.ForceCodecV2(grpcwire.Codec{}))
		if err != nil {
			b.Fatal(err)
		}
		for j := range raw {
			if err := stream.SendMsg(&raw[j]); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := stream.CloseAndRecv(); err != nil {
			b.Fatal(err)
		}
	}
	n := m.n.Load()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "metrics/s")
	reportCPU(b, cpu, ok, n)
}

// BenchmarkDecodeSmallDigests is the decoding of one small digest
// (smallDigests) from its bytes: by the generated code then
// DecodeMetricpb (generated), as the import did before it decoded the
// bytes itself (wire), and into a Compact (compact).
func BenchmarkDecodeSmallDigests(b *testing.B) {
	_, raw := smallDigests(b, 1000)
	b.Run("generated", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			var m metricpb.Metric
			if err := proto.Unmarshal(raw[i%len(raw)].B, &m); err != nil {
				b.Fatal(err)
			}
			if _, err := DecodeMetricpb(&m); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("compact", func(b *testing.B) {
		var d wireDecoder
		c := newCompact()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if i%len(raw) == 0 {
				c.keys, c.series, c.cents = c.keys[:0], c.series[:0], c.cents[:0]
			}
			if !d.fastCompact(raw[i%len(raw)].B, c) {
				b.Fatal("not the fast path")
			}
			i++
		}
	})
	b.Run("wire", func(b *testing.B) {
		var d wireDecoder
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := d.decode(raw[i%len(raw)].B); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
