package veneur

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/samplers"
)

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
	return payload.Series
}

func testSink(url string, maxPerBody int) *datadogSink {
	cfg := Config{APIHostname: url, Key: "k3y", Hostname: "box", Tags: []string{"env:test"}, FlushMaxPerBody: maxPerBody}
	return newDatadogSink(cfg, 10*time.Second, http.DefaultClient, logrus.New(), &statsd.NoOpClient{})
}

func TestDatadogEncoding(t *testing.T) {
	d := testSink("http://x", 10)
	metrics := []samplers.InterMetric{
		{Series: &samplers.Series{Name: "a.b", Tags: []string{"x:1"}}, Timestamp: 1700000000, Value: 0.7, Kind: samplers.RateKind},
		{Series: &samplers.Series{Name: "h", Host: "web1", Device: "sda"}, Suffix: ".99.9percentile", Timestamp: 1700000000, Value: 1e21},
		{Series: &samplers.Series{Name: "quote\"back\\slash\nnl\x01ctl\xffbad", Tags: []string{"é:ü"}}, Timestamp: 1, Value: -3},
	}
	got := decodeSeries(t, d.appendSeries(nil, metrics))
	if len(got) != 3 {
		t.Fatalf("got %d series", len(got))
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

func TestDatadogOmitsEmptyHost(t *testing.T) {
	cfg := Config{APIHostname: "http://x", FlushMaxPerBody: 10}
	d := newDatadogSink(cfg, 10*time.Second, http.DefaultClient, logrus.New(), &statsd.NoOpClient{})
	got := decodeSeries(t, d.appendSeries(nil, []samplers.InterMetric{{Series: &samplers.Series{Name: "a"}, Value: 1}}))
	if got[0].Host != nil || len(got[0].Tags) != 0 {
		t.Errorf("host = %q, want none (omit_empty_hostname)", *got[0].Host)
	}
}

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
		if r.Header.Get("Content-Encoding") != "deflate" {
			t.Errorf("Content-Encoding = %q", r.Header.Get("Content-Encoding"))
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

func TestDatadogChunks(t *testing.T) {
	api := &fakeAPI{}
	ts := httptest.NewServer(api.handler(t))
	defer ts.Close()
	d := testSink(ts.URL, 3)
	var metrics []samplers.InterMetric
	for i := 0; i < 10; i++ {
		metrics = append(metrics, samplers.InterMetric{Series: &samplers.Series{Name: "m"}, Suffix: string(rune('a' + i)), Value: float64(i)})
	}
	if err := d.Flush(context.Background(), metrics); err != nil {
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
}

func TestDatadogErrorStatus(t *testing.T) {
	api := &fakeAPI{status: http.StatusForbidden}
	ts := httptest.NewServer(api.handler(t))
	defer ts.Close()
	err := testSink(ts.URL, 3).Flush(context.Background(), []samplers.InterMetric{{Series: &samplers.Series{Name: "m"}, Value: 1}})
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "nope") {
		t.Errorf("err = %v, want the status and the start of the body", err)
	}
	if strings.Contains(err.Error(), "k3y") {
		t.Errorf("error leaks the API key: %v", err)
	}
}

func TestDatadogUnreachableHidesKey(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close()
	err := testSink(url, 3).Flush(context.Background(), []samplers.InterMetric{{Series: &samplers.Series{Name: "m"}, Value: 1}})
	if err == nil || strings.Contains(err.Error(), "k3y") {
		t.Errorf("err = %v, want an error without the API key", err)
	}
}

func TestDatadogLargeBodies(t *testing.T) {
	api := &fakeAPI{}
	ts := httptest.NewServer(api.handler(t))
	defer ts.Close()
	d := testSink(ts.URL, 1000)
	var metrics []samplers.InterMetric
	long := strings.Repeat("x", 200)
	for i := 0; i < 25000; i++ {
		metrics = append(metrics, samplers.InterMetric{Series: &samplers.Series{Name: "m", Tags: []string{"t:" + long}}, Suffix: strconv.Itoa(i), Value: float64(i)})
	}
	if err := d.Flush(context.Background(), metrics); err != nil {
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

// TestDatadogSharedSeries checks the encoder's per-series cache: values of
// one series in a row, then another series, then the first again.
func TestDatadogSharedSeries(t *testing.T) {
	d := testSink("http://x", 10)
	a := &samplers.Series{Name: "a", Tags: []string{"k:1"}, Host: "h1"}
	b := &samplers.Series{Name: "b\"q", Device: "sda"}
	got := decodeSeries(t, d.appendSeries(nil, []samplers.InterMetric{
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
