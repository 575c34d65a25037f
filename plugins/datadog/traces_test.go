package datadog

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/ssf"
)

// traceAgent stands in for the trace agent, answering status; it sends
// each request's method, path and body on the returned channel.
func traceAgent(t *testing.T, status int) (string, <-chan [3]string) {
	t.Helper()
	got := make(chan [3]string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		b, _ := io.ReadAll(r.Body)
		got <- [3]string{r.Method, r.URL.Path, string(b)}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, got
}

func TestNewTracesChecksConfig(t *testing.T) {
	for _, c := range []struct{ addr, want string }{
		{"http://localhost:8126", ""},
		{"", "trace_api_address is empty"},
		{"localhost:8126", `trace_api_address "localhost:8126": not an absolute http(s) URL`},
	} {
		_, err := NewTraces(TraceConfig{Address: c.addr}, plugins.Env{})
		switch {
		case c.want == "" && err != nil:
			t.Errorf("NewTraces(%q) = %v, want it accepted", c.addr, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("NewTraces(%q) = %v, want an error with %q", c.addr, err, c.want)
		}
	}
}

func TestTracesPut(t *testing.T) {
	url, got := traceAgent(t, http.StatusOK)
	stats := &statsRecorder{}
	s := newTraces(t, url+"/", plugins.Env{Stats: stats})
	if s.Name() != "trace_api" {
		t.Errorf("Name() = %q", s.Name())
	}
	const start = 1700000000_000000000
	spans := []*ssf.SSFSpan{
		{TraceId: 7, Id: 8, ParentId: 7, StartTimestamp: start, EndTimestamp: start + 1500, Error: true,
			Service: "api", Name: "GET /users", Indicator: true, Tags: map[string]string{"resource": "/users/:id", "env": "dev"}},
		{TraceId: 9, Id: 1, StartTimestamp: start, EndTimestamp: start + 10,
			Service: "db", Tags: map[string]string{"name": "query", "type": "sql"}},
		{TraceId: 7, Id: 10, ParentId: 8, StartTimestamp: start + 100, EndTimestamp: start + 200, Service: "api", Name: "render"},
	}
	if err := s.Flush(context.Background(), &plugins.Batch{Spans: spans}); err != nil {
		t.Fatal(err)
	}
	drainTraces(t, s, stats)
	req := <-got
	want := `[[` +
		`{"trace_id":7,"span_id":8,"parent_id":7,"name":"GET /users","resource":"/users/:id","service":"api","type":"custom","start":1700000000000000000,"duration":1500,"error":1,"meta":{"env":"dev","indicator":"true"},"metrics":{}},` +
		`{"trace_id":7,"span_id":10,"parent_id":8,"name":"render","resource":"render","service":"api","type":"custom","start":1700000000000000100,"duration":100,"error":0,"meta":{},"metrics":{}}` +
		`],[` +
		`{"trace_id":9,"span_id":1,"name":"query","resource":"query","service":"db","type":"sql","start":1700000000000000000,"duration":10,"error":0,"meta":{},"metrics":{}}` +
		`]]`
	if req[0] != http.MethodPut || req[1] != "/v0.3/traces" || req[2] != want {
		t.Errorf("trace agent got %s %s\n%s\nwant PUT /v0.3/traces\n%s", req[0], req[1], req[2], want)
	}
	if v := stats.metrics["ssf.spans_flushed_total{}"]; len(v) != 1 || v[0] != 3 {
		t.Errorf("ssf.spans_flushed_total = %v, want 3", v)
	}
	if v := stats.metrics["trace_api.post_metrics_total{destination:trace_api}"]; len(v) != 1 || v[0] != 3 {
		t.Errorf("trace_api.post_metrics_total = %v, want 3 spans", v)
	}
	// The spans are left as they were.
	if spans[0].Tags["resource"] != "/users/:id" || len(spans[0].Tags) != 2 {
		t.Errorf("span tags changed: %v", spans[0].Tags)
	}
}

func TestTracesNothingToSend(t *testing.T) {
	url, got := traceAgent(t, http.StatusOK)
	s := newTraces(t, url, plugins.Env{})
	if err := s.Flush(context.Background(), &plugins.Batch{}); err != nil {
		t.Fatal(err)
	}
	drainTraces(t, s, nil)
	select {
	case r := <-got:
		t.Errorf("a batch without spans sent %v", r)
	default:
	}
}

// An agent that fails is asked again; one that refuses the spans is not,
// and they are not counted as flushed.
func TestTracesRetriedOrDropped(t *testing.T) {
	for _, c := range []struct {
		status   int
		attempts int
		flushed  float64
	}{
		{http.StatusServiceUnavailable, 2, 1},
		{http.StatusBadRequest, 1, 0},
	} {
		t.Run(strconv.Itoa(c.status), func(t *testing.T) {
			var mu sync.Mutex
			attempts := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				mu.Lock()
				attempts++
				first := attempts == 1
				mu.Unlock()
				if first {
					w.WriteHeader(c.status)
				}
			}))
			defer srv.Close()
			stats := &statsRecorder{}
			s := newTraces(t, srv.URL, plugins.Env{Stats: stats})
			err := s.Flush(context.Background(), &plugins.Batch{Spans: []*ssf.SSFSpan{{TraceId: 1, Id: 1, StartTimestamp: 1, EndTimestamp: 2}}})
			if err != nil {
				t.Fatal(err)
			}
			drainTraces(t, s, stats)
			mu.Lock()
			n := attempts
			mu.Unlock()
			if n != c.attempts {
				t.Errorf("%d attempts, want %d", n, c.attempts)
			}
			var flushed float64
			for _, v := range stats.metrics["ssf.spans_flushed_total{}"] {
				flushed += v
			}
			if flushed != c.flushed {
				t.Errorf("ssf.spans_flushed_total = %v, want %v", flushed, c.flushed)
			}
			if c.flushed == 0 && len(stats.metrics["trace_api.dropped_total{cause:rejected_4xx,destination:trace_api}"]) != 1 {
				t.Errorf("self-metrics %v, want the span dropped", stats.names())
			}
		})
	}
}

func newTraces(t *testing.T, url string, env plugins.Env) *TraceSink {
	t.Helper()
	s, err := NewTraces(TraceConfig{Address: url, Delivery: fastDelivery}, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

func drainTraces(t *testing.T, s *TraceSink, stats *statsRecorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if stats != nil {
		s.Report(stats)
	}
}
