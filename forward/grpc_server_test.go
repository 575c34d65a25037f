package forward

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veneur/veneur/forward/forwardrpc"
	"github.com/veneur/veneur/forward/metricpb"
	"github.com/veneur/veneur/internal/grpcwire"
	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// pbMerger records what it is given and answers err. With hold set, Merge
// signals entered and waits for hold to close.
type pbMerger struct {
	mu      sync.Mutex
	calls   [][]samplers.Forwarded
	err     error
	hold    chan struct{}
	entered chan struct{}
}

func (m *pbMerger) Merge(metrics []samplers.Forwarded) error {
	if m.hold != nil {
		m.entered <- struct{}{}
		<-m.hold
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, metrics)
	return m.err
}

// series is every series merged, in order, whatever the merges: a call
// without a batch id is merged in parts as it comes.
func (m *pbMerger) series() []samplers.Forwarded {
	var out []samplers.Forwarded
	for _, c := range m.merged() {
		out = append(out, c...)
	}
	return out
}

func (m *pbMerger) merged() [][]samplers.Forwarded {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.calls)
}

// compactMerger is a pbMerger that takes Compact series, as the workers
// do: it records each series as the samplers.Forwarded it stands for.
type compactMerger struct{ *pbMerger }

func (m compactMerger) MergeCompact(c *Compact) error {
	fwd := make([]samplers.Forwarded, c.Len())
	for i := range fwd {
		f, err := compactForwarded(c, i)
		if err != nil {
			return err
		}
		fwd[i] = f
	}
	return m.Merge(fwd)
}

// mergerModes runs test with a Merger of each kind over m: one that takes
// samplers.Forwarded series, and one that takes Compact ones, which the
// server then gathers calls into.
func mergerModes(t *testing.T, test func(t *testing.T, wrap func(*pbMerger) Merger)) {
	t.Run("forwarded", func(t *testing.T) { test(t, func(m *pbMerger) Merger { return m }) })
	t.Run("compact", func(t *testing.T) { test(t, func(m *pbMerger) Merger { return compactMerger{m} }) })
}

// grpcHarness is a GRPCServer on 127.0.0.1:0 and a client connection to it.
type grpcHarness struct {
	srv    *GRPCServer
	im     *Importer
	client forwardrpc.ForwardClient
	addr   string
}

func startGRPC(t testing.TB, m Merger, icfg ImporterConfig, cfg GRPCServerConfig) *grpcHarness {
	t.Helper()
	im := NewImporter(m, icfg)
	srv, err := NewGRPCServer(im, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.ServeGRPC(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &grpcHarness{srv: srv, im: im, client: forwardrpc.NewForwardClient(conn), addr: ln.Addr().String()}
}

// streamV2 sends ms as one SendMetricsV2 call, as v14 does, with batch
// id id when it is not empty, and returns the call's status and trailer.
func streamV2(t *testing.T, client forwardrpc.ForwardClient, id string, ms ...*metricpb.Metric) (metadata.MD, error) {
	t.Helper()
	ctx := context.Background()
	if id != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, BatchMetadataKey, id)
	}
	stream, err := client.SendMetricsV2(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if err := stream.Send(m); err != nil {
			break // the server ended the call; CloseAndRecv says why
		}
	}
	_, err = stream.CloseAndRecv()
	return stream.Trailer(), err
}

func pbCounter(name string, v int64, tags ...string) *metricpb.Metric {
	return &metricpb.Metric{Name: name, Tags: tags, Type: metricpb.Type_Counter, Scope: metricpb.Scope_Global,
		Value: &metricpb.Metric_Counter{Counter: &metricpb.CounterValue{Value: v}}}
}

func pbGauge(name string, v float64) *metricpb.Metric {
	return &metricpb.Metric{Name: name, Type: metricpb.Type_Gauge, Scope: metricpb.Scope_Global,
		Value: &metricpb.Metric_Gauge{Gauge: &metricpb.GaugeValue{Value: v}}}
}

// pbHisto is a v14 histogram or timer of the given centroids.
func pbHisto(name string, typ metricpb.Type, scope metricpb.Scope, lo, hi float64, cents ...*metricpb.Centroid) *metricpb.Metric {
	return &metricpb.Metric{Name: name, Type: typ, Scope: scope,
		Value: &metricpb.Metric_Histogram{Histogram: &metricpb.HistogramValue{TDigest: &metricpb.MergingDigestData{
			MainCentroids: cents, Compression: 100, Min: lo, Max: hi,
		}}}}
}

func pbSet(t *testing.T, name string, scope metricpb.Scope, s *metricpb.SetValue) *metricpb.Metric {
	return &metricpb.Metric{Name: name, Type: metricpb.Type_Set, Scope: scope, Value: &metricpb.Metric_Set{Set: s}}
}

func sketchBytes(t *testing.T, prefix string, n int) []byte {
	t.Helper()
	b, err := pbSketch(prefix, n).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b[0] = 1 // as v14 writes it
	return b
}

// A client written against the .proto, standing in for a v14 local,
// streams every type and scope v14 forwards, and calls SendMetrics: each
// call is merged once, whole, with exact values.
func TestGRPCServerTakesV14(t *testing.T) {
	mergerModes(t, func(t *testing.T, wrap func(*pbMerger) Merger) {
		m := &pbMerger{}
		h := startGRPC(t, wrap(m), ImporterConfig{}, GRPCServerConfig{})
		stats := &statstest.Recorder{}

		flush := []*metricpb.Metric{
			pbCounter("requests", 42, "z:1", "a:2"),
			pbHisto("latency", metricpb.Type_Histogram, metricpb.Scope_Mixed, 1, 9,
				&metricpb.Centroid{Mean: 1, Weight: 1}, &metricpb.Centroid{Mean: 4, Weight: 3}, &metricpb.Centroid{Mean: 9, Weight: 1}),
			pbHisto("db.time", metricpb.Type_Timer, metricpb.Scope_Global, 0.5, 2,
				&metricpb.Centroid{Mean: 0.5, Weight: 1}, &metricpb.Centroid{Mean: 2, Weight: 2, Samples: []float64{2, 2}}),
			pbSet(t, "users", metricpb.Scope_Mixed, &metricpb.SetValue{HyperLogLog: sketchBytes(t, "user", 30)}),
			pbSet(t, "hosts", metricpb.Scope_Global, &metricpb.SetValue{HyperLogLog: sketchBytes(t, "host", 3)}),
		}
		trailer, err := streamV2(t, h.client, "", flush...)
		if err != nil {
			t.Fatalf("SendMetricsV2: %v", err)
		}
		if got := trailer.Get(trailerAccepted); !slices.Equal(got, []string{"5"}) {
			t.Errorf("trailer accepted %v, want 5", got)
		}
		if _, err := h.client.SendMetrics(context.Background(), &forwardrpc.MetricList{Metrics: []*metricpb.Metric{pbCounter("requests", -2), pbCounter("errors", 1)}}); err != nil {
			t.Fatalf("SendMetrics: %v", err)
		}

		all := m.series()
		if len(all) != 7 {
			t.Fatalf("merged %d series (%v), want 5 and 2", len(all), all)
		}
		calls := [][]samplers.Forwarded{all[:5], all[5:]}
		got := calls[0]
		if c := got[0]; c.Type != samplers.CounterMetric || c.Scope != samplers.GlobalOnly || c.Name != "requests" || c.Counter != 42 || !slices.Equal(c.Tags, []string{"a:2", "z:1"}) {
			t.Errorf("counter: %+v", c)
		}
		for i, want := range []struct {
			typ        samplers.MetricType
			cents      []tdigest.Centroid
			lo, hi, n  float64
			q50, q1, q float64
		}{
			{samplers.HistogramMetric, []tdigest.Centroid{{Mean: 1, Weight: 1, Single: true}, {Mean: 4, Weight: 3}, {Mean: 9, Weight: 1, Single: true}}, 1, 9, 5, 4, 9, 1},
			{samplers.TimerMetric, []tdigest.Centroid{{Mean: 0.5, Weight: 1, Single: true}, {Mean: 2, Weight: 2, Single: true}}, 0.5, 2, 3, 2, 2, 0.5},
		} {
			f := got[1+i]
			if f.Type != want.typ || f.Scope != samplers.MixedScope {
				t.Errorf("%s: %v %v, want %v mixed", f.Name, f.Type, f.Scope, want.typ)
			}
			if c := f.Digest.AppendCentroids(nil); !slices.Equal(c, want.cents) {
				t.Errorf("%s: centroids %+v, want %+v", f.Name, c, want.cents)
			}
			if f.Digest.Min() != want.lo || f.Digest.Max() != want.hi || f.Digest.Count() != want.n ||
				f.Digest.Quantile(0.5) != want.q50 || f.Digest.Quantile(1) != want.q1 || f.Digest.Quantile(0) != want.q {
				t.Errorf("%s: min %v max %v count %v p50 %v p100 %v p0 %v", f.Name, f.Digest.Min(), f.Digest.Max(), f.Digest.Count(),
					f.Digest.Quantile(0.5), f.Digest.Quantile(1), f.Digest.Quantile(0))
			}
		}
		for i, want := range []uint64{pbSketch("user", 30).Estimate(), pbSketch("host", 3).Estimate()} {
			f := got[3+i]
			if f.Type != samplers.SetMetric || f.Scope != samplers.MixedScope || f.Set.Estimate() != want {
				t.Errorf("%s: %v %v estimate %d, want set mixed %d", f.Name, f.Type, f.Scope, f.Set.Estimate(), want)
			}
		}
		if c := calls[1]; c[0].Counter != -2 || c[1].Name != "errors" || c[1].Counter != 1 {
			t.Errorf("SendMetrics merged %+v", c)
		}

		h.srv.Report(stats)
		for name, want := range map[string]int64{"import.requests_total": 2, "import.metrics_total": 7} {
			if n := stats.Sum(name, "transport:grpc"); n != want {
				t.Errorf("%s{transport:grpc} = %d, want %d", name, n, want)
			}
		}
		if n := stats.Timings("import.response_duration_ns", "transport:grpc", "part:merge"); n != 1 {
			t.Errorf("%d merge timings, want 1", n)
		}
		if names := stats.Names(); slices.Contains(names, "import.request_error_total") || slices.Contains(names, "import.metric_error_total") {
			t.Errorf("errors reported for good calls: %v", names)
		}
	})
}

// Series that do not decode are skipped and counted by cause; a call of
// nothing but those is refused, merging nothing.
func TestGRPCServerRejects(t *testing.T) {
	mergerModes(t, func(t *testing.T, wrap func(*pbMerger) Merger) {
		m := &pbMerger{}
		h := startGRPC(t, wrap(m), ImporterConfig{}, GRPCServerConfig{})
		stats := &statstest.Recorder{}

		local := pbCounter("local", 1)
		local.Scope = metricpb.Scope_Local
		p16, _ := pbSketch("x", 1).MarshalBinary()
		p16[1] = 16
		trailer, err := streamV2(t, h.client, "",
			pbGauge("temperature", 21.5),
			pbCounter("ok", 3),
			local,
			pbSet(t, "s", metricpb.Scope_Mixed, &metricpb.SetValue{HyperLogLog: p16}),
			pbHisto("h", metricpb.Type_Histogram, metricpb.Scope_Mixed, 0, 1, &metricpb.Centroid{Mean: 1}),
		)
		if err != nil {
			t.Fatalf("a call with one good series: %v", err)
		}
		if a, r := trailer.Get(trailerAccepted), trailer.Get(trailerRejected); !slices.Equal(a, []string{"1"}) || !slices.Equal(r, []string{"4"}) {
			t.Errorf("trailer accepted %v rejected %v, want 1 and 4", a, r)
		}
		if errs := trailer.Get(trailerErrors); len(errs) != 4 || !strings.Contains(errs[0], `"temperature"`) || !strings.Contains(errs[0], "gauge") {
			t.Errorf("trailer errors %q", errs)
		}
		if calls := m.merged(); len(calls) != 1 || len(calls[0]) != 1 || calls[0][0].Name != "ok" {
			t.Fatalf("merged %v, want the one counter", calls)
		}

		_, err = streamV2(t, h.client, "", pbGauge("a", 1), pbGauge("b", 2))
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "gauge") {
			t.Errorf("a call of gauges only: %v, want InvalidArgument naming the cause", err)
		}
		if n := len(m.merged()); n != 1 {
			t.Errorf("%d merges, want the first only", n)
		}

		h.srv.Report(stats)
		for cause, want := range map[string]int64{"gauge": 3, "scope": 1, "precision": 1, "value": 1} {
			if n := stats.Sum("import.metric_error_total", "cause:"+cause, "transport:grpc"); n != want {
				t.Errorf("import.metric_error_total{cause:%s} = %d, want %d", cause, n, want)
			}
		}
		if n := stats.Sum("import.request_error_total", "cause:rejected", "transport:grpc"); n != 1 {
			t.Errorf("request_error_total{cause:rejected} = %d, want 1", n)
		}
		if n := stats.Sum("import.requests_total", "transport:grpc"); n != 1 {
			t.Errorf("requests_total = %d, want 1", n)
		}
	})
}

// A message of SendMetricsV2 that is not a protobuf Metric costs that
// series only: the others of the call are merged, exactly, and it is
// counted under cause protobuf. Unusual but well-formed encodings (fields
// out of order, unpacked samples) are taken as the generated code takes
// them.
func TestGRPCServerMalformedSeries(t *testing.T) {
	mergerModes(t, func(t *testing.T, wrap func(*pbMerger) Merger) {
		m := &pbMerger{}
		h := startGRPC(t, wrap(m), ImporterConfig{}, GRPCServerConfig{})
		stats := &statstest.Recorder{}
		good, err := proto.Marshal(pbCounter("ok", 3, "b", "a"))
		if err != nil {
			t.Fatal(err)
		}
		unusual := wireVarint(nil, 9, 2)
		unusual = wireMessage(unusual, 7, wireMessage(nil, 1, append(
			wireMessage(nil, 1, wireDouble(wireDouble(wireDouble(wireDouble(nil, 3, 4), 3, 4), 2, 2), 1, 4)),
			wireDouble(wireDouble(nil, 3, 4), 4, 4)...)))
		unusual = wireVarint(unusual, 3, 4)
		unusual = wireString(unusual, 1, "latency")
		stream, err := h.client.SendMetricsV2(context.Background(), grpc.ForceCodecV2(grpcwire.Codec{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range [][]byte{good, good[:len(good)-2], {0xff, 0xff}, unusual} {
			if err := stream.SendMsg(&grpcwire.Message{B: b}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := stream.CloseAndRecv(); err != nil {
			t.Fatalf("a call with two good series: %v", err)
		}
		trailer := stream.Trailer()
		if a, r := trailer.Get(trailerAccepted), trailer.Get(trailerRejected); !slices.Equal(a, []string{"2"}) || !slices.Equal(r, []string{"2"}) {
			t.Errorf("trailer accepted %v rejected %v, want 2 and 2", a, r)
		}
		if errs := trailer.Get(trailerErrors); len(errs) != 2 || !strings.Contains(errs[0], "metric 1") || !strings.Contains(errs[0], "malformed protobuf") {
			t.Errorf("trailer errors %q, want metrics 1 and 2 named as malformed", errs)
		}
		all := m.series()
		if len(all) != 2 {
			t.Fatalf("merged %v, want 2 series", all)
		}
		c, d := all[0], all[1]
		if c.Name != "ok" || c.Counter != 3 || !slices.Equal(c.Tags, []string{"a", "b"}) {
			t.Errorf("counter %+v, want ok [a b] 3", c)
		}
		if d.Name != "latency" || d.Type != samplers.TimerMetric || d.Digest.Count() != 2 || d.Digest.Quantile(0.5) != 4 {
			t.Errorf("timer %q %v: count %v, median %v; want latency, 2 samples of 4", d.Name, d.Type, d.Digest.Count(), d.Digest.Quantile(0.5))
		}
		h.srv.Report(stats)
		if n := stats.Sum("import.metric_error_total", "cause:protobuf", "transport:grpc"); n != 2 {
			t.Errorf("import.metric_error_total{cause:protobuf} = %d, want 2", n)
		}
	})
}

// A batch id merged once is answered OK without merging again, over gRPC
// and over HTTP alike: both transports share the Importer's memory.
func TestGRPCServerDuplicateBatch(t *testing.T) {
	m := &pbMerger{}
	h := startGRPC(t, m, ImporterConfig{}, GRPCServerConfig{})
	stats := &statstest.Recorder{}
	const id = "0123456789abcdef0123456789abcdef"

	if _, err := streamV2(t, h.client, id, pbCounter("c", 5), pbGauge("g", 1)); err != nil {
		t.Fatal(err)
	}
	trailer, err := streamV2(t, h.client, id, pbCounter("c", 5), pbGauge("g", 1))
	if err != nil {
		t.Fatalf("the retry: %v, want OK", err)
	}
	if d, a, r := trailer.Get(trailerDuplicate), trailer.Get(trailerAccepted), trailer.Get(trailerRejected); !slices.Equal(d, []string{"true"}) || !slices.Equal(a, []string{"1"}) || !slices.Equal(r, []string{"1"}) {
		t.Errorf("retry trailer duplicate %v accepted %v rejected %v; want true, the first call's 1 and 1", d, a, r)
	}
	if _, err := h.client.SendMetrics(metadata.AppendToOutgoingContext(context.Background(), BatchMetadataKey, id),
		&forwardrpc.MetricList{Metrics: []*metricpb.Metric{pbCounter("c", 5)}}); err != nil {
		t.Fatalf("SendMetrics with the same id: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPost, "/import", strings.NewReader(`[]`))
	req.Header.Set(BatchHeader, id)
	rec := &responseRecorder{header: http.Header{}}
	h.im.ServeHTTP(rec, req)
	if rec.code != http.StatusAccepted || !strings.Contains(rec.body.String(), `"duplicate":true`) {
		t.Errorf("/import with the id merged over gRPC: %d %s, want 202 duplicate", rec.code, rec.body.String())
	}
	if calls := m.merged(); len(calls) != 1 || calls[0][0].Counter != 5 {
		t.Errorf("merged %v, want the first call only", calls)
	}
	// Another id is merged.
	if _, err := streamV2(t, h.client, "another-id", pbCounter("c", 5)); err != nil {
		t.Fatal(err)
	}
	if n := len(m.merged()); n != 2 {
		t.Errorf("%d merges, want 2", n)
	}
	h.srv.Report(stats)
	if n := stats.Sum("import.duplicate_total", "transport:grpc"); n != 2 {
		t.Errorf("import.duplicate_total{transport:grpc} = %d, want 2", n)
	}
}

// responseRecorder is the least http.ResponseWriter.
type responseRecorder struct {
	header http.Header
	code   int
	body   strings.Builder
}

func (r *responseRecorder) Header() http.Header { return r.header }
func (r *responseRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}
func (r *responseRecorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}

// While a batch is being merged, its retry is answered Unavailable with
// retry-after; while every place is taken, any other call is too, once
// it waited MaxWait for one.
func TestGRPCServerInProgressAndBusy(t *testing.T) {
	m := &pbMerger{hold: make(chan struct{}), entered: make(chan struct{}, 1)}
	h := startGRPC(t, m, ImporterConfig{MaxConcurrency: 1, MaxWait: 20 * time.Millisecond}, GRPCServerConfig{})
	stats := &statstest.Recorder{}
	const id = "held"

	first := make(chan error, 1)
	go func() {
		_, err := streamV2(t, h.client, id, pbCounter("c", 1))
		first <- err
	}()
	<-m.entered // the first call holds the id and the only place

	trailer, err := streamV2(t, h.client, id, pbCounter("c", 1))
	if status.Code(err) != codes.Unavailable || !slices.Equal(trailer.Get(trailerRetryAfter), []string{"1"}) {
		t.Errorf("the same id while merging: %v, retry-after %v; want Unavailable, 1", err, trailer.Get(trailerRetryAfter))
	}
	trailer, err = streamV2(t, h.client, "other", pbCounter("c", 1))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "busy") || !slices.Equal(trailer.Get(trailerRetryAfter), []string{"1"}) {
		t.Errorf("another call with no place left: %v, retry-after %v; want Unavailable busy, 1", err, trailer.Get(trailerRetryAfter))
	}
	close(m.hold)
	if err := <-first; err != nil {
		t.Errorf("the first call: %v", err)
	}
	// The place is free again, and the refused call's id was not kept.
	m.hold = nil
	if _, err := streamV2(t, h.client, "other", pbCounter("c", 1)); err != nil {
		t.Errorf("after the first call: %v", err)
	}
	h.srv.Report(stats)
	for cause, want := range map[string]int64{"in_progress": 1, "busy": 1} {
		if n := stats.Sum("import.request_error_total", "cause:"+cause, "transport:grpc"); n != want {
			t.Errorf("request_error_total{cause:%s} = %d, want %d", cause, n, want)
		}
	}
	if n := len(m.merged()); n != 2 {
		t.Errorf("%d merges, want 2", n)
	}
}

// A call that finds every place taken waits for one, and is served once
// the call before it is done; it is counted in
// import.waited_total{transport:grpc}.
func TestGRPCServerWaitsForPlace(t *testing.T) {
	m := &pbMerger{hold: make(chan struct{}), entered: make(chan struct{}, 1)}
	h := startGRPC(t, m, ImporterConfig{MaxConcurrency: 1, MaxWait: time.Minute}, GRPCServerConfig{})
	errs := make(chan error, 2)
	go func() {
		_, err := streamV2(t, h.client, "first", pbCounter("c", 1))
		errs <- err
	}()
	<-m.entered
	go func() {
		_, err := streamV2(t, h.client, "second", pbCounter("c", 2))
		errs <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); h.im.waiting.Load() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second call does not wait")
		}
	}
	close(m.hold)
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("%v", err)
		}
	}
	stats := &statstest.Recorder{}
	h.srv.Report(stats)
	if n := stats.Sum("import.waited_total", "transport:grpc"); n != 1 {
		t.Errorf("import.waited_total{transport:grpc} = %d, want 1", n)
	}
	if n := stats.Sum("import.request_error_total"); n != 0 {
		t.Errorf("import.request_error_total = %d, want 0", n)
	}
	if n := len(m.merged()); n != 2 {
		t.Errorf("%d merges, want 2", n)
	}
}

// The limits refuse the whole call (with a batch id) with
// ResourceExhausted, merging nothing, and a call cut off midway merges
// nothing either.
func TestGRPCServerLimits(t *testing.T) {
	mergerModes(t, func(t *testing.T, wrap func(*pbMerger) Merger) {
		big := pbHisto("big", metricpb.Type_Histogram, metricpb.Scope_Mixed, 0, 100)
		for i := range 100 {
			big.GetHistogram().TDigest.MainCentroids = append(big.GetHistogram().TDigest.MainCentroids, &metricpb.Centroid{Mean: float64(i), Weight: 1})
		}
		for _, tc := range []struct {
			name string
			cfg  GRPCServerConfig
			send []*metricpb.Metric
			want codes.Code
		}{
			{"series per call", GRPCServerConfig{MaxStreamMetrics: 3}, []*metricpb.Metric{pbCounter("a", 1), pbCounter("b", 1), pbCounter("c", 1), pbCounter("d", 1)}, codes.ResourceExhausted},
			{"bytes per call", GRPCServerConfig{MaxStreamBytes: 30}, []*metricpb.Metric{pbCounter("a", 1), pbCounter("b", 1), pbCounter("c", 1), pbCounter("d", 1)}, codes.ResourceExhausted},
			{"bytes per message", GRPCServerConfig{MaxMessageBytes: 1000}, []*metricpb.Metric{pbCounter("a", 1), big}, codes.ResourceExhausted},
		} {
			t.Run(tc.name, func(t *testing.T) {
				m := &pbMerger{}
				h := startGRPC(t, wrap(m), ImporterConfig{}, tc.cfg)
				stats := &statstest.Recorder{}
				if _, err := streamV2(t, h.client, "id", tc.send...); status.Code(err) != tc.want {
					t.Errorf("error %v, want %v", err, tc.want)
				}
				if calls := m.merged(); len(calls) != 0 {
					t.Errorf("merged %v, want nothing", calls)
				}
				// One under the limit passes, and the id was forgotten.
				if _, err := streamV2(t, h.client, "id", tc.send[:len(tc.send)-1]...); err != nil {
					t.Errorf("under the limit: %v", err)
				}
				h.srv.Report(stats)
				if n := stats.Sum("import.request_error_total", "cause:too_large", "transport:grpc"); n != 1 {
					t.Errorf("request_error_total{cause:too_large} = %d, want 1", n)
				}
			})
		}

		t.Run("call duration", func(t *testing.T) {
			m := &pbMerger{}
			h := startGRPC(t, wrap(m), ImporterConfig{}, GRPCServerConfig{MaxCallDuration: 50 * time.Millisecond})
			stats := &statstest.Recorder{}
			ctx := metadata.AppendToOutgoingContext(context.Background(), BatchMetadataKey, "b1")
			stream, err := h.client.SendMetricsV2(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(pbCounter("a", 1)); err != nil {
				t.Fatal(err)
			}
			// Never closed: the server's deadline ends the call.
			err = stream.RecvMsg(new(emptypb.Empty))
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("an endless call ended with %v, want DeadlineExceeded", err)
			}
			if calls := m.merged(); len(calls) != 0 {
				t.Errorf("merged %v from a call cut off", calls)
			}
			h.srv.Stop(context.Background()) // waits for the handler
			h.srv.Report(stats)
			if n := stats.Sum("import.request_error_total", "cause:receive", "transport:grpc"); n != 1 {
				t.Errorf("request_error_total{cause:receive} = %d, want 1", n)
			}
		})
	})
}

func TestGRPCServerBadBatchID(t *testing.T) {
	m := &pbMerger{}
	h := startGRPC(t, m, ImporterConfig{}, GRPCServerConfig{})
	for _, ids := range [][]string{{"not an id"}, {strings.Repeat("x", 65)}, {"a", "b"}} {
		ctx := context.Background()
		for _, id := range ids {
			ctx = metadata.AppendToOutgoingContext(ctx, BatchMetadataKey, id)
		}
		_, err := h.client.SendMetrics(ctx, &forwardrpc.MetricList{Metrics: []*metricpb.Metric{pbCounter("c", 1)}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("ids %q: %v, want InvalidArgument", ids, err)
		}
	}
	if calls := m.merged(); len(calls) != 0 {
		t.Errorf("merged %v", calls)
	}
}

func TestGRPCServerMergeFails(t *testing.T) {
	for _, tc := range []struct {
		err   error
		code  codes.Code
		cause string
	}{{ErrClosed, codes.Unavailable, "shutdown"}, {errors.New("disk on fire"), codes.Internal, "other"}} {
		m := &pbMerger{err: tc.err}
		h := startGRPC(t, m, ImporterConfig{}, GRPCServerConfig{})
		stats := &statstest.Recorder{}
		const id = "batch"
		if _, err := streamV2(t, h.client, id, pbCounter("c", 1)); status.Code(err) != tc.code {
			t.Errorf("Merge failing with %v: %v, want %v", tc.err, err, tc.code)
		}
		// The id is forgotten: a retry merges again.
		m.mu.Lock()
		m.err = nil
		m.mu.Unlock()
		if _, err := streamV2(t, h.client, id, pbCounter("c", 1)); err != nil {
			t.Errorf("the retry: %v", err)
		}
		h.srv.Report(stats)
		if n := stats.Sum("import.request_error_total", "cause:"+tc.cause, "transport:grpc"); n != 1 {
			t.Errorf("request_error_total{cause:%s} = %d, want 1", tc.cause, n)
		}
	}
}

// Start binds Address; Stop stops; both are safe to repeat.
func TestGRPCServerStartStop(t *testing.T) {
	im := NewImporter(&pbMerger{}, ImporterConfig{})
	if _, err := NewGRPCServer(nil, GRPCServerConfig{}); err == nil {
		t.Error("NewGRPCServer(nil) did not fail")
	}
	empty, _ := NewGRPCServer(im, GRPCServerConfig{})
	if err := empty.Start(); err == nil || !strings.Contains(err.Error(), "grpc_address") {
		t.Errorf("Start without an address: %v", err)
	}
	if err := empty.Stop(context.Background()); err != nil {
		t.Errorf("Stop before Start: %v", err)
	}

	srv, err := NewGRPCServer(im, GRPCServerConfig{Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Addr() != nil {
		t.Error("Addr before Start is not nil")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	if addr == nil || strings.HasSuffix(addr.String(), ":0") {
		t.Fatalf("Addr() = %v", addr)
	}
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := forwardrpc.NewForwardClient(conn).SendMetrics(context.Background(), &forwardrpc.MetricList{}); err != nil {
		t.Errorf("a call to the started server: %v", err)
	}
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.ServeGRPC(ln); err == nil {
		t.Error("ServeGRPC after Stop did not fail")
	}
	if _, err := net.Dial("tcp", addr.String()); err == nil {
		t.Error("the address still accepts connections after Stop")
	}
}

// testCert is a certificate named name, signed by parent (self-signed
// when parent is nil), for localhost and 127.0.0.1.
func testCert(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
}

// A SendMetricsV2 call without a batch id, as veneur v14's proxy holds one
// open to each global for as long as it runs, is merged as it comes: each
// burst of series is merged while the stream stays open, beyond the
// limits of a whole call, and the answer counts them all.
func TestGRPCServerStreamsWithoutBatchID(t *testing.T) {
	mergerModes(t, func(t *testing.T, wrap func(*pbMerger) Merger) {
		m := &pbMerger{}
		h := startGRPC(t, wrap(m), ImporterConfig{}, GRPCServerConfig{MaxStreamMetrics: 3})
		stats := &statstest.Recorder{}
		stream, err := h.client.SendMetricsV2(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		merged := func() int {
			n := 0
			for _, c := range m.merged() {
				n += len(c)
			}
			return n
		}
		waitMerged := func(want int) {
			t.Helper()
			deadline := time.Now().Add(10 * time.Second)
			for merged() < want {
				if time.Now().After(deadline) {
					t.Fatalf("%d series merged while the stream is open, want %d", merged(), want)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		for i := range 5 {
			if err := stream.Send(pbCounter("burst1", 1, "i:"+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		waitMerged(5)
		stream.Send(pbGauge("refused", 1))
		for i := range 4 {
			if err := stream.Send(pbCounter("burst2", 2, "i:"+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		waitMerged(9)
		if _, err := stream.CloseAndRecv(); err != nil {
			t.Fatalf("the stream's end: %v", err)
		}
		trailer := stream.Trailer()
		if a, r := trailer.Get(trailerAccepted), trailer.Get(trailerRejected); !slices.Equal(a, []string{"9"}) || !slices.Equal(r, []string{"1"}) {
			t.Errorf("trailer accepted %v rejected %v, want 9 and 1", a, r)
		}
		// The refused series is named by its place in the whole call,
		// not in its part.
		if errs := trailer.Get(trailerErrors); len(errs) != 1 || !strings.Contains(errs[0], "metric 5 ") {
			t.Errorf("trailer errors %q, want metric 5 named", errs)
		}
		if n := merged(); n != 9 {
			t.Errorf("%d series merged, want 9", n)
		}
		h.srv.Report(stats)
		if n := stats.Sum("import.metrics_total", "transport:grpc"); n != 9 {
			t.Errorf("metrics_total = %d, want 9", n)
		}
		if n := stats.Sum("import.metric_error_total", "cause:gauge", "transport:grpc"); n != 1 {
			t.Errorf("metric_error_total{cause:gauge} = %d, want 1", n)
		}
		if names := stats.Names(); slices.Contains(names, "import.request_error_total") {
			t.Errorf("request errors for a good stream")
		}
	})
}

// A stream without a batch id that sends nothing for MaxCallDuration ends
// with DeadlineExceeded; what it sent before was merged, and one that
// keeps sending is not cut off.
func TestGRPCServerStreamIdle(t *testing.T) {
	m := &pbMerger{}
	h := startGRPC(t, compactMerger{m}, ImporterConfig{}, GRPCServerConfig{MaxCallDuration: 200 * time.Millisecond})
	stream, err := h.client.SendMetricsV2(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Sending for longer than MaxCallDuration, never idle for long.
	end := time.Now().Add(600 * time.Millisecond)
	sent := 0
	for time.Now().Before(end) {
		if err := stream.Send(pbCounter("live", 1)); err != nil {
			t.Fatalf("the stream was cut off while sending, after %d series: %v", sent, err)
		}
		sent++
		time.Sleep(20 * time.Millisecond)
	}
	err = stream.RecvMsg(new(emptypb.Empty))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("an idle stream ended with %v, want DeadlineExceeded", err)
	}
	n := 0
	for _, c := range m.merged() {
		n += len(c)
	}
	if n != sent {
		t.Errorf("%d series merged, want the %d sent", n, sent)
	}
}
