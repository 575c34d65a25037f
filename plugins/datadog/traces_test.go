package datadog

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
	s, err := NewTraces(TraceConfig{Address: url + "/"}, plugins.Env{Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
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
	// The spans are left as they were.
	if spans[0].Tags["resource"] != "/users/:id" || len(spans[0].Tags) != 2 {
		t.Errorf("span tags changed: %v", spans[0].Tags)
	}
}

func TestTracesNothingToSend(t *testing.T) {
	url, got := traceAgent(t, http.StatusOK)
	s, err := NewTraces(TraceConfig{Address: url}, plugins.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(context.Background(), &plugins.Batch{}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		t.Errorf("a batch without spans sent %v", r)
	default:
	}
}

func TestTracesError(t *testing.T) {
	url, _ := traceAgent(t, http.StatusBadRequest)
	stats := &statsRecorder{}
	s, err := NewTraces(TraceConfig{Address: url}, plugins.Env{Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Flush(context.Background(), &plugins.Batch{Spans: []*ssf.SSFSpan{{TraceId: 1, Id: 1, StartTimestamp: 1, EndTimestamp: 2}}})
	if err == nil || !strings.Contains(err.Error(), "400 Bad Request") {
		t.Errorf("err = %v, want the agent's 400", err)
	}
	if n := len(stats.names()); n != 0 {
		t.Errorf("a failed put counted %v", stats.names())
	}
}
