package listen

import (
	"net"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/ssf"
)

func marshalSpan(t testing.TB, sp *ssf.SSFSpan) []byte {
	t.Helper()
	b, err := proto.Marshal(sp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAppendSSFLine(t *testing.T) {
	for _, c := range []struct {
		m    *ssf.SSFSample
		want string // "" means refused
	}{
		{&ssf.SSFSample{Metric: ssf.SSFSample_COUNTER, Name: "hits", Value: 2}, "hits:2|c"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_GAUGE, Name: "temp", Value: 21.5, Tags: map[string]string{"b": "2", "a": "x,y|z", "flag": ""}}, "temp:21.5|g|#a:x_y_z,b:2,flag"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_GAUGE, Name: "g", Value: 1, Tags: map[string]string{"": "dropped", "k\nk": "v"}}, "g:1|g|#k_k:v"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_HISTOGRAM, Name: "lat", Value: 0.25, SampleRate: 0.5}, "lat:0.25|h|@0.5"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_HISTOGRAM, Name: "lat", Value: 1, SampleRate: 1}, "lat:1|h"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_SET, Name: "users", Message: "alice"}, "users:alice|s"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_COUNTER, Name: ""}, ""},
		{&ssf.SSFSample{Metric: ssf.SSFSample_COUNTER, Name: "a:b"}, ""},
		{&ssf.SSFSample{Metric: ssf.SSFSample_SET, Name: "users"}, ""},
		{&ssf.SSFSample{Metric: ssf.SSFSample_SET, Name: "users", Message: "a|b"}, ""},
		{&ssf.SSFSample{Metric: ssf.SSFSample_STATUS, Name: "up"}, ""},
		// Names and members a DogStatsD line would read otherwise.
		{&ssf.SSFSample{Metric: ssf.SSFSample_COUNTER, Name: "_e{1,1}", Value: 1}, ""},
		{&ssf.SSFSample{Metric: ssf.SSFSample_COUNTER, Name: "_sc", Value: 1}, "_sc:1|c"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_SET, Name: "users", Message: "bob\r"}, ""},
		{&ssf.SSFSample{Metric: ssf.SSFSample_SET, Name: "users", Message: "b\rob"}, "users:b\rob|s"},
		{&ssf.SSFSample{Metric: ssf.SSFSample_GAUGE, Name: "g", Value: 1, Tags: map[string]string{"k": "v\r"}}, "g:1|g|#k:v_"},
	} {
		got, ok := appendSSFLine(nil, c.m)
		if (c.want == "") != !ok || (ok && string(got) != c.want) {
			t.Errorf("appendSSFLine(%v) = %q, %v; want %q", c.m, got, ok, c.want)
		}
	}
}

func startSSF(t *testing.T, maxLen int, snk *sink) *SSF {
	t.Helper()
	l, err := NewSSF(SSFConfig{Address: "127.0.0.1:0", MaxLength: maxLen}, snk.newIngester, Options{Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	return l
}

// An SSF span's metrics become DogStatsD lines, a STATUS sample a service
// check, and a span with ids and times goes to Span; garbage, too long
// datagrams and bad metrics are counted by cause.
func TestSSF(t *testing.T) {
	snk := newSink(t)
	const maxLen = 512
	l := startSSF(t, maxLen, snk)
	const start = 1700000000_000000000
	traced := &ssf.SSFSpan{
		TraceId: 7, Id: 8, ParentId: 7, StartTimestamp: start, EndTimestamp: start + 1500,
		Service: "api", Name: "GET /users", Tags: map[string]string{"env": "dev"},
		Metrics: []*ssf.SSFSample{
			{Metric: ssf.SSFSample_COUNTER, Name: "api.hits", Value: 3, Tags: map[string]string{"code": "200"}},
			{Metric: ssf.SSFSample_HISTOGRAM, Name: "api.lat", Value: 12},
			{Metric: ssf.SSFSample_STATUS, Name: "api.up", Status: ssf.SSFSample_WARNING, Message: "slow", Timestamp: start, Tags: map[string]string{"a|b": "c"}},
			{Metric: ssf.SSFSample_COUNTER, Name: "bad|name", Value: 1},
			{Metric: ssf.SSFSample_STATUS, Name: ""},
		},
	}
	untraced := &ssf.SSFSpan{Metrics: []*ssf.SSFSample{{Metric: ssf.SSFSample_SET, Name: "users", Message: "bob"}}}
	sendUDP(t, l.Addr(),
		"not a protobuf \xff\xff",
		strings.Repeat("\x00", maxLen+1),
		string(marshalSpan(t, traced)),
		string(marshalSpan(t, untraced)),
	)
	waitFor(t, "both spans' lines", func() bool { return len(snk.get().lines) >= 3 })
	stop(t, l)
	got := snk.get()
	if want := []string{"api.hits:3|c|#code:200", "api.lat:12|h", "users:bob|s"}; !slices.Equal(got.lines, want) {
		t.Errorf("lines %q, want %q", got.lines, want)
	}
	wantCheck := samplers.ServiceCheck{Name: "api.up", Status: 1, Timestamp: start / 1e9, Message: "slow", Tags: []string{"a_b:c"}}
	if len(got.checks) != 1 || !checkEqual(got.checks[0], wantCheck) {
		t.Errorf("checks %+v, want [%+v]", got.checks, wantCheck)
	}
	if len(got.spans) != 1 || got.spans[0].TraceId != 7 || got.spans[0].Id != 8 || got.spans[0].Name != "GET /users" {
		t.Errorf("spans %v, want the traced one only", got.spans)
	}
	if len(got.skips) != 0 || got.packets != 0 {
		t.Errorf("%d skips and %d packets, want none", len(got.skips), got.packets)
	}
	rec := &statstest.Recorder{}
	l.Report(rec)
	for _, c := range []struct {
		name string
		tags []string
		want int64
	}{
		{"ssf.received_total", nil, 4},
		{"ssf.error_total", []string{"cause:decode"}, 1},
		{"ssf.error_total", []string{"cause:too_long"}, 1},
		{"ssf.error_total", []string{"cause:invalid_metric"}, 2},
		{"ssf.error_total", nil, 4},
		{"packet.read_error_total", nil, 0},
	} {
		if n := rec.Sum(c.name, c.tags...); n != c.want {
			t.Errorf("%s%v = %d, want %d", c.name, c.tags, n, c.want)
		}
	}
}

func checkEqual(a, b samplers.ServiceCheck) bool {
	return a.Name == b.Name && a.Status == b.Status && a.Timestamp == b.Timestamp && a.Host == b.Host &&
		a.Message == b.Message && slices.Equal(a.Tags, b.Tags)
}

// Stop reads the spans already queued before it closes the socket.
func TestSSFStopDrains(t *testing.T) {
	snk := newSink(t)
	l := startSSF(t, 4096, snk)
	const n = 50
	span := string(marshalSpan(t, &ssf.SSFSpan{Metrics: []*ssf.SSFSample{{Metric: ssf.SSFSample_COUNTER, Name: "c", Value: 1}}}))
	d := make([]string, n)
	for i := range d {
		d[i] = span
	}
	sendUDP(t, l.Addr(), d...)
	stop(t, l)
	if got := len(snk.get().lines); got != n {
		t.Errorf("%d lines, want %d", got, n)
	}
	// The socket is closed: the port is free again.
	c, err := net.ListenPacket("udp", l.Addr().String())
	if err != nil {
		t.Errorf("the SSF socket is still bound after Stop: %v", err)
	} else {
		c.Close()
	}
}
