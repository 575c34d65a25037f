package datadog

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"

	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// statsRecorder records the self-metrics a sink emits, as
// "name{tags}" lines, with their values.
type statsRecorder struct {
	statsd.NoOpClient
	mu      sync.Mutex
	metrics map[string][]float64
}

func (r *statsRecorder) record(name string, v float64, tags []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.metrics == nil {
		r.metrics = map[string][]float64{}
	}
	key := name + "{" + strings.Join(tags, ",") + "}"
	r.metrics[key] = append(r.metrics[key], v)
	return nil
}

func (r *statsRecorder) Count(name string, v int64, tags []string, _ float64) error {
	return r.record(name, float64(v), tags)
}

func (r *statsRecorder) Histogram(name string, v float64, tags []string, _ float64) error {
	return r.record(name, v, tags)
}

func (r *statsRecorder) TimeInMilliseconds(name string, v float64, tags []string, _ float64) error {
	return r.record(name, v, tags)
}

// names lists the recorded metrics with how many values each got.
func (r *statsRecorder) names() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.metrics {
		out[k] = len(v)
	}
	return out
}

type ddSeries struct {
	Metric     string          `json:"metric"`
	Points     [][]json.Number `json:"points"`
	Tags       []string        `json:"tags"`
	Host       *string         `json:"host"`
	DeviceName *string         `json:"device_name"`
	Type       string          `json:"type"`
	Interval   *int64          `json:"interval"`
}

func decodeSeries(t *testing.T, body []byte) []ddSeries {
	t.Helper()
	var payload struct {
		Series []ddSeries `json:"series"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&payload); err != nil {
		t.Fatalf("body is not the series JSON: %v\n%s", err, body)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("trailing data after the series JSON:\n%s", body)
	}
	return payload.Series
}

// testEnv is the Env of the sinks under test: host box, tag env:test, an
// interval of 10s.
func testEnv(stats statsd.ClientInterface) plugins.Env {
	return plugins.Env{
		Common: plugins.Common{Hostname: "box", Tags: []string{"env:test"}, Interval: 10 * time.Second},
		Stats:  stats,
	}
}

func testSink(t *testing.T, url string, maxPerBody int) *Sink {
	t.Helper()
	d, err := New(Config{APIHostname: url, APIKey: "k3y", MaxPerBody: maxPerBody}, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// encode is the uncompressed body the sink posts for metrics.
func encode(t *testing.T, d *Sink, metrics []samplers.InterMetric) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := d.writeSeries(&buf, metrics); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestNewChecksConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string // "" means accepted
	}{
		{Config{APIHostname: "https://app.datadoghq.com", APIKey: "k", MaxPerBody: 1}, ""},
		// An empty key is accepted, as it always was.
		{Config{APIHostname: "http://127.0.0.1:8080/", MaxPerBody: 5000}, ""},
		{Config{MaxPerBody: 1}, "api_hostname is empty; use a URL such as https://app.datadoghq.com"},
		{Config{APIHostname: "app.datadoghq.com", MaxPerBody: 1}, `api_hostname "app.datadoghq.com": not an absolute http(s) URL`},
		{Config{APIHostname: "ftp://x", MaxPerBody: 1}, `api_hostname "ftp://x": not an absolute http(s) URL`},
		{Config{APIHostname: "http://x"}, "flush_max_per_body = 0: must be greater than 0"},
		{Config{APIHostname: "http://x", MaxPerBody: -1}, "flush_max_per_body = -1: must be greater than 0"},
	} {
		_, err := New(c.cfg, testEnv(nil))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("New(%+v) = %v, want it accepted", c.cfg, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("New(%+v) = %v, want an error with %q", c.cfg, err, c.want)
		}
	}
}

func TestDatadogEncoding(t *testing.T) {
	d := testSink(t, "http://x", 10)
	metrics := []samplers.InterMetric{
		{Series: &samplers.Series{Name: "a.b", Tags: []string{"x:1"}}, Timestamp: 1700000000, Value: 0.7, Kind: samplers.RateKind},
		{Series: &samplers.Series{Name: "h", Host: "web1", Device: "sda"}, Suffix: ".99.9percentile", Timestamp: 1700000000, Value: 1e21},
		{Series: &samplers.Series{Name: "quote\"back\\slash\nnl\x01ctl\xffbad", Tags: []string{"é:ü"}}, Timestamp: 1, Value: -3},
		{Series: &samplers.Series{Name: "nan"}, Value: math.NaN()},
		{Series: &samplers.Series{Name: "inf"}, Value: math.Inf(-1)},
	}
	got := decodeSeries(t, encode(t, d, metrics))
	if len(got) != 3 {
		t.Fatalf("got %d series, want 3 (NaN and Inf skipped)", len(got))
	}
	s := got[0]
	if s.Metric != "a.b" || s.Type != "rate" || s.Interval == nil || *s.Interval != 10 || *s.Host != "box" || s.DeviceName != nil {
		t.Errorf("rate series = %+v", s)
	}
	if len(s.Points) != 1 || s.Points[0][0] != "1700000000" || s.Points[0][1] != "0.7" {
		t.Errorf("points = %v", s.Points)
	}
	if strings.Join(s.Tags, ",") != "x:1,env:test" {
		t.Errorf("tags = %v, want line tags then config tags", s.Tags)
	}
	s = got[1]
	if s.Metric != "h.99.9percentile" || s.Type != "gauge" || s.Interval != nil || *s.Host != "web1" || *s.DeviceName != "sda" {
		t.Errorf("gauge series = %+v", s)
	}
	if strings.Join(s.Tags, ",") != "env:test" {
		t.Errorf("tags = %v, want the config tags alone", s.Tags)
	}
	if v, _ := s.Points[0][1].Float64(); v != 1e21 {
		t.Errorf("value = %v", s.Points[0][1])
	}
	if got[2].Metric != "quote\"back\\slash\nnl\x01ctl\ufffdbad" || got[2].Tags[0] != "é:ü" {
		t.Errorf("escaping: %q %q", got[2].Metric, got[2].Tags)
	}
}

// The exact bytes of a body: member order, number forms, no spaces.
func TestDatadogEncodingExact(t *testing.T) {
	d := testSink(t, "http://x", 10)
	got := string(encode(t, d, []samplers.InterMetric{
		{Series: &samplers.Series{Name: "a", Tags: []string{"k:v"}}, Suffix: ".count", Timestamp: 1700000000, Value: 0.5, Kind: samplers.RateKind},
		{Series: &samplers.Series{Name: "b", Host: "h", Device: "sda"}, Timestamp: 1700000000, Value: 42},
	}))
	want := `{"series":[` +
		`{"metric":"a.count","points":[[1700000000,0.5]],"tags":["k:v","env:test"],"host":"box","type":"rate","interval":10},` +
		`{"metric":"b","points":[[1700000000,42]],"tags":["env:test"],"host":"h","device_name":"sda","type":"gauge"}]}`
	if got != want {
		t.Errorf("body\n%s\nwant\n%s", got, want)
	}
	if got := string(encode(t, d, nil)); got != `{"series":[]}` {
		t.Errorf("empty body %s", got)
	}
}

func TestDatadogOmitsEmptyHost(t *testing.T) {
	d, err := New(Config{APIHostname: "http://x", MaxPerBody: 10}, plugins.Env{})
	if err != nil {
		t.Fatal(err)
	}
	got := decodeSeries(t, encode(t, d, []samplers.InterMetric{{Series: &samplers.Series{Name: "a"}, Value: 1}}))
	if got[0].Host != nil || len(got[0].Tags) != 0 {
		t.Errorf("host = %v, tags = %v: want no host (omit_empty_hostname) and no tags", got[0].Host, got[0].Tags)
	}
}

// TestDatadogSharedSeries checks the encoder's per-series cache: values of
// one series in a row, then another series, then the first again.
func TestDatadogSharedSeries(t *testing.T) {
	d := testSink(t, "http://x", 10)
	a := &samplers.Series{Name: "a", Tags: []string{"k:1"}, Host: "h1"}
	b := &samplers.Series{Name: "b\"q", Device: "sda"}
	got := decodeSeries(t, encode(t, d, []samplers.InterMetric{
		{Series: a, Suffix: ".max", Value: 3},
		{Series: a, Suffix: ".count", Value: 0.5, Kind: samplers.RateKind},
		{Series: b, Value: 7},
		{Series: a, Suffix: ".min", Value: 1},
	}))
	want := []struct{ metric, tags, host, device, typ string }{
		{"a.max", "k:1,env:test", "h1", "", "gauge"},
		{"a.count", "k:1,env:test", "h1", "", "rate"},
		{"b\"q", "env:test", "box", "sda", "gauge"},
		{"a.min", "k:1,env:test", "h1", "", "gauge"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d series, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		dev := ""
		if g.DeviceName != nil {
			dev = *g.DeviceName
		}
		if g.Metric != w.metric || strings.Join(g.Tags, ",") != w.tags || *g.Host != w.host || dev != w.device || g.Type != w.typ {
			t.Errorf("series %d = %s %v host=%s device=%s %s, want %+v", i, g.Metric, g.Tags, *g.Host, dev, g.Type, w)
		}
	}
}

func TestAppendNumber(t *testing.T) {
	for _, v := range []float64{0, 1, -1, 42, 1e6, 999999999999999, 1e15, 1e21, 0.5, -0.25, 1.0 / 3, 5e-324, math.MaxFloat64, math.Copysign(0, -1)} {
		got := string(appendNumber(nil, v))
		back, err := strconv.ParseFloat(got, 64)
		if err != nil || back != v {
			t.Errorf("appendNumber(%v) = %q, reads back as %v (%v)", v, got, back, err)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("appendNumber(%v) = %q, not a JSON number", v, got)
		}
	}
}

// fakeAPI stands in for the series API: it checks each request and keeps
// the decoded bodies.
type fakeAPI struct {
	mu     sync.Mutex
	bodies [][]ddSeries
	status int
}

func (f *fakeAPI) handler(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/series" || r.URL.Query().Get("api_key") != "k3y" {
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
		}
		if r.Header.Get("Content-Encoding") != "deflate" || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("Content-Encoding %q, Content-Type %q", r.Header.Get("Content-Encoding"), r.Header.Get("Content-Type"))
		}
		zr, err := zlib.NewReader(r.Body)
		if err != nil {
			t.Errorf("body is not zlib: %v", err)
			return
		}
		raw, _ := io.ReadAll(zr)
		f.mu.Lock()
		f.bodies = append(f.bodies, decodeSeries(t, raw))
		status := f.status
		f.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
			w.Write([]byte(`{"errors":["nope"]}`))
		}
	}
}

func (f *fakeAPI) start(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(f.handler(t))
	t.Cleanup(srv.Close)
	return srv.URL
}

func metricsBatch(metrics ...samplers.InterMetric) *plugins.Batch {
	return &plugins.Batch{Metrics: metrics}
}

func TestDatadogChunks(t *testing.T) {
	api := &fakeAPI{}
	stats := &statsRecorder{}
	d, err := New(Config{APIHostname: api.start(t), APIKey: "k3y", MaxPerBody: 3}, testEnv(stats))
	if err != nil {
		t.Fatal(err)
	}
	var metrics []samplers.InterMetric
	for i := 0; i < 10; i++ {
		metrics = append(metrics, samplers.InterMetric{Series: &samplers.Series{Name: "m"}, Suffix: string(rune('a' + i)), Value: float64(i)})
	}
	if err := d.Flush(context.Background(), metricsBatch(metrics...)); err != nil {
		t.Fatal(err)
	}
	if len(api.bodies) != 4 {
		t.Fatalf("%d bodies, want 4", len(api.bodies))
	}
	seen := map[string]bool{}
	for _, b := range api.bodies {
		if len(b) > 3 {
			t.Errorf("body of %d series exceeds flush_max_per_body 3", len(b))
		}
		for _, s := range b {
			seen[s.Metric] = true
		}
	}
	if len(seen) != 10 {
		t.Errorf("%d distinct series arrived, want 10", len(seen))
	}
	// One flush, four bodies, no error.
	want := map[string]int{
		"flush.post_metrics_total{}":      1,
		"flush.total_duration_ns{}":       1,
		"flush.duration_ns{part:marshal}": 4,
		"flush.duration_ns{part:post}":    4,
		"flush.content_length_bytes{}":    4,
	}
	if got := stats.names(); !mapsEqual(got, want) {
		t.Errorf("self-metrics %v, want %v", got, want)
	}
	if v := stats.metrics["flush.post_metrics_total{}"]; v[0] != 10 {
		t.Errorf("flush.post_metrics_total = %v, want 10", v)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestDatadogErrorStatus(t *testing.T) {
	api := &fakeAPI{status: http.StatusForbidden}
	stats := &statsRecorder{}
	d, err := New(Config{APIHostname: api.start(t), APIKey: "k3y", MaxPerBody: 3}, testEnv(stats))
	if err != nil {
		t.Fatal(err)
	}
	err = d.Flush(context.Background(), metricsBatch(samplers.InterMetric{Series: &samplers.Series{Name: "m"}, Value: 1}))
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("err = %v, want the status and the start of the body", err)
	}
	if strings.Contains(err.Error(), "k3y") {
		t.Errorf("error leaks the API key: %v", err)
	}
	if parts := plugins.Parts(err); len(parts) != 1 || parts[0].Part != "" {
		t.Errorf("a series failure is marked %+v, want no part", parts)
	}
	got := stats.names()
	if got["flush.error_total{}"] != 1 || got["flush.duration_ns{part:post}"] != 1 {
		t.Errorf("self-metrics %v, want flush.error_total and the answered post timed", got)
	}
}

func TestDatadogUnreachableHidesKey(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	stats := &statsRecorder{}
	d, err := New(Config{APIHostname: url, APIKey: "k3y", MaxPerBody: 3}, testEnv(stats))
	if err != nil {
		t.Fatal(err)
	}
	err = d.Flush(context.Background(), &plugins.Batch{
		Metrics: []samplers.InterMetric{{Series: &samplers.Series{Name: "m"}, Value: 1}},
		Events:  []samplers.Event{{Title: "t"}},
		Checks:  []samplers.ServiceCheck{{Name: "c"}},
	})
	if err == nil || strings.Contains(err.Error(), "k3y") {
		t.Errorf("err = %v, want an error without the API key", err)
	}
	if n := strings.Count(err.Error(), "\n"); n != 2 {
		t.Errorf("err = %v, want the series, the event and the checks to fail", err)
	}
	got := stats.names()
	if got["flush.error_total{}"] != 1 || got["flush.duration_ns{part:post}"] != 0 {
		t.Errorf("self-metrics %v, want flush.error_total and no post timed without an answer", got)
	}
}

func TestDatadogLargeBodies(t *testing.T) {
	api := &fakeAPI{}
	d := testSink(t, api.start(t), 1000)
	var metrics []samplers.InterMetric
	long := strings.Repeat("x", 200)
	for i := 0; i < 25000; i++ {
		metrics = append(metrics, samplers.InterMetric{Series: &samplers.Series{Name: "m", Tags: []string{"t:" + long}}, Suffix: strconv.Itoa(i), Value: float64(i)})
	}
	if err := d.Flush(context.Background(), metricsBatch(metrics...)); err != nil {
		t.Fatal(err)
	}
	if len(api.bodies) != 25 {
		t.Fatalf("%d bodies, want 25", len(api.bodies))
	}
	seen := make(map[string]bool)
	for _, b := range api.bodies {
		for _, s := range b {
			if len(s.Tags) != 2 || s.Tags[0] != "t:"+long {
				t.Fatalf("series %s has tags %v", s.Metric, s.Tags)
			}
			seen[s.Metric] = true
		}
	}
	if len(seen) != 25000 {
		t.Errorf("%d distinct series arrived, want 25000", len(seen))
	}
}

// apiRequest is one request to the stand-in events API.
type apiRequest struct {
	method, path, key, contentType, body string
}

// eventsAPI stands in for the events and check_run APIs, answering status.
func eventsAPI(t *testing.T, status int) (string, func() []apiRequest) {
	t.Helper()
	var mu sync.Mutex
	var reqs []apiRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, apiRequest{r.Method, r.URL.Path, r.URL.Query().Get("api_key"), r.Header.Get("Content-Type"), string(b)})
		mu.Unlock()
		w.WriteHeader(status)
		io.WriteString(w, `{"errors":["nope k3y"]}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []apiRequest {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(reqs)
	}
}

func TestDatadogEventsAndChecks(t *testing.T) {
	url, requests := eventsAPI(t, http.StatusAccepted)
	d := testSink(t, url+"/", 10)
	err := d.Flush(context.Background(), &plugins.Batch{
		Events: []samplers.Event{
			{Title: "Deploy", Text: "v42 is out\nall green", Timestamp: 1700000000, AggregationKey: "deploys",
				Priority: "low", SourceType: "ci", AlertType: "success", Tags: []string{"svc:api"}},
			{Title: "Bare", Timestamp: 1700000001, Host: "web1"},
		},
		Checks: []samplers.ServiceCheck{
			{Name: "db.up", Status: 2, Timestamp: 1700000002, Host: "db1", Message: "primary down", Tags: []string{"role:primary"}},
			{Name: "q", Status: 0, Timestamp: 1700000003},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []apiRequest{
		{"POST", "/api/v1/events", "k3y", "application/json",
			`{"title":"Deploy","text":"v42 is out\nall green","date_happened":1700000000,"host":"box","aggregation_key":"deploys","priority":"low","source_type_name":"ci","alert_type":"success","tags":["svc:api","env:test"]}`},
		{"POST", "/api/v1/events", "k3y", "application/json",
			`{"title":"Bare","text":"","date_happened":1700000001,"host":"web1","tags":["env:test"]}`},
		{"POST", "/api/v1/check_run", "k3y", "application/json",
			`[{"check":"db.up","host_name":"db1","status":2,"timestamp":1700000002,"message":"primary down","tags":["role:primary","env:test"]},` +
				`{"check":"q","host_name":"box","status":0,"timestamp":1700000003,"tags":["env:test"]}]`},
	}
	if got := requests(); !slices.Equal(got, want) {
		t.Errorf("requests\n%q\nwant\n%q", got, want)
	}
}

// With no configured host or tags, an event without a host has none, and
// tags are an empty list, never null.
func TestDatadogEventsWithoutDefaults(t *testing.T) {
	url, requests := eventsAPI(t, http.StatusAccepted)
	d, err := New(Config{APIHostname: url, MaxPerBody: 10}, plugins.Env{})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Flush(context.Background(), &plugins.Batch{
		Events: []samplers.Event{{Title: "t", Text: "x", Timestamp: 5}},
		Checks: []samplers.ServiceCheck{{Name: "c", Status: 3, Timestamp: 6}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := requests()
	if len(got) != 2 || got[0].body != `{"title":"t","text":"x","date_happened":5,"tags":[]}` ||
		got[1].body != `[{"check":"c","host_name":"","status":3,"timestamp":6,"tags":[]}]` {
		t.Errorf("requests %q", got)
	}
}

func TestDatadogEventsErrorIsMarked(t *testing.T) {
	url, requests := eventsAPI(t, http.StatusInternalServerError)
	d := testSink(t, url, 10)
	err := d.Flush(context.Background(), &plugins.Batch{
		Events: []samplers.Event{{Title: "a"}, {Title: "b"}},
		Checks: []samplers.ServiceCheck{{Name: "c"}},
	})
	if err == nil {
		t.Fatal("no error")
	}
	parts := plugins.Parts(err)
	if len(parts) != 1 || parts[0].Part != "events" {
		t.Fatalf("parts %+v, want the events part alone", parts)
	}
	msg := err.Error()
	for _, want := range []string{
		`event "a": /api/v1/events answered 500 Internal Server Error`,
		`event "b": /api/v1/events answered 500`,
		`1 service checks: /api/v1/check_run answered 500`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("err lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "k3y") {
		t.Errorf("error leaks the API key: %s", msg)
	}
	if n := len(requests()); n != 3 {
		t.Errorf("%d requests, want every event tried and the checks", n)
	}
}

// Series and events of one batch both go out; an empty batch sends
// nothing and emits no self-metric.
func TestDatadogBatchParts(t *testing.T) {
	var mu sync.Mutex
	paths := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		paths[r.URL.Path]++
		mu.Unlock()
	}))
	defer srv.Close()
	stats := &statsRecorder{}
	d, err := New(Config{APIHostname: srv.URL, APIKey: "k3y", MaxPerBody: 10}, testEnv(stats))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(context.Background(), &plugins.Batch{}); err != nil {
		t.Fatal(err)
	}
	if len(paths) != 0 || len(stats.names()) != 0 {
		t.Fatalf("an empty batch sent %v and emitted %v", paths, stats.names())
	}
	err = d.Flush(context.Background(), &plugins.Batch{
		Metrics: []samplers.InterMetric{{Series: &samplers.Series{Name: "m"}, Value: 1}},
		Events:  []samplers.Event{{Title: "e"}},
		Checks:  []samplers.ServiceCheck{{Name: "c"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"/api/v1/series": 1, "/api/v1/events": 1, "/api/v1/check_run": 1}
	if !mapsEqual(paths, want) {
		t.Errorf("requests %v, want %v", paths, want)
	}
	// Events alone: no series self-metrics.
	stats2 := &statsRecorder{}
	d2, _ := New(Config{APIHostname: srv.URL, MaxPerBody: 10}, testEnv(stats2))
	if err := d2.Flush(context.Background(), &plugins.Batch{Events: []samplers.Event{{Title: "e"}}}); err != nil {
		t.Fatal(err)
	}
	if n := len(stats2.names()); n != 0 {
		t.Errorf("events alone emitted %v", stats2.names())
	}
}

func BenchmarkWriteSeries(b *testing.B) {
	d, err := New(Config{APIHostname: "http://x", MaxPerBody: 5000}, testEnv(nil))
	if err != nil {
		b.Fatal(err)
	}
	metrics := make([]samplers.InterMetric, 0, 5000)
	for i := range 1000 {
		s := &samplers.Series{Name: "service.request.latency", Tags: []string{"code:200", "path:/api/v1/" + strconv.Itoa(i), "region:eu-west-1"}}
		for _, suffix := range []string{".min", ".max", ".count", ".avg", ".99percentile"} {
			metrics = append(metrics, samplers.InterMetric{Series: s, Suffix: suffix, Value: float64(i) * 1.25, Timestamp: 1700000000})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := d.writeSeries(io.Discard, metrics); err != nil {
			b.Fatal(err)
		}
	}
}
