package forward

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veneur/veneur/forward/forwardrpc"
	"github.com/veneur/veneur/forward/metricpb"
	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// standIn is a gRPC server written against the .proto, standing in for a
// v14 global: it records every call (its batch ids and series) and
// answers the nth call (from 1) with answer(n).
type standIn struct {
	forwardrpc.UnimplementedForwardServer
	answer func(n int) error
	// forward, when set, is called with the series of each call before
	// it is answered (a proxy to our server, in a test).
	forward func(ctx context.Context, ids []string, ms []*metricpb.Metric) error
	// early, when set, answers each call at once, before reading it:
	// SendAndClose when it returns nil.
	early func() error

	mu    sync.Mutex
	calls []standInCall
}

type standInCall struct {
	ids     []string
	metrics []*metricpb.Metric
	err     error // the answer
}

func (s *standIn) SendMetricsV2(stream forwardrpc.Forward_SendMetricsV2Server) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	call := standInCall{ids: md.Get(BatchMetadataKey)}
	if s.early != nil {
		call.err = s.early()
		s.mu.Lock()
		s.calls = append(s.calls, call)
		s.mu.Unlock()
		if call.err != nil {
			return call.err
		}
		return stream.SendAndClose(&emptypb.Empty{})
	}
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		call.metrics = append(call.metrics, m)
	}
	s.mu.Lock()
	n := len(s.calls) + 1
	s.mu.Unlock()
	if s.forward != nil {
		if err := s.forward(stream.Context(), call.ids, call.metrics); err != nil {
			call.err = err
		}
	}
	if call.err == nil && s.answer != nil {
		call.err = s.answer(n)
	}
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	if call.err != nil {
		return call.err
	}
	return stream.SendAndClose(&emptypb.Empty{})
}

func (s *standIn) recorded() []standInCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// startStandIn serves s on 127.0.0.1:0 and returns its address.
func startStandIn(t *testing.T, s *standIn, opts ...grpc.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	forwardrpc.RegisterForwardServer(srv, s)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func newGRPCClient(t *testing.T, cfg GRPCClientConfig) (*GRPCClient, *statstest.Recorder) {
	t.Helper()
	log, _ := test.NewNullLogger()
	stats := &statstest.Recorder{}
	if cfg.Delivery == (plugins.DeliveryConfig{}) {
		cfg.Delivery = plugins.DeliveryConfig{BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond, Timeout: 10 * time.Second}
	}
	c, err := NewGRPCClient(cfg, plugins.Env{Log: log, Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		c.Close(ctx)
	})
	return c, stats
}

// drainGRPC closes c, which delivers what it holds first, and reports its
// self-metrics to stats.
func drainGRPC(t *testing.T, c *GRPCClient, stats *statstest.Recorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	c.Report(stats)
}

// A flush of every type, as the flusher builds it.
func testFlush(t *testing.T) []samplers.Forwarded {
	return []samplers.Forwarded{
		{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: "hits", Tags: []string{"a:1"}, Counter: 2.5},
		{Type: samplers.TimerMetric, Scope: samplers.MixedScope, Name: "lat", Tags: []string{"a:1", "b:2"}, Digest: pbDigest(t, 1, 2, 2, 3, 40)},
		{Type: samplers.HistogramMetric, Scope: samplers.GlobalOnly, Name: "size", Digest: pbDigest(t, 7)},
		{Type: samplers.SetMetric, Scope: samplers.MixedScope, Name: "users", Set: pbSketch("u", 20)},
	}
}

// Our client streams a flush to a server standing in for v14, which
// receives exactly the series v14 would send, with a batch id.
func TestGRPCClientToV14(t *testing.T) {
	s := &standIn{}
	addr := startStandIn(t, s)
	c, stats := newGRPCClient(t, GRPCClientConfig{Address: "grpc://" + addr})
	if c.Name() != "forward" {
		t.Errorf("Name() = %q", c.Name())
	}
	fwd := testFlush(t)
	// What v14 would send for them, built independently.
	lat := fwd[1].Digest.AppendCentroids(nil)
	wantLat := &metricpb.MergingDigestData{Compression: 400, Min: 1, Max: 40}
	recip := 0.0
	for _, c := range lat {
		pc := &metricpb.Centroid{Mean: c.Mean, Weight: c.Weight}
		if c.Single && c.Weight > 1 {
			pc.Samples = []float64{c.Mean}
		}
		wantLat.MainCentroids = append(wantLat.MainCentroids, pc)
		recip += c.Weight / c.Mean
	}
	wantLat.ReciprocalSum = recip
	users, _ := fwd[3].Set.MarshalBinary()
	users[0] = 1
	want := []*metricpb.Metric{
		{Name: "hits", Tags: []string{"a:1"}, Type: metricpb.Type_Counter, Scope: metricpb.Scope_Global,
			Value: &metricpb.Metric_Counter{Counter: &metricpb.CounterValue{Value: 3}}},
		{Name: "lat", Tags: []string{"a:1", "b:2"}, Type: metricpb.Type_Timer, Scope: metricpb.Scope_Mixed,
			Value: &metricpb.Metric_Histogram{Histogram: &metricpb.HistogramValue{TDigest: wantLat}}},
		{Name: "size", Type: metricpb.Type_Histogram, Scope: metricpb.Scope_Global,
			Value: &metricpb.Metric_Histogram{Histogram: &metricpb.HistogramValue{TDigest: &metricpb.MergingDigestData{
				Compression: 400, Min: 7, Max: 7, ReciprocalSum: 1.0 / 7,
				MainCentroids: []*metricpb.Centroid{{Mean: 7, Weight: 1}}}}}},
		{Name: "users", Type: metricpb.Type_Set, Scope: metricpb.Scope_Mixed,
			Value: &metricpb.Metric_Set{Set: &metricpb.SetValue{HyperLogLog: users}}},
	}

	if err := c.Flush(context.Background(), &plugins.Batch{Forward: fwd}); err != nil {
		t.Fatal(err)
	}
	drainGRPC(t, c, stats)
	calls := s.recorded()
	if len(calls) != 1 {
		t.Fatalf("%d calls, want 1", len(calls))
	}
	if len(calls[0].ids) != 1 || !hexID.MatchString(calls[0].ids[0]) {
		t.Errorf("batch ids %q, want one of 32 hex digits", calls[0].ids)
	}
	got := calls[0].metrics
	if len(got) != len(want) {
		t.Fatalf("received %d series, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("series %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
	for name, n := range map[string]int64{"forward.post_metrics_total": 4, "forward.counter_rounded_total": 1} {
		if got := stats.Sum(name); got != n {
			t.Errorf("%s = %d, want %d", name, got, n)
		}
	}
	if n := stats.Timings("forward.duration_ns", "part:marshal"); n != 1 {
		t.Errorf("%d marshal timings, want 1", n)
	}
}

// The stand-in refuses the first stream with Unavailable: the client
// sends it again, with the same batch id, and the series arrive once.
func TestGRPCClientRetries(t *testing.T) {
	s := &standIn{answer: func(n int) error {
		if n == 1 {
			return status.Error(codes.Unavailable, "not now")
		}
		return nil
	}}
	addr := startStandIn(t, s)
	c, stats := newGRPCClient(t, GRPCClientConfig{Address: "grpc://" + addr})
	if err := c.Flush(context.Background(), &plugins.Batch{Forward: testFlush(t)}); err != nil {
		t.Fatal(err)
	}
	drainGRPC(t, c, stats)
	calls := s.recorded()
	if len(calls) != 2 || calls[0].err == nil || calls[1].err != nil {
		t.Fatalf("calls %+v, want a refused one then an accepted one", calls)
	}
	if len(calls[0].ids) != 1 || !slices.Equal(calls[0].ids, calls[1].ids) {
		t.Errorf("batch ids %q then %q, want the same one", calls[0].ids, calls[1].ids)
	}
	if n := len(calls[1].metrics); n != 4 {
		t.Errorf("the accepted call carried %d series, want 4", n)
	}
	for name, n := range map[string]int64{"forward.post_metrics_total": 4, "forward.retry_total": 1} {
		if got := stats.Sum(name, "destination:forward"); got != n {
			t.Errorf("%s = %d, want %d", name, got, n)
		}
	}
	if n := stats.Sum("forward.error_total", "cause:post"); n != 1 {
		t.Errorf("forward.error_total{cause:post} = %d, want 1 (Unavailable without retry-after is no answer)", n)
	}

	// Flushes go out in order, each once.
	c2, stats2 := newGRPCClient(t, GRPCClientConfig{Address: "grpc://" + addr})
	for i := range 3 {
		if err := c2.Flush(context.Background(), &plugins.Batch{Forward: []samplers.Forwarded{{Type: samplers.CounterMetric, Name: "c", Counter: float64(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	drainGRPC(t, c2, stats2)
	var values []int64
	for _, call := range s.recorded()[2:] {
		for _, m := range call.metrics {
			values = append(values, m.GetCounter().GetValue())
		}
	}
	if !slices.Equal(values, []int64{0, 1, 2}) {
		t.Errorf("counters arrived as %v, want 0, 1, 2", values)
	}
}

// A refusal that would recur drops the flush at once; a busy answer with
// retry-after is retried.
func TestGRPCClientAnswers(t *testing.T) {
	for _, tc := range []struct {
		name           string
		err            error
		calls          int
		dropped, posts int64
	}{
		{"invalid argument", status.Error(codes.InvalidArgument, "no"), 1, 4, 0},
		{"resource exhausted", status.Error(codes.ResourceExhausted, "too big"), 1, 4, 0},
		{"unimplemented", status.Error(codes.Unimplemented, "no such service"), 1, 4, 0},
		{"internal", status.Error(codes.Internal, "oops"), 2, 0, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &standIn{answer: func(n int) error {
				if n == 1 {
					return tc.err
				}
				return nil
			}}
			addr := startStandIn(t, s)
			c, stats := newGRPCClient(t, GRPCClientConfig{Address: "grpc://" + addr})
			if err := c.Flush(context.Background(), &plugins.Batch{Forward: testFlush(t)}); err != nil {
				t.Fatal(err)
			}
			drainGRPC(t, c, stats)
			if n := len(s.recorded()); n != tc.calls {
				t.Errorf("%d calls, want %d", n, tc.calls)
			}
			if n := stats.Sum("forward.dropped_total", "cause:rejected_4xx"); n != tc.dropped {
				t.Errorf("dropped_total{cause:rejected_4xx} = %d, want %d", n, tc.dropped)
			}
			if n := stats.Sum("forward.post_metrics_total"); n != tc.posts {
				t.Errorf("post_metrics_total = %d, want %d", n, tc.posts)
			}
			if n := stats.Sum("forward.error_total", "cause:response"); n != 1 {
				t.Errorf("error_total{cause:response} = %d, want 1", n)
			}
		})
	}
}

// A global may answer before it has read the stream (ours does for a
// duplicate batch): the client stops sending and takes the answer.
func TestGRPCClientEarlyAnswer(t *testing.T) {
	var big []samplers.Forwarded
	for i := range 5000 {
		big = append(big, samplers.Forwarded{Type: samplers.HistogramMetric, Name: "h" + strconv.Itoa(i), Digest: pbDigest(t, float64(i), 1, 2, 3)})
	}
	for _, tc := range []struct {
		name            string
		answer          error
		posts, rejected int64
	}{
		{"ok", nil, 5000, 0},
		{"refused", status.Error(codes.PermissionDenied, "not you"), 0, 5000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &standIn{early: func() error { return tc.answer }}
			addr := startStandIn(t, s)
			c, stats := newGRPCClient(t, GRPCClientConfig{Address: "grpc://" + addr})
			if err := c.Flush(context.Background(), &plugins.Batch{Forward: big}); err != nil {
				t.Fatal(err)
			}
			drainGRPC(t, c, stats)
			if n := len(s.recorded()); n != 1 {
				t.Errorf("%d calls, want 1", n)
			}
			if n := stats.Sum("forward.post_metrics_total"); n != tc.posts {
				t.Errorf("post_metrics_total = %d, want %d", n, tc.posts)
			}
			if n := stats.Sum("forward.dropped_total", "cause:rejected_4xx"); n != tc.rejected {
				t.Errorf("dropped_total{cause:rejected_4xx} = %d, want %d", n, tc.rejected)
			}
		})
	}
}

func TestGRPCAnswer(t *testing.T) {
	retry := metadata.Pairs(trailerRetryAfter, "2")
	for _, tc := range []struct {
		err     error
		trailer metadata.MD
		code    int // 0: a plain error (no answer)
		after   time.Duration
	}{
		{errors.New("dial tcp: refused"), nil, 0, 0},
		{status.Error(codes.Unavailable, "connection refused"), nil, 0, 0},
		{status.Error(codes.Unavailable, "busy"), retry, 503, 2 * time.Second},
		{status.Error(codes.DeadlineExceeded, "slow"), nil, 0, 0},
		{status.Error(codes.Canceled, "gone"), nil, 0, 0},
		{status.Error(codes.Aborted, "conflict"), nil, 503, 0},
		{status.Error(codes.InvalidArgument, "bad"), nil, 400, 0},
		{status.Error(codes.Unauthenticated, "who"), nil, 401, 0},
		{status.Error(codes.PermissionDenied, "no"), nil, 403, 0},
		{status.Error(codes.Unimplemented, "what"), nil, 404, 0},
		{status.Error(codes.ResourceExhausted, "big"), nil, 413, 0},
		{status.Error(codes.Internal, "oops"), nil, 500, 0},
		{status.Error(codes.DataLoss, "oops"), nil, 500, 0},
	} {
		err := grpcAnswer("the global", tc.err, tc.trailer)
		var se *plugins.StatusError
		switch {
		case tc.code == 0 && errors.As(err, &se):
			t.Errorf("%v: %v, want no answer", tc.err, se)
		case tc.code != 0 && (!errors.As(err, &se) || se.Code != tc.code || se.RetryAfter != tc.after):
			t.Errorf("%v: %#v, want code %d, retry after %v", tc.err, err, tc.code, tc.after)
		case !strings.Contains(err.Error(), "the global"):
			t.Errorf("%v: %v does not name the destination", tc.err, err)
		}
	}
}

// Series that cannot go as v14 series are left out, counted and
// returned; the others are sent.
func TestGRPCClientSkipsWhatDoesNotEncode(t *testing.T) {
	s := &standIn{}
	addr := startStandIn(t, s)
	c, stats := newGRPCClient(t, GRPCClientConfig{Address: "grpc://" + addr})
	err := c.Flush(context.Background(), &plugins.Batch{Forward: []samplers.Forwarded{
		{Type: samplers.CounterMetric, Name: "huge", Counter: 1e30},
		{Type: samplers.CounterMetric, Name: "inf", Counter: math.Inf(1)},
		{Type: samplers.CounterMetric, Name: "bad\xffutf8", Counter: 1},
		{Type: samplers.HistogramMetric, Name: "nodigest"},
		{Type: samplers.CounterMetric, Name: "fine", Counter: 7},
	}})
	if err == nil || !strings.Contains(err.Error(), "4 of 5") {
		t.Errorf("Flush: %v, want 4 of 5 left out", err)
	}
	// Nothing encodes: nothing is sent.
	if err := c.Flush(context.Background(), &plugins.Batch{Forward: []samplers.Forwarded{{Type: samplers.CounterMetric, Name: "nan", Counter: math.NaN()}}}); err == nil {
		t.Error("Flush of a NaN counter did not fail")
	}
	drainGRPC(t, c, stats)
	calls := s.recorded()
	if len(calls) != 1 || len(calls[0].metrics) != 1 || calls[0].metrics[0].GetName() != "fine" {
		t.Fatalf("calls %+v, want one with the one good series", calls)
	}
	if n := stats.Sum("forward.error_total", "cause:marshal"); n != 2 {
		t.Errorf("error_total{cause:marshal} = %d, want 2 (flushes)", n)
	}
	if n := stats.Sum("forward.counter_unrepresentable_total"); n != 3 {
		t.Errorf("counter_unrepresentable_total = %d, want 3", n)
	}
}

func TestGRPCClientEmpty(t *testing.T) {
	c, stats := newGRPCClient(t, GRPCClientConfig{Address: "grpc://127.0.0.1:1"})
	if err := c.Flush(context.Background(), &plugins.Batch{}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	connected := c.conn != nil
	c.mu.Unlock()
	if connected {
		t.Error("a client that sent nothing connected")
	}
	drainGRPC(t, c, stats)
	if names := stats.Names(); len(names) != 0 {
		t.Errorf("an idle client reported %v", names)
	}
}

// Our client to our server, end to end: exact values, and a retry whose
// first answer was lost is merged once. The stand-in in between forwards
// each call to our server with its batch id, and loses the first answer.
func TestGRPCClientToOurServer(t *testing.T) {
	m := &pbMerger{}
	h := startGRPC(t, m, ImporterConfig{}, GRPCServerConfig{})
	lossy := &standIn{
		forward: func(ctx context.Context, ids []string, ms []*metricpb.Metric) error {
			if len(ids) > 0 {
				ctx = metadata.AppendToOutgoingContext(context.Background(), BatchMetadataKey, ids[0])
			}
			stream, err := h.client.SendMetricsV2(ctx)
			if err != nil {
				return err
			}
			for _, m := range ms {
				stream.Send(m)
			}
			_, err = stream.CloseAndRecv()
			return err
		},
		answer: func(n int) error {
			if n == 1 {
				return status.Error(codes.Unavailable, "the answer was lost")
			}
			return nil
		},
	}
	addr := startStandIn(t, lossy)
	c, stats := newGRPCClient(t, GRPCClientConfig{Address: "grpc://" + addr})
	fwd := testFlush(t)
	if err := c.Flush(context.Background(), &plugins.Batch{Forward: fwd}); err != nil {
		t.Fatal(err)
	}
	drainGRPC(t, c, stats)
	if n := len(lossy.recorded()); n != 2 {
		t.Fatalf("%d calls, want 2", n)
	}
	calls := m.merged()
	if len(calls) != 1 {
		t.Fatalf("merged %d times, want once", len(calls))
	}
	got := calls[0]
	if len(got) != 4 {
		t.Fatalf("merged %d series, want 4", len(got))
	}
	if got[0].Counter != 3 || got[0].Scope != samplers.GlobalOnly {
		t.Errorf("counter %+v, want 3 (2.5 rounded) global", got[0])
	}
	for i := 1; i <= 2; i++ {
		if !slices.Equal(got[i].Digest.AppendCentroids(nil), fwd[i].Digest.AppendCentroids(nil)) ||
			got[i].Digest.Min() != fwd[i].Digest.Min() || got[i].Digest.Max() != fwd[i].Digest.Max() || got[i].Type != fwd[i].Type {
			t.Errorf("%s: the digest changed on the way", got[i].Name)
		}
	}
	if got[3].Set.Estimate() != fwd[3].Set.Estimate() {
		t.Errorf("set estimate %d, sent %d", got[3].Set.Estimate(), fwd[3].Set.Estimate())
	}
	srvStats := &statstest.Recorder{}
	h.srv.Report(srvStats)
	if n := srvStats.Sum("import.duplicate_total", "transport:grpc"); n != 1 {
		t.Errorf("import.duplicate_total = %d, want 1", n)
	}
}

// grpcs:// with the authority and a client certificate, against a server
// that requires one.
func TestGRPCClientTLS(t *testing.T) {
	ca, caKey, _ := testCert(t, "ca", nil, nil)
	_, _, serverCert := testCert(t, "localhost", ca, caKey)
	_, _, clientCert := testCert(t, "local", ca, caKey)
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	m := &pbMerger{}
	im := NewImporter(m, ImporterConfig{})
	srv, err := NewGRPCServer(im, GRPCServerConfig{Address: "127.0.0.1:0", TLS: &tls.Config{
		Certificates: []tls.Certificate{serverCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })

	c, stats := newGRPCClient(t, GRPCClientConfig{
		Address: "grpcs://" + srv.Addr().String(),
		TLS:     &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{clientCert}},
	})
	if err := c.Flush(context.Background(), &plugins.Batch{Forward: testFlush(t)}); err != nil {
		t.Fatal(err)
	}
	drainGRPC(t, c, stats)
	if calls := m.merged(); len(calls) != 1 || len(calls[0]) != 4 {
		t.Errorf("merged %v, want one call of 4 series", calls)
	}

	// In the clear, the TLS server does not answer.
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := forwardrpc.NewForwardClient(conn).SendMetrics(ctx, &forwardrpc.MetricList{}); err == nil {
		t.Error("a call in the clear to the TLS server succeeded")
	}
}

func TestNewGRPCClientChecksConfig(t *testing.T) {
	for _, addr := range []string{
		"", "grpc://", "grpc://host", "http://host:1", "grpc://user@host:1", "grpc://host:1/path",
		"grpc://host:1?q=1", "host:1", "grpc://host:1#frag",
	} {
		if _, err := NewGRPCClient(GRPCClientConfig{Address: addr}, plugins.Env{}); err == nil {
			t.Errorf("NewGRPCClient(%q) did not fail", addr)
		}
	}
	if _, err := NewGRPCClient(GRPCClientConfig{Address: "grpc://host:1", TLS: &tls.Config{}}, plugins.Env{}); err == nil || !strings.Contains(err.Error(), "grpcs://") {
		t.Errorf("TLS settings with grpc://: %v, want an error pointing to grpcs://", err)
	}
	if _, err := NewGRPCClient(GRPCClientConfig{Address: "grpc://host:1", Delivery: plugins.DeliveryConfig{MaxBytes: -1}}, plugins.Env{}); err == nil {
		t.Error("a negative spool did not fail")
	}
	for _, addr := range []string{"grpc://host:1", "grpcs://host:1/", "GRPC://[::1]:8128"} {
		c, err := NewGRPCClient(GRPCClientConfig{Address: addr}, plugins.Env{})
		if err != nil {
			t.Errorf("NewGRPCClient(%q): %v", addr, err)
			continue
		}
		c.Close(context.Background())
	}
	for addr, want := range map[string]bool{
		"grpc://h:1": true, "grpcs://h:1": true, "GRPC://h:1": true,
		"http://h:1": false, "https://h:1": false, "h:1": false, "grpc:h": false, "": false,
	} {
		if got := IsGRPCAddress(addr); got != want {
			t.Errorf("IsGRPCAddress(%q) = %v, want %v", addr, got, want)
		}
	}
}
