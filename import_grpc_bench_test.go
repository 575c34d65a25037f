package veneur

import (
	"context"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/forward/forwardrpc"
	"github.com/veneur/veneur/forward/metricpb"
	"github.com/veneur/veneur/internal/grpcwire"
)

// smallDigestWire is n histograms as a v14 local forwards the series that
// saw a handful of samples in an interval, in their wire form, over 1,000
// series of 2 tags: a MergingDigestData of 5 centroids of one sample each
// (weight 1, no samples listed), compression 100, with min, max and
// reciprocalSum, scope Mixed.
func smallDigestWire(tb testing.TB, n int) []grpcwire.Message {
	tb.Helper()
	out := make([]grpcwire.Message, n)
	x := uint64(12345)
	rnd := func() float64 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return float64(x>>11) / (1 << 53)
	}
	for i := range out {
		vals := make([]float64, 5)
		for j := range vals {
			vals[j] = 1 + 500*rnd()*rnd()
		}
		slices.Sort(vals)
		d := &metricpb.MergingDigestData{Compression: 100, Min: vals[0], Max: vals[4]}
		for _, v := range vals {
			d.MainCentroids = append(d.MainCentroids, &metricpb.Centroid{Mean: v, Weight: 1})
			d.ReciprocalSum += 1 / v
		}
		s := i % 1000
		m := &metricpb.Metric{
			Name: "svc.request.latency." + strconv.Itoa(s), Tags: []string{"env:prod", "shard:" + strconv.Itoa(s%16)},
			Type: metricpb.Type_Histogram, Scope: metricpb.Scope_Mixed,
			Value: &metricpb.Metric_Histogram{Histogram: &metricpb.HistogramValue{TDigest: d}},
		}
		b, err := proto.Marshal(m)
		if err != nil {
			tb.Fatal(err)
		}
		out[i].B = b
	}
	return out
}

// BenchmarkGRPCImportMerge is a global's gRPC import of small digests, from
// the wire to the workers' digests: a client streams calls of 10,000
// histograms of 5 samples over 1,000 series (smallDigestWire) with
// SendMetricsV2, and the server receives, decodes and merges them into a
// pool of 2 workers, whose intervals are collected after each call (as if
// each call were an interval of 10 locals). The client sends bytes encoded
// once (grpcwire), so that most of the process's CPU is the server's. It
// reports series merged per second and per CPU-second of the process.
func BenchmarkGRPCImportMerge(b *testing.B) {
	p := newWorkerPool(2, 0)
	p.start(func() {})
	defer p.stop()
	srv, err := forward.NewGRPCServer(forward.NewImporter(p, forward.ImporterConfig{}), forward.GRPCServerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.ServeGRPC(ln); err != nil {
		b.Fatal(err)
	}
	defer srv.Stop(context.Background())
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := forwardrpc.NewForwardClient(conn)
	raw := smallDigestWire(b, 10_000)
	b.ReportAllocs()
	var merged uint64
	cpu := cpuTime(b)
	for b.Loop() {
		stream, err := client.SendMetricsV2(context.Background(), grpc.ForceCodecV2(grpcwire.Codec{}))
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
		ivs, _ := p.collect(func(int, time.Duration) {})
		for _, iv := range ivs {
			merged += iv.imported
		}
	}
	if merged != uint64(b.N)*uint64(len(raw)) {
		b.Fatalf("%d series merged, want %d", merged, b.N*len(raw))
	}
	used := cpuTime(b) - cpu
	b.ReportMetric(float64(merged)/b.Elapsed().Seconds(), "metrics/s")
	b.ReportMetric(float64(merged)/used.Seconds(), "metrics/CPU-s")

}

// BenchmarkWorkerMergeCompact is one worker merging imported small
// digests (smallDigestWire: 1,500 series of 5 samples) from Compacts, as
// the gRPC import hands them over, 256 calls per interval (16 locals
// sending 16 times a second): the workers.
// share of a global's CPU. It reports series merged per second.
func BenchmarkWorkerMergeCompact(b *testing.B) {
	raw := smallDigestWire(b, 1500)
	p := newWorkerPool(1, 0)
	w := p.workers[0]
	var c forward.Compact
	for i := range raw {
		f, err := forward.DecodeMetricpbWire(raw[i].B)
		if err != nil || !c.AddForwarded(&f) {
			b.Fatal(err)
		}
	}
	idx := make([]int32, c.Len())
	hashes := make([]uint64, c.Len())
	for i := range idx {
		idx[i] = int32(i)
		hashes[i], _ = p.route(c.Key(i))
	}
	n := 0
	for i := 0; b.Loop(); i++ {
		w.mergeCompact(&c, idx, hashes)
		n += len(idx)
		if i%256 == 255 {
			w.swap()
			w.prepare()
			w.sweep()
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "series/s")
}
