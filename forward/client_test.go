package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zlib"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// request is what a test server received.
type request struct {
	method, path, contentType, contentEncoding string
	batchID                                    string
	body                                       []byte // decompressed
}

// recordingServer answers every request with code and msg, and records it.
func recordingServer(t *testing.T, code int, msg string) (*httptest.Server, func() []request) {
	t.Helper()
	return scriptedServer(t, func(int) (int, string) { return code, msg })
}

// scriptedServer answers the nth request (from 1) as answer says, and
// records it.
func scriptedServer(t *testing.T, answer func(n int) (int, string)) (*httptest.Server, func() []request) {
	t.Helper()
	var mu sync.Mutex
	var got []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := request{method: r.Method, path: r.URL.Path, contentType: r.Header.Get("Content-Type"),
			contentEncoding: r.Header.Get("Content-Encoding"), batchID: r.Header.Get(BatchHeader)}
		zr, err := zlib.NewReader(r.Body)
		if err == nil {
			req.body, err = io.ReadAll(zr)
		}
		if err != nil {
			t.Errorf("request body: %v", err)
		}
		mu.Lock()
		got = append(got, req)
		code, msg := answer(len(got))
		mu.Unlock()
		if code/100 == 2 {
			w.WriteHeader(code)
			io.WriteString(w, msg)
			return
		}
		http.Error(w, msg, code)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []request {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// fastDelivery retries within milliseconds.
var fastDelivery = plugins.DeliveryConfig{BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond, Timeout: 10 * time.Second}

func newClient(t *testing.T, addr string) (*Client, *statstest.Recorder, *test.Hook) {
	t.Helper()
	log, hook := test.NewNullLogger()
	stats := &statstest.Recorder{}
	c, err := NewClient(ClientConfig{Address: addr, Delivery: fastDelivery}, plugins.Env{Log: log, Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		c.Close(ctx)
	})
	return c, stats, hook
}

// drain closes c, which delivers what it holds, and reports its
// self-metrics to stats.
func drain(t *testing.T, c *Client, stats *statstest.Recorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	c.Report(stats)
}

var hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestClientPosts(t *testing.T) {
	srv, requests := recordingServer(t, http.StatusAccepted, `{"accepted":3,"rejected":0}`)
	c, stats, hook := newClient(t, srv.URL+"/")
	if c.Name() != "forward" {
		t.Errorf("Name() = %q", c.Name())
	}
	digest := digestOf(t, 1, 2, 3, 4)
	set := sketchOf("alice", "bob")
	b := &plugins.Batch{
		Metrics: []samplers.InterMetric{{Series: &samplers.Series{Name: "not.forwarded"}, Value: 1}},
		Forward: []samplers.Forwarded{
			{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: "hits", Counter: 2.5},
			{Type: samplers.TimerMetric, Name: "lat", Tags: []string{"a:1", "b:2"}, Digest: digest},
			{Type: samplers.SetMetric, Name: "users", Tags: []string{"svc:x"}, Set: set},
		},
	}
	if err := c.Flush(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	drain(t, c, stats)
	got := requests()
	if len(got) != 1 {
		t.Fatalf("%d requests, want 1", len(got))
	}
	r := got[0]
	if r.method != http.MethodPost || r.path != "/import" || r.contentType != "application/json" || r.contentEncoding != "deflate" {
		t.Errorf("%s %s Content-Type %q Content-Encoding %q", r.method, r.path, r.contentType, r.contentEncoding)
	}
	if !hexID.MatchString(r.batchID) {
		t.Errorf("%s %q, want 128 bits in hex", BatchHeader, r.batchID)
	}
	digestBytes, _ := digest.MarshalBinary()
	setBytes, _ := set.MarshalBinary()
	want, _ := json.Marshal([]JSONMetric{
		{Name: "hits", Type: "counter", Tags: []string{}, Value: counterBytes(2.5)},
		{Name: "lat", Type: "timer", Tags: []string{"a:1", "b:2"}, Value: digestBytes},
		{Name: "users", Type: "set", Tags: []string{"svc:x"}, Value: setBytes},
	})
	if string(r.body) != string(want)+"\n" {
		t.Errorf("body\n%s\nwant\n%s", r.body, want)
	}
	if n := stats.Sum("forward.post_metrics_total", "destination:forward"); n != 3 {
		t.Errorf("forward.post_metrics_total = %d, want 3", n)
	}
	if n := stats.Timings("forward.duration_ns", "part:marshal"); n != 1 {
		t.Errorf("%d forward.duration_ns{part:marshal}, want 1", n)
	}
	if n := stats.Timings("forward.duration_ns", "part:post", "destination:forward"); n != 1 {
		t.Errorf("%d forward.duration_ns{part:post}, want 1", n)
	}
	for _, name := range []string{"forward.error_total", "forward.retry_total", "forward.dropped_total"} {
		if n := stats.Sum(name); n != 0 {
			t.Errorf("%s = %d, want 0", name, n)
		}
	}
	if len(hook.AllEntries()) != 0 {
		t.Errorf("logged %q", hook.LastEntry().Message)
	}
}

// Nothing to forward: no request, no self-metric but the spool's size.
func TestClientEmpty(t *testing.T) {
	srv, requests := recordingServer(t, http.StatusAccepted, "")
	c, stats, _ := newClient(t, srv.URL)
	for _, b := range []*plugins.Batch{{}, {Metrics: []samplers.InterMetric{{Value: 1}}, Forward: []samplers.Forwarded{}}} {
		if err := c.Flush(context.Background(), b); err != nil {
			t.Error(err)
		}
	}
	drain(t, c, stats)
	if n := len(requests()); n != 0 {
		t.Errorf("%d requests, want none", n)
	}
	if names := stats.Names(); len(names) != 0 || stats.Timings("forward.duration_ns") != 0 {
		t.Errorf("self-metrics %q", names)
	}
	if v, ok := stats.GaugeValue("forward.spool_bytes", "destination:forward"); !ok || v != 0 {
		t.Errorf("forward.spool_bytes = %v, %v; want 0", v, ok)
	}
}

// What the client sends, an Importer merges as it was.
func TestClientToImporter(t *testing.T) {
	m := &fakeMerger{}
	srv := httptest.NewServer(NewImporter(m, ImporterConfig{}))
	defer srv.Close()
	c, stats, _ := newClient(t, srv.URL)
	digest := digestOf(t, 10, 20, 30)
	in := []samplers.Forwarded{
		{Type: samplers.HistogramMetric, Scope: samplers.MixedScope, Name: "lat", Tags: []string{"svc:a"}, Digest: digest},
		{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: "global.hits", Counter: 3},
		{Type: samplers.SetMetric, Scope: samplers.MixedScope, Name: "users", Set: sketchOf("alice", "bob")},
	}
	if err := c.Flush(context.Background(), &plugins.Batch{Forward: in}); err != nil {
		t.Fatal(err)
	}
	drain(t, c, stats)
	got := m.merged()
	if len(got) != len(in) {
		t.Fatalf("merged %d, want %d", len(got), len(in))
	}
	for i := range in {
		g, w := got[i], in[i]
		if g.Type != w.Type || g.Scope != w.Scope || g.Name != w.Name || len(g.Tags) != len(w.Tags) || !slices.Equal(g.Tags, w.Tags) || g.Counter != w.Counter {
			t.Errorf("merged %+v, sent %+v", g, w)
		}
	}
	if got[0].Digest.Quantile(0.5) != 20 || got[0].Digest.Count() != 3 {
		t.Errorf("digest median %v count %v", got[0].Digest.Quantile(0.5), got[0].Digest.Count())
	}
	if got[2].Set.Estimate() != 2 {
		t.Errorf("set of %d", got[2].Set.Estimate())
	}
	if n := stats.Sum("forward.post_metrics_total"); n != 3 {
		t.Errorf("forward.post_metrics_total = %d, want 3", n)
	}
}

// A failed forward is retried with the same batch id, in order of flush;
// each flush has an id of its own.
func TestClientRetriesWithTheSameBatchID(t *testing.T) {
	srv, requests := scriptedServer(t, func(n int) (int, string) {
		if n <= 2 {
			return http.StatusServiceUnavailable, "busy"
		}
		return http.StatusAccepted, `{"accepted":1}`
	})
	c, stats, hook := newClient(t, srv.URL)
	for _, name := range []string{"first", "second"} {
		err := c.Flush(context.Background(), &plugins.Batch{Forward: []samplers.Forwarded{{Type: samplers.CounterMetric, Name: name, Counter: 1}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	drain(t, c, stats)
	got := requests()
	if len(got) != 4 {
		t.Fatalf("%d requests, want 4: the first three times, then the second", len(got))
	}
	for i, r := range got {
		first := i < 3
		if bytes.Contains(r.body, []byte(`"first"`)) != first {
			t.Errorf("request %d: %s, want the flushes in order", i, r.body)
		}
		if first && r.batchID != got[0].batchID {
			t.Errorf("retry %d has batch id %q, the first attempt %q", i, r.batchID, got[0].batchID)
		}
		if !hexID.MatchString(r.batchID) {
			t.Errorf("batch id %q", r.batchID)
		}
	}
	if got[3].batchID == got[0].batchID {
		t.Errorf("two flushes share the batch id %q", got[0].batchID)
	}
	for _, c := range []struct {
		name string
		tags []string
		want int64
	}{
		{"forward.post_metrics_total", nil, 2},
		{"forward.retry_total", nil, 2},
		{"forward.error_total", []string{"cause:response", "destination:forward"}, 2},
		{"forward.dropped_total", nil, 0},
	} {
		if n := stats.Sum(c.name, c.tags...); n != c.want {
			t.Errorf("%s %v = %d, want %d", c.name, c.tags, n, c.want)
		}
	}
	if e := hook.AllEntries(); len(e) == 0 || e[0].Level != logrus.ErrorLevel || !strings.Contains(e[0].Message, "retrying in") {
		t.Errorf("log entries %+v, want the failure and the retry", e)
	}
}

// A global that merged a batch but whose answer was lost gets the retry,
// with the same id, and does not merge it twice.
func TestClientRetryIsMergedOnce(t *testing.T) {
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			// Merge, then lose the answer with the connection.
			im.ServeHTTP(httptest.NewRecorder(), r)
			panic(http.ErrAbortHandler)
		}
		im.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c, stats, _ := newClient(t, srv.URL)
	err := c.Flush(context.Background(), &plugins.Batch{Forward: []samplers.Forwarded{{Type: samplers.CounterMetric, Name: "hits", Counter: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, c, stats)
	mu.Lock()
	n := calls
	mu.Unlock()
	if n != 2 {
		t.Errorf("%d requests, want the first and its retry", n)
	}
	if n := m.numCalls(); n != 1 || len(m.merged()) != 1 {
		t.Errorf("merged %d times (%d metrics), want once", n, len(m.merged()))
	}
	if n := stats.Sum("forward.post_metrics_total"); n != 1 {
		t.Errorf("forward.post_metrics_total = %d, want 1", n)
	}
	if n := stats.Sum("forward.error_total", "cause:post"); n != 1 {
		t.Errorf("forward.error_total{cause:post} = %d, want 1", n)
	}
}

// A global that refuses a forward (a 4xx) is not asked again; one that is
// gone is asked until Close gives up.
func TestClientErrors(t *testing.T) {
	srv, requests := recordingServer(t, http.StatusBadRequest, "no good metric")
	c, stats, hook := newClient(t, srv.URL)
	b := &plugins.Batch{Forward: []samplers.Forwarded{{Type: samplers.CounterMetric, Name: "x", Counter: 1}}}
	if err := c.Flush(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	drain(t, c, stats)
	if n := len(requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if n := stats.Sum("forward.dropped_total", "cause:rejected_4xx", "destination:forward"); n != 1 {
		t.Errorf("forward.dropped_total{cause:rejected_4xx} = %d, want 1", n)
	}
	if n := stats.Sum("forward.error_total", "cause:response"); n != 1 {
		t.Errorf("forward.error_total{cause:response} = %d, want 1", n)
	}
	e := hook.LastEntry()
	if e == nil || e.Level != logrus.ErrorLevel || !strings.HasSuffix(e.Message, "dropped (rejected_4xx)") ||
		!strings.Contains(fmt.Sprint(e.Data[logrus.ErrorKey]), "no good metric") || e.Data["items"] != 1 {
		t.Errorf("log entry %+v", e)
	}

	srv.Close()
	c, stats, hook = newClient(t, srv.URL)
	if err := c.Flush(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Close(ctx); err == nil || !strings.Contains(err.Error(), "dropped at shutdown") {
		t.Errorf("Close = %v, want the forward dropped", err)
	}
	c.Report(stats)
	if n := stats.Sum("forward.error_total", "cause:post"); n < 1 {
		t.Errorf("forward.error_total{cause:post} = %d, want at least 1", n)
	}
	if n := stats.Sum("forward.dropped_total", "cause:shutdown"); n != 1 {
		t.Errorf("forward.dropped_total{cause:shutdown} = %d, want 1", n)
	}
	if n := stats.Sum("forward.post_metrics_total"); n != 0 {
		t.Errorf("forward.post_metrics_total = %d, want 0", n)
	}
	if e := hook.LastEntry(); e == nil || e.Level != logrus.WarnLevel {
		t.Errorf("log entry %+v, want the warning of the drop", e)
	}
}

// A metric that does not encode is left out and counted as marshal; the
// others are still sent.
func TestClientSkipsWhatDoesNotEncode(t *testing.T) {
	srv, requests := recordingServer(t, http.StatusAccepted, "")
	c, stats, _ := newClient(t, srv.URL)
	err := c.Flush(context.Background(), &plugins.Batch{Forward: []samplers.Forwarded{
		{Type: samplers.GaugeMetric, Name: "temp"},
		{Type: samplers.CounterMetric, Name: "ok", Counter: 1},
	}})
	if err == nil || !strings.Contains(err.Error(), "temp") {
		t.Errorf("Flush = %v, want an error naming the metric left out", err)
	}
	// Nothing that encodes: nothing is posted.
	err = c.Flush(context.Background(), &plugins.Batch{Forward: []samplers.Forwarded{{Type: samplers.SetMetric, Name: "s"}}})
	if err == nil {
		t.Error("Flush of a set without a sketch succeeded")
	}
	drain(t, c, stats)
	got := requests()
	if len(got) != 1 || !bytes.Contains(got[0].body, []byte(`"name":"ok"`)) || bytes.Contains(got[0].body, []byte("temp")) {
		t.Errorf("requests %+v", got)
	}
	if n := stats.Sum("forward.error_total", "cause:marshal"); n != 2 {
		t.Errorf("forward.error_total cause:marshal = %d, want 2", n)
	}
	if n := stats.Sum("forward.post_metrics_total"); n != 1 {
		t.Errorf("forward.post_metrics_total = %d, want 1", n)
	}
}

func TestNewClientChecksConfig(t *testing.T) {
	for _, addr := range []string{"", "veneur-global:8127", "ftp://veneur-global", "http://", "http://[::1", "/import"} {
		if c, err := NewClient(ClientConfig{Address: addr}, plugins.Env{}); err == nil || !strings.HasPrefix(err.Error(), "forward_address") {
			t.Errorf("NewClient(%q) = %v, %v; want an error naming forward_address", addr, c, err)
		}
	}
	_, err := NewClient(ClientConfig{Address: "http://x", Delivery: plugins.DeliveryConfig{MaxBytes: -1}}, plugins.Env{})
	if err == nil || !strings.Contains(err.Error(), "flush_spool_bytes") {
		t.Errorf("NewClient with a negative spool = %v, want an error naming flush_spool_bytes", err)
	}
	// Without a logger or statsd client, it still works.
	srv, requests := recordingServer(t, http.StatusAccepted, "")
	c, err := NewClient(ClientConfig{Address: srv.URL, Client: srv.Client()}, plugins.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(context.Background(), &plugins.Batch{Forward: []samplers.Forwarded{{Type: samplers.CounterMetric, Name: "x"}}}); err != nil {
		t.Error(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Error(err)
	}
	if n := len(requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}
