package forward

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/veneur/veneur/forward/metricpb"
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
