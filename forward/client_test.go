package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

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
	body                                       []byte // decompressed
}

// recordingServer answers every request with code and msg, and records it.
func recordingServer(t *testing.T, code int, msg string) (*httptest.Server, func() []request) {
	t.Helper()
	var mu sync.Mutex
	var got []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := request{method: r.Method, path: r.URL.Path, contentType: r.Header.Get("Content-Type"), contentEncoding: r.Header.Get("Content-Encoding")}
		zr, err := zlib.NewReader(r.Body)
		if err == nil {
			req.body, err = io.ReadAll(zr)
		}
		if err != nil {
			t.Errorf("request body: %v", err)
		}
		mu.Lock()
		got = append(got, req)
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

func newClient(t *testing.T, addr string) (*Client, *statstest.Recorder, *test.Hook) {
	t.Helper()
	log, hook := test.NewNullLogger()
	stats := &statstest.Recorder{}
	c, err := NewClient(ClientConfig{Address: addr}, plugins.Env{Log: log, Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	return c, stats, hook
}

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
	got := requests()
	if len(got) != 1 {
		t.Fatalf("%d requests, want 1", len(got))
	}
	r := got[0]
	if r.method != http.MethodPost || r.path != "/import" || r.contentType != "application/json" || r.contentEncoding != "deflate" {
		t.Errorf("%s %s Content-Type %q Content-Encoding %q", r.method, r.path, r.contentType, r.contentEncoding)
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
	if n := stats.Sum("forward.post_metrics_total"); n != 3 {
		t.Errorf("forward.post_metrics_total = %d, want 3", n)
	}
	if n := stats.Timings("forward.duration_ns"); n != 1 {
		t.Errorf("%d forward.duration_ns, want 1", n)
	}
	if n := stats.Sum("forward.error_total"); n != 0 {
		t.Errorf("forward.error_total = %d, want 0", n)
	}
	if len(hook.AllEntries()) != 0 {
		t.Errorf("logged %q", hook.LastEntry().Message)
	}
}

// Nothing to forward: no request, no self-metrics.
func TestClientEmpty(t *testing.T) {
	srv, requests := recordingServer(t, http.StatusAccepted, "")
	c, stats, _ := newClient(t, srv.URL)
	for _, b := range []*plugins.Batch{{}, {Metrics: []samplers.InterMetric{{Value: 1}}, Forward: []samplers.Forwarded{}}} {
		if err := c.Flush(context.Background(), b); err != nil {
			t.Error(err)
		}
	}
	if n := len(requests()); n != 0 {
		t.Errorf("%d requests, want none", n)
	}
	if names := stats.Names(); len(names) != 0 || stats.Timings("forward.duration_ns") != 0 {
		t.Errorf("self-metrics %q", names)
	}
}

// What the client sends, an Importer merges as it was.
func TestClientToImporter(t *testing.T) {
	m := &fakeMerger{}
	srv := httptest.NewServer(NewImporter(m))
	defer srv.Close()
	c, _, _ := newClient(t, srv.URL)
	digest := digestOf(t, 10, 20, 30)
	in := []samplers.Forwarded{
		{Type: samplers.HistogramMetric, Scope: samplers.MixedScope, Name: "lat", Tags: []string{"svc:a"}, Digest: digest},
		{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: "global.hits", Counter: 3},
		{Type: samplers.SetMetric, Scope: samplers.MixedScope, Name: "users", Set: sketchOf("alice", "bob")},
	}
	if err := c.Flush(context.Background(), &plugins.Batch{Forward: in}); err != nil {
		t.Fatal(err)
	}
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
}

func TestClientErrors(t *testing.T) {
	srv, _ := recordingServer(t, http.StatusServiceUnavailable, "overloaded")
	c, stats, hook := newClient(t, srv.URL)
	b := &plugins.Batch{Forward: []samplers.Forwarded{{Type: samplers.CounterMetric, Name: "x", Counter: 1}}}

	err := c.Flush(context.Background(), b)
	var se *plugins.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "overloaded") {
		t.Errorf("Flush to a failing global = %v, want a 503 with its message", err)
	}
	if n := stats.Sum("forward.error_total", "cause:response"); n != 1 {
		t.Errorf("forward.error_total cause:response = %d, want 1", n)
	}
	if e := hook.LastEntry(); e == nil || e.Level != logrus.ErrorLevel || e.Message != "forwarding to the global instance failed" || e.Data["metrics"] != 1 || e.Data[logrus.ErrorKey] != err {
		t.Errorf("log entry %+v", e)
	}

	srv.Close()
	err = c.Flush(context.Background(), b)
	if err == nil || errors.As(err, &se) {
		t.Errorf("Flush to a closed global = %v, want a transport error", err)
	}
	if n := stats.Sum("forward.error_total", "cause:post"); n != 1 {
		t.Errorf("forward.error_total cause:post = %d, want 1", n)
	}
	if n := stats.Sum("forward.post_metrics_total"); n != 2 {
		t.Errorf("forward.post_metrics_total = %d, want 2", n)
	}
	if n := stats.Timings("forward.duration_ns"); n != 2 {
		t.Errorf("%d forward.duration_ns, want 2", n)
	}
	if n := stats.Sum("forward.error_total"); n != 2 {
		t.Errorf("forward.error_total = %d in all, want 2", n)
	}
	if n := len(hook.AllEntries()); n != 2 {
		t.Errorf("%d log entries, want 2", n)
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
	got := requests()
	if len(got) != 1 || !bytes.Contains(got[0].body, []byte(`"name":"ok"`)) || bytes.Contains(got[0].body, []byte("temp")) {
		t.Errorf("requests %+v", got)
	}
	if n := stats.Sum("forward.error_total", "cause:marshal"); n != 1 {
		t.Errorf("forward.error_total cause:marshal = %d, want 1", n)
	}
	if n := stats.Sum("forward.post_metrics_total"); n != 1 {
		t.Errorf("forward.post_metrics_total = %d, want 1", n)
	}

	// Nothing that encodes: nothing is posted.
	err = c.Flush(context.Background(), &plugins.Batch{Forward: []samplers.Forwarded{{Type: samplers.SetMetric, Name: "s"}}})
	if err == nil {
		t.Error("Flush of a set without a sketch succeeded")
	}
	if n := len(requests()); n != 1 {
		t.Errorf("%d requests, want still 1", n)
	}
	if n := stats.Sum("forward.error_total", "cause:marshal"); n != 2 {
		t.Errorf("forward.error_total cause:marshal = %d, want 2", n)
	}
}

func TestNewClientChecksAddress(t *testing.T) {
	for _, addr := range []string{"", "veneur-global:8127", "ftp://veneur-global", "http://", "http://[::1", "/import"} {
		if c, err := NewClient(ClientConfig{Address: addr}, plugins.Env{}); err == nil || !strings.HasPrefix(err.Error(), "forward_address") {
			t.Errorf("NewClient(%q) = %v, %v; want an error naming forward_address", addr, c, err)
		}
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
	if n := len(requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	srv.Close()
	if err := c.Flush(context.Background(), &plugins.Batch{Forward: []samplers.Forwarded{{Type: samplers.CounterMetric, Name: "x"}}}); err == nil {
		t.Error("Flush to a closed server succeeded")
	}
}
