package veneur

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/ssf"
)

func TestAppendSSFLine(t *testing.T) {
	for _, c := range []struct {
		m    *ssf.SSFSample
		want string // "" means refused
	}{
		{&ssf.SSFSample{Metric: ssf.SSFSample_COUNTER, Name: "hits", Value: 2}, "hits:2|c"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_GAUGE, Name: "temp", Value: 21.5, Tags: map[string]string{"b": "2", "a": "x,y|z", "flag": ""}}, "temp:21.5|g|#a:x_y_z,b:2,flag"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_HISTOGRAM, Name: "lat", Value: 0.25, SampleRate: 0.5}, "lat:0.25|h|@0.5"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_HISTOGRAM, Name: "lat", Value: 1, SampleRate: 1}, "lat:1|h"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_SET, Name: "users", Message: "alice"}, "users:alice|s"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_COUNTER, Name: ""}, ""},
		{&ssf.SSFSample{Metric: ssf.SSFSample_COUNTER, Name: "a:b"}, ""},
		{&ssf.SSFSample{Metric: ssf.SSFSample_SET, Name: "users"}, ""},
		{&ssf.SSFSample{Metric: ssf.SSFSample_STATUS, Name: "up"}, ""},
	} {
		got, ok := appendSSFLine(nil, c.m)
		if (c.want == "") != !ok || (ok && string(got) != c.want) {
			t.Errorf("appendSSFLine(%v) = %q, %v; want %q", c.m, got, ok, c.want)
		}
	}
}

// An SSF span over UDP: its metrics are aggregated like DogStatsD lines
// (a STATUS metric becomes a service check), the span reaches the trace
// agent, and garbage is counted.
func TestServerSSF(t *testing.T) {
	bodies := make(chan []byte, 4)
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.URL.Path != "/v0.3/traces" {
			t.Errorf("trace agent got %s %s", r.Method, r.URL.Path)
		}
		b, _ := io.ReadAll(r.Body)
		bodies <- b
	}))
	defer agent.Close()
	s, out := startServer(t, testConfig(t, "trace_address: 127.0.0.1:0\ntrace_api_address: "+agent.URL+"\n"))
	const start = 1700000000_000000000
	span := &ssf.SSFSpan{
		TraceId: 7, Id: 8, ParentId: 7, StartTimestamp: start, EndTimestamp: start + 1500, Error: true,
		Service: "api", Name: "GET /users", Indicator: true, Tags: map[string]string{"resource": "/users/:id", "env": "dev"},
		Metrics: []*ssf.SSFSample{
			{Metric: ssf.SSFSample_COUNTER, Name: "api.hits", Value: 3, Tags: map[string]string{"code": "200"}},
			{Metric: ssf.SSFSample_HISTOGRAM, Name: "api.lat", Value: 12},
			{Metric: ssf.SSFSample_STATUS, Name: "api.up", Status: ssf.SSFSample_WARNING, Message: "slow", Timestamp: start},
			{Metric: ssf.SSFSample_COUNTER, Name: "bad|name", Value: 1},
		},
	}
	b, err := proto.Marshal(span)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", s.TraceAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("not a protobuf \xff\xff"))
	c.Write(b)
	waitFor(t, "2 SSF datagrams", func() bool { return s.traces.received.Load() >= 2 && s.ingest.lines.Load() >= 2 })
	if n := s.traces.errs[ssfErrDecode].Load(); n != 1 {
		t.Errorf("%d undecodable datagrams counted, want 1", n)
	}
	if n := s.traces.errs[ssfErrMetric].Load(); n != 1 {
		t.Errorf("%d bad metrics counted, want 1", n)
	}
	s.Flush(context.Background(), time.Unix(1000, 0))
	shutdown(t, s)
	got := out.String()
	for _, want := range []string{
		"api.hits rate 0.0008333333333333334 interval=3600 host=box tags=[code:200]",
		"api.lat.max gauge 12 ",
		`check 2023-11-14T22:13:20Z api.up status=1 host=box message="slow" tags=[]`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	select {
	case body := <-bodies:
		var traces [][]map[string]any
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.UseNumber() // span times are nanoseconds, beyond float64's exact integers
		if err := dec.Decode(&traces); err != nil {
			t.Fatalf("trace body %s: %v", body, err)
		}
		want := `[[{"duration":1500,"error":1,"meta":{"env":"dev","indicator":"true"},"metrics":{},"name":"GET /users","parent_id":7,"resource":"/users/:id","service":"api","span_id":8,"start":1700000000000000000,"trace_id":7,"type":"custom"}]]`
		if norm, _ := json.Marshal(traces); string(norm) != want {
			t.Errorf("trace body\n%s\nwant\n%s", norm, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no spans reached the trace agent")
	}
}
