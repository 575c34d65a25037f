package datadog

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/internal/yield"
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

// fastDelivery retries within milliseconds.
var fastDelivery = plugins.DeliveryConfig{BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond, Timeout: 10 * time.Second}

// newSink returns a Sink with fastDelivery, which the test closes at its
// end if it did not.
func newSink(t *testing.T, cfg Config, env plugins.Env) *Sink {
	t.Helper()
	if cfg.Delivery == (plugins.DeliveryConfig{}) {
		cfg.Delivery = fastDelivery
	}
	d, err := New(cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		d.Close(ctx)
	})
	return d
}

func testSink(t *testing.T, url string, maxPerBody int) *Sink {
	t.Helper()
	return newSink(t, Config{APIHostname: url, APIKey: "k3y", MaxPerBody: maxPerBody}, testEnv(nil))
}

// drain closes d, which delivers everything it holds, and reports its
// delivery self-metrics to stats.
func drain(t *testing.T, d *Sink, stats statsd.ClientInterface) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if stats != nil {
		d.Report(stats)
	}
}

// encode is the uncompressed body the sink posts for metrics.
func encode(t *testing.T, d *Sink, metrics []samplers.InterMetric) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := d.writeSeries(&buf, metrics, new(yield.Slicer)); err != nil {
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
		// Datadog would refuse every post without a key.
		{Config{APIHostname: "http://127.0.0.1:8080/", MaxPerBody: 5000}, `key is empty but api_hostname is "http://127.0.0.1:8080/"`},
		{Config{APIHostname: "http://127.0.0.1:8080/", MaxPerBody: 5000}, "leave api_hostname empty to print flushes"},
		// A key of another form is a warning (KeyWarning), not an error.
		{Config{APIHostname: "http://127.0.0.1:8080/", APIKey: "your-datadog-api-key", MaxPerBody: 5000}, ""},
		{Config{MaxPerBody: 1}, "api_hostname is empty; use a URL such as https://app.datadoghq.com"},
		{Config{APIHostname: "app.datadoghq.com", MaxPerBody: 1}, `api_hostname "app.datadoghq.com": not an absolute http(s) URL`},
		{Config{APIHostname: "ftp://x", MaxPerBody: 1}, `api_hostname "ftp://x": not an absolute http(s) URL`},
		{Config{APIHostname: "http://x"}, "flush_max_per_body = 0: must be greater than 0"},
		{Config{APIHostname: "http://x", MaxPerBody: -1}, "flush_max_per_body = -1: must be greater than 0"},
		{Config{APIHostname: "http://x", MaxPerBody: 1, Delivery: plugins.DeliveryConfig{Concurrency: -1}}, "flush_max_concurrency = -1"},
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
		{Series: &samplers.Series{Name: "h", Host: "web1", Device: "sda"}, Suffix: samplers.SuffixOf(".99.9percentile"), Timestamp: 1700000000, Value: 1e21},
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
		{Series: &samplers.Series{Name: "a", Tags: []string{"k:v"}}, Suffix: samplers.SuffixOf(".count"), Timestamp: 1700000000, Value: 0.5, Kind: samplers.RateKind},
		{Series: &samplers.Series{Name: "b", Host: "h", Device: "sda"}, Timestamp: 1700000000, Value: 42},
		// Another timestamp, then the first again: the encoder keeps
		// the last one's JSON.
		{Series: &samplers.Series{Name: "c"}, Timestamp: 1700000010, Value: -1.25},
		{Series: &samplers.Series{Name: "d"}, Timestamp: 1700000000, Value: 3, Kind: samplers.RateKind},
	}))
	want := `{"series":[` +
		`{"metric":"a.count","points":[[1700000000,0.5]],"tags":["k:v","env:test"],"host":"box","type":"rate","interval":10},` +
		`{"metric":"b","points":[[1700000000,42]],"tags":["env:test"],"host":"h","device_name":"sda","type":"gauge"},` +
		`{"metric":"c","points":[[1700000010,-1.25]],"tags":["env:test"],"host":"box","type":"gauge"},` +
		`{"metric":"d","points":[[1700000000,3]],"tags":["env:test"],"host":"box","type":"rate","interval":10}]}`
	if got != want {
		t.Errorf("body\n%s\nwant\n%s", got, want)
	}
	if got := string(encode(t, d, nil)); got != `{"series":[]}` {
		t.Errorf("empty body %s", got)
	}
}

func TestDatadogOmitsEmptyHost(t *testing.T) {
	d := newSink(t, Config{APIHostname: "http://x", APIKey: "k3y", MaxPerBody: 10}, plugins.Env{})
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
		{Series: a, Suffix: samplers.SuffixOf(".max"), Value: 3},
		{Series: a, Suffix: samplers.SuffixOf(".count"), Value: 0.5, Kind: samplers.RateKind},
		{Series: b, Value: 7},
		{Series: a, Suffix: samplers.SuffixOf(".min"), Value: 1},
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
	d := newSink(t, Config{APIHostname: api.start(t), APIKey: "k3y", MaxPerBody: 3}, testEnv(stats))
	var metrics []samplers.InterMetric
	for i := 0; i < 10; i++ {
		metrics = append(metrics, samplers.InterMetric{Series: &samplers.Series{Name: "m"}, Suffix: samplers.SuffixOf(string(rune('a' + i))), Value: float64(i)})
	}
	// A value JSON cannot carry is left out, and not counted.
	metrics = append(metrics, samplers.InterMetric{Series: &samplers.Series{Name: "nan"}, Value: math.NaN()})
	if err := d.Flush(context.Background(), metricsBatch(metrics...)); err != nil {
		t.Fatal(err)
	}
	drain(t, d, stats)
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
		"flush.post_metrics_total{destination:datadog}":    1,
		"flush.total_duration_ns{destination:datadog}":     1,
		"flush.duration_ns{part:marshal}":                  4,
		"flush.duration_ns{part:post,destination:datadog}": 4,
		"flush.content_length_bytes{}":                     4,
	}
	if got := stats.names(); !mapsEqual(got, want) {
		t.Errorf("self-metrics %v, want %v", got, want)
	}
	if v := stats.metrics["flush.post_metrics_total{destination:datadog}"]; v[0] != 10 {
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

// A refused body is dropped at once and logged, without the API key; the
// error of Flush is for what did not encode only.
func TestDatadogErrorStatus(t *testing.T) {
	api := &fakeAPI{status: http.StatusForbidden}
	stats := &statstest.Recorder{}
	log, hook := test.NewNullLogger()
	env := testEnv(stats)
	env.Log = log
	d := newSink(t, Config{APIHostname: api.start(t), APIKey: "k3y", MaxPerBody: 3}, env)
	if err := d.Flush(context.Background(), metricsBatch(samplers.InterMetric{Series: &samplers.Series{Name: "m"}, Value: 1})); err != nil {
		t.Fatal(err)
	}
	drain(t, d, stats)
	if len(api.bodies) != 1 {
		t.Errorf("%d requests, want 1: a 403 is not retried", len(api.bodies))
	}
	e := hook.LastEntry()
	if e == nil || e.Level != logrus.ErrorLevel || !strings.HasSuffix(e.Message, "dropped (rejected_4xx)") {
		t.Fatalf("log entry %+v, want the drop", e)
	}
	msg := fmt.Sprint(e.Data[logrus.ErrorKey])
	if !strings.Contains(msg, "403") || !strings.Contains(msg, "nope") || strings.Contains(msg, "k3y") || strings.Contains(e.Message, "k3y") {
		t.Errorf("logged %q: %s, want the status and the start of the body, without the key", e.Message, msg)
	}
	for _, c := range []struct {
		name string
		tags []string
		want int64
	}{
		{"flush.dropped_total", []string{"cause:rejected_4xx", "destination:datadog"}, 1},
		{"flush.error_total", []string{"cause:response", "destination:datadog"}, 1},
		{"flush.post_metrics_total", nil, 0},
		{"flush.retry_total", nil, 0},
	} {
		if n := stats.Sum(c.name, c.tags...); n != c.want {
			t.Errorf("%s %v = %d, want %d", c.name, c.tags, n, c.want)
		}
	}
	if n := stats.Timings("flush.duration_ns", "part:post"); n != 1 {
		t.Errorf("%d posts timed, want the answered one", n)
	}
}

// An API that is gone: everything waits until Close gives up, and nothing
// logged or returned shows the key.
func TestDatadogUnreachableHidesKey(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	stats := &statstest.Recorder{}
	log, hook := test.NewNullLogger()
	env := testEnv(stats)
	env.Log = log
	d := newSink(t, Config{APIHostname: url, APIKey: "k3y", MaxPerBody: 3}, env)
	err := d.Flush(context.Background(), &plugins.Batch{
		Metrics: []samplers.InterMetric{{Series: &samplers.Series{Name: "m"}, Value: 1}},
		Events:  []samplers.Event{{Title: "t"}},
		Checks:  []samplers.ServiceCheck{{Name: "c"}, {Name: "d"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = d.Close(ctx)
	if err == nil || strings.Contains(err.Error(), "k3y") || !strings.Contains(err.Error(), "datadog: 1 requests (1 items) dropped") ||
		!strings.Contains(err.Error(), "datadog_events: 2 requests (3 items) dropped") {
		t.Errorf("Close = %v, want the series, the event and the checks dropped, without the API key", err)
	}
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, "k3y") || strings.Contains(fmt.Sprint(e.Data), "k3y") {
			t.Errorf("logged the API key: %s %v", e.Message, e.Data)
		}
	}
	d.Report(stats)
	if n := stats.Sum("flush.dropped_total", "cause:shutdown", "destination:datadog"); n != 1 {
		t.Errorf("series dropped at shutdown = %d, want 1", n)
	}
	if n := stats.Sum("flush.dropped_total", "cause:shutdown", "destination:datadog_events"); n != 3 {
		t.Errorf("events and checks dropped at shutdown = %d, want 3", n)
	}
	if stats.Sum("flush.error_total", "cause:post") < 2 || stats.Timings("flush.duration_ns", "part:post") != 0 {
		t.Errorf("flush.error_total{cause:post} = %d, %d posts timed; want failures and no post timed without an answer",
			stats.Sum("flush.error_total", "cause:post"), stats.Timings("flush.duration_ns", "part:post"))
	}
}

func TestDatadogLargeBodies(t *testing.T) {
	api := &fakeAPI{}
	d := testSink(t, api.start(t), 1000)
	var metrics []samplers.InterMetric
	long := strings.Repeat("x", 200)
	for i := 0; i < 25000; i++ {
		metrics = append(metrics, samplers.InterMetric{Series: &samplers.Series{Name: "m", Tags: []string{"t:" + long}}, Suffix: samplers.SuffixOf(strconv.Itoa(i)), Value: float64(i)})
	}
	if err := d.Flush(context.Background(), metricsBatch(metrics...)); err != nil {
		t.Fatal(err)
	}
	drain(t, d, nil)
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

// The flushes of a large instance reach a slow API whole, each series
// once, in order of flush, with some bodies failing on the way; Flush
// does not wait for the API.
func TestDatadogDeliversEverySeriesOnce(t *testing.T) {
	const flushes, perFlush, perBody = 4, 50_000, 5_000
	const bodiesPerFlush = perFlush / perBody
	flushed := make(chan struct{})
	var mu sync.Mutex
	seen := make(map[string]int, flushes*perFlush)
	delivered := make([]int, flushes) // bodies of each flush delivered
	attempts := map[int]int{}         // by flush, of its first body
	gen := func(name string) int { g, _ := strconv.Atoi(name[1:strings.IndexByte(name, '.')]); return g }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-flushed:
		case <-time.After(50 * time.Second):
			t.Error("the API got a body before every Flush returned: Flush waits for the API")
		}
		zr, err := zlib.NewReader(r.Body)
		if err != nil {
			t.Errorf("body is not zlib: %v", err)
			return
		}
		raw, _ := io.ReadAll(zr)
		series := decodeSeries(t, raw)
		g := gen(series[0].Metric)
		mu.Lock()
		for prev := range g {
			if delivered[prev] != bodiesPerFlush {
				t.Errorf("a body of flush %d came when %d of the %d bodies of flush %d were delivered", g, delivered[prev], bodiesPerFlush, prev)
			}
		}
		// The first body of each flush fails once.
		first := strings.HasSuffix(series[0].Metric, ".s0")
		if first {
			attempts[g]++
		}
		fail := first && attempts[g] == 1
		mu.Unlock()
		time.Sleep(50 * time.Millisecond) // the API's own pace
		if fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		for _, s := range series {
			if gen(s.Metric) != g {
				t.Errorf("%s in a body of flush %d", s.Metric, g)
			}
			seen[s.Metric]++
		}
		delivered[g]++
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	stats := &statstest.Recorder{}
	// The API holds every request until the last Flush returns, which
	// takes seconds under the race detector on a busy machine: an attempt
	// that timed out meanwhile would be retried and delivered twice.
	d := newSink(t, Config{APIHostname: srv.URL, APIKey: "k3y", MaxPerBody: perBody, Delivery: plugins.DeliveryConfig{Timeout: time.Minute}}, testEnv(stats))
	for g := range flushes {
		metrics := make([]samplers.InterMetric, perFlush)
		for i := range metrics {
			metrics[i] = samplers.InterMetric{Series: &samplers.Series{Name: fmt.Sprintf("g%d.s%d", g, i)}, Value: float64(i), Timestamp: 1700000000}
		}
		if err := d.Flush(context.Background(), metricsBatch(metrics...)); err != nil {
			t.Fatal(err)
		}
	}
	close(flushed)
	drain(t, d, stats)
	if len(seen) != flushes*perFlush {
		t.Errorf("%d distinct series delivered, want %d", len(seen), flushes*perFlush)
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times", name, n)
		}
	}
	if n := stats.Sum("flush.post_metrics_total", "destination:datadog"); n != flushes*perFlush {
		t.Errorf("flush.post_metrics_total = %d, want %d", n, flushes*perFlush)
	}
	if n := stats.Sum("flush.retry_total"); n != flushes {
		t.Errorf("flush.retry_total = %d, want %d", n, flushes)
	}
	if n := stats.Sum("flush.dropped_total"); n != 0 {
		t.Errorf("flush.dropped_total = %d, want 0", n)
	}
}

// apiRequest is one request to the stand-in events API.
type apiRequest struct {
	method, path, key, contentType, body string
}

// eventsAPI stands in for the events and check_run APIs, answering status
// to the first attempt of each body and 202 to the others.
func eventsAPI(t *testing.T, status int) (string, func() []apiRequest) {
	t.Helper()
	var mu sync.Mutex
	var reqs []apiRequest
	tries := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, apiRequest{r.Method, r.URL.Path, r.URL.Query().Get("api_key"), r.Header.Get("Content-Type"), string(b)})
		tries[string(b)]++
		first := tries[string(b)] == 1
		mu.Unlock()
		if first {
			w.WriteHeader(status)
		} else {
			w.WriteHeader(http.StatusAccepted)
		}
		io.WriteString(w, `{"errors":["nope k3y"]}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []apiRequest {
		mu.Lock()
		defer mu.Unlock()
		out := slices.Clone(reqs)
		// Requests of one flush go out together, in no set order.
		slices.SortStableFunc(out, func(a, b apiRequest) int { return strings.Compare(a.path+a.body, b.path+b.body) })
		return out
	}
}

func TestDatadogEventsAndChecks(t *testing.T) {
	url, requests := eventsAPI(t, http.StatusAccepted)
	stats := &statstest.Recorder{}
	d := newSink(t, Config{APIHostname: url + "/", APIKey: "k3y", MaxPerBody: 10}, testEnv(stats))
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
	drain(t, d, stats)
	want := []apiRequest{
		{"POST", "/api/v1/check_run", "k3y", "application/json",
			`[{"check":"db.up","host_name":"db1","status":2,"timestamp":1700000002,"message":"primary down","tags":["role:primary","env:test"]},` +
				`{"check":"q","host_name":"box","status":0,"timestamp":1700000003,"tags":["env:test"]}]`},
		{"POST", "/api/v1/events", "k3y", "application/json",
			`{"title":"Bare","text":"","date_happened":1700000001,"host":"web1","tags":["env:test"]}`},
		{"POST", "/api/v1/events", "k3y", "application/json",
			`{"title":"Deploy","text":"v42 is out\nall green","date_happened":1700000000,"host":"box","aggregation_key":"deploys","priority":"low","source_type_name":"ci","alert_type":"success","tags":["svc:api","env:test"]}`},
	}
	if got := requests(); !slices.Equal(got, want) {
		t.Errorf("requests\n%q\nwant\n%q", got, want)
	}
	// Two events and two checks, counted apart from the series.
	if n := stats.Sum("flush.post_metrics_total", "destination:datadog_events"); n != 4 {
		t.Errorf("flush.post_metrics_total{destination:datadog_events} = %d, want 4", n)
	}
	if n := stats.Sum("flush.post_metrics_total", "destination:datadog"); n != 0 {
		t.Errorf("flush.post_metrics_total{destination:datadog} = %d, want 0", n)
	}
}

// With no configured host or tags, an event without a host has none, and
// tags are an empty list, never null.
func TestDatadogEventsWithoutDefaults(t *testing.T) {
	url, requests := eventsAPI(t, http.StatusAccepted)
	d := newSink(t, Config{APIHostname: url, APIKey: "k3y", MaxPerBody: 10}, plugins.Env{})
	err := d.Flush(context.Background(), &plugins.Batch{
		Events: []samplers.Event{{Title: "t", Text: "x", Timestamp: 5}},
		Checks: []samplers.ServiceCheck{{Name: "c", Status: 3, Timestamp: 6}},
	})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, d, nil)
	got := requests()
	if len(got) != 2 || got[1].body != `{"title":"t","text":"x","date_happened":5,"tags":[]}` ||
		got[0].body != `[{"check":"c","host_name":"","status":3,"timestamp":6,"tags":[]}]` {
		t.Errorf("requests %q", got)
	}
}

// Events and checks the API fails are retried, those it refuses dropped;
// the log names the path, never the key.
func TestDatadogEventsRetriedOrDropped(t *testing.T) {
	for _, c := range []struct {
		status           int
		requests         int
		accepted, refuse int64
	}{
		{http.StatusInternalServerError, 6, 3, 0},
		{http.StatusBadRequest, 3, 0, 3},
	} {
		t.Run(strconv.Itoa(c.status), func(t *testing.T) {
			url, requests := eventsAPI(t, c.status)
			stats := &statstest.Recorder{}
			log, hook := test.NewNullLogger()
			env := testEnv(stats)
			env.Log = log
			d := newSink(t, Config{APIHostname: url, APIKey: "k3y", MaxPerBody: 10}, env)
			err := d.Flush(context.Background(), &plugins.Batch{
				Events: []samplers.Event{{Title: "a"}, {Title: "b"}},
				Checks: []samplers.ServiceCheck{{Name: "c"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			drain(t, d, stats)
			if n := len(requests()); n != c.requests {
				t.Errorf("%d requests, want %d", n, c.requests)
			}
			if n := stats.Sum("flush.post_metrics_total", "destination:datadog_events"); n != c.accepted {
				t.Errorf("accepted %d, want %d", n, c.accepted)
			}
			if n := stats.Sum("flush.dropped_total", "cause:rejected_4xx", "destination:datadog_events"); n != c.refuse {
				t.Errorf("dropped %d, want %d", n, c.refuse)
			}
			e := hook.AllEntries()
			if len(e) == 0 || !strings.Contains(e[0].Message, "the Datadog API /api/v1/") {
				t.Fatalf("log entries %+v, want the failure naming the path", e)
			}
			if msg := fmt.Sprint(e[0].Data[logrus.ErrorKey]); !strings.Contains(msg, strconv.Itoa(c.status)) || strings.Contains(msg, "k3y") {
				t.Errorf("logged %q, want the status without the key", msg)
			}
		})
	}
}

// Series and events of one batch both go out; an empty batch sends
// nothing and counts nothing.
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
	d := newSink(t, Config{APIHostname: srv.URL, APIKey: "k3y", MaxPerBody: 10}, testEnv(stats))
	if err := d.Flush(context.Background(), &plugins.Batch{}); err != nil {
		t.Fatal(err)
	}
	d.Report(stats)
	if len(paths) != 0 || len(stats.names()) != 0 {
		t.Fatalf("an empty batch sent %v and emitted %v", paths, stats.names())
	}
	err := d.Flush(context.Background(), &plugins.Batch{
		Metrics: []samplers.InterMetric{{Series: &samplers.Series{Name: "m"}, Value: 1}},
		Events:  []samplers.Event{{Title: "e"}},
		Checks:  []samplers.ServiceCheck{{Name: "c"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, d, nil)
	want := map[string]int{"/api/v1/series": 1, "/api/v1/events": 1, "/api/v1/check_run": 1}
	if !mapsEqual(paths, want) {
		t.Errorf("requests %v, want %v", paths, want)
	}
	// Events alone: no series self-metrics.
	stats2 := &statstest.Recorder{}
	d2 := newSink(t, Config{APIHostname: srv.URL, APIKey: "k3y", MaxPerBody: 10}, testEnv(stats2))
	if err := d2.Flush(context.Background(), &plugins.Batch{Events: []samplers.Event{{Title: "e"}}}); err != nil {
		t.Fatal(err)
	}
	drain(t, d2, stats2)
	for _, name := range stats2.Names() {
		if stats2.Sum(name, "destination:datadog") != 0 {
			t.Errorf("events alone emitted %s for the series", name)
		}
	}
	if stats2.Timings("flush.duration_ns", "part:marshal") != 0 {
		t.Error("events alone timed a series body")
	}
}

func BenchmarkWriteSeries(b *testing.B) {
	d, err := New(Config{APIHostname: "http://x", APIKey: "k3y", MaxPerBody: 5000}, testEnv(nil))
	if err != nil {
		b.Fatal(err)
	}
	metrics := make([]samplers.InterMetric, 0, 5000)
	for i := range 1000 {
		s := &samplers.Series{Name: "service.request.latency", Tags: []string{"code:200", "path:/api/v1/" + strconv.Itoa(i), "region:eu-west-1"}}
		for _, suffix := range []string{".min", ".max", ".count", ".avg", ".99percentile"} {
			metrics = append(metrics, samplers.InterMetric{Series: s, Suffix: samplers.SuffixOf(suffix), Value: float64(i) * 1.25, Timestamp: 1700000000})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.writeSeries(io.Discard, metrics, new(yield.Slicer)); err != nil {
			b.Fatal(err)
		}
	}
}

// The memory of delivered bodies is reused for the next flushes' bodies,
// and every body still arrives whole: once the first flush is delivered
// its bodies' memory is kept, and four more flushes of other series, back
// to back, reach the API exactly.
func TestDatadogReusesDeliveredBodies(t *testing.T) {
	api := &fakeAPI{}
	d := newSink(t, Config{APIHostname: api.start(t), APIKey: "k3y", MaxPerBody: 50}, testEnv(nil))
	want := map[string]float64{}
	for f := 0; f < 5; f++ {
		var metrics []samplers.InterMetric
		for i := 0; i < 200; i++ {
			name := fmt.Sprintf("flush%d.series%d", f, i)
			want[name] = float64(f*1000 + i)
			metrics = append(metrics, samplers.InterMetric{Series: &samplers.Series{Name: name, Tags: []string{"flush:" + strconv.Itoa(f)}}, Value: float64(f*1000 + i)})
		}
		if err := d.Flush(context.Background(), metricsBatch(metrics...)); err != nil {
			t.Fatal(err)
		}
		if f > 0 {
			// The others go back to back: a body handed back before
			// its delivery ended would be overwritten by the next.
			continue
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			api.mu.Lock()
			n := len(api.bodies)
			api.mu.Unlock()
			if n == 4*(f+1) && len(d.bodies) >= 4 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("flush %d: %d bodies arrived, %d kept for reuse; want %d and 4", f, n, len(d.bodies), 4*(f+1))
			}
			time.Sleep(time.Millisecond)
		}
	}
	drain(t, d, nil)
	got := map[string]float64{}
	for _, b := range api.bodies {
		for _, s := range b {
			if _, dup := got[s.Metric]; dup {
				t.Errorf("%s arrived twice", s.Metric)
			}
			v, err := s.Points[0][1].Float64()
			if err != nil {
				t.Fatalf("%s: %v", s.Metric, err)
			}
			got[s.Metric] = v
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d series arrived, want %d", len(got), len(want))
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %v, want %v", name, got[name], v)
		}
	}
}
