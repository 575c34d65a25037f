package influxdb

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// influxd runs a real InfluxDB 1.x server for the test on loopback ports
// the kernel picks. Without the influxd binary the test is skipped, unless
// VENEUR_REQUIRE_INFLUXD is set (make test sets it, after installing the
// Debian package influxdb), which makes its absence a failure.
func influxd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("influxd")
	if err != nil {
		if os.Getenv("VENEUR_REQUIRE_INFLUXD") != "" {
			t.Fatal("influxd is not installed (apt-get install -y influxdb; make test does it)")
		}
		t.Skip("influxd is not installed; apt-get install -y influxdb, or run make test")
	}
	dir := t.TempDir()
	// Port 0 everywhere: influxd logs the HTTP address it bound, at level
	// info, as soon as it listens.
	conf := fmt.Sprintf(`reporting-disabled = true
bind-address = "127.0.0.1:0"
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:0"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[logging]
  level = "info"
`, filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"))
	cfgPath := filepath.Join(dir, "influxdb.conf")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", cfgPath)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The log is kept for failures; the HTTP address goes to addr.
	var mu sync.Mutex
	var out strings.Builder
	output := func() string {
		mu.Lock()
		defer mu.Unlock()
		return out.String()
	}
	addr := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			out.WriteString(line + "\n")
			mu.Unlock()
			if strings.Contains(line, `msg="Listening on HTTP"`) {
				if _, a, ok := strings.Cut(line, " addr="); ok {
					a, _, _ = strings.Cut(a, " ")
					select {
					case addr <- a:
					default:
					}
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	done := make(chan struct{})
	go func() { cmd.Wait(); pw.Close(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		<-scanned
		if t.Failed() {
			t.Logf("influxd output:\n%s", output())
		}
	})
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case <-done:
		<-scanned
		t.Fatalf("influxd exited:\n%s", output())
	case <-time.After(30 * time.Second):
		t.Fatalf("influxd did not listen within 30s:\n%s", output())
	}
	resp, err := http.Get(base + "/ping")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("influxd answered /ping with %s", resp.Status)
	}
	query(t, base, "", "CREATE DATABASE veneur")
	return base
}

// result is one series of an InfluxQL answer.
type result struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

func query(t *testing.T, base, db, q string) []result {
	t.Helper()
	v := url.Values{"q": {q}, "epoch": {"s"}}
	if db != "" {
		v.Set("db", db)
	}
	resp, err := http.PostForm(base+"/query", v)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Results []struct {
			Series []result `json:"series"`
			Error  string   `json:"error"`
		} `json:"results"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if body.Error != "" {
		t.Fatalf("%s: %s", q, body.Error)
	}
	var out []result
	for _, r := range body.Results {
		if r.Error != "" {
			t.Fatalf("%s: %s", q, r.Error)
		}
		out = append(out, r.Series...)
	}
	return out
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
	p, err := New(cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		p.Close(ctx)
	})
	return p
}

// drain closes p, which delivers everything it holds, and reports its
// self-metrics to stats.
func drain(t *testing.T, p *Sink, stats *statstest.Recorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if stats != nil {
		p.Report(stats)
	}
}

func metric(name, suffix string, v float64, ts int64, host, device string, tags ...string) samplers.InterMetric {
	return samplers.InterMetric{
		Series: &samplers.Series{Name: name, Tags: tags, Host: host, Device: device},
		Suffix: samplers.SuffixOf(suffix), Value: v, Timestamp: ts,
	}
}

func TestEncode(t *testing.T) {
	var e encoder
	got := string(e.encode([]samplers.InterMetric{
		metric("api.latency", ".99percentile", 12.5, 1700000000, "", "", "env:prod", "zone:a"),
		metric("odd name,here", "", 1e6, 1700000000, "web 1", "sda=1", "k=1:v,2 x", "bare", "dup:first", "dup:second", `trail\`, `v:\`),
		metric(`\`, "", 1, 1700000000, "", ""), // nothing left of the name: skipped
	}, "box", parseTags(nil, []string{"region:eu", "env:config"})))
	want := "api.latency.99percentile,env=prod,host=box,region=eu,zone=a value=12.5 1700000000\n" +
		`odd\ name\,here,bare=true,device=sda\=1,dup=first,env=config,host=web\ 1,k\=1=v\,2\ x,region=eu,trail=true,v=true value=1000000 1700000000` + "\n"
	if got != want {
		t.Errorf("encode:\n got %q\nwant %q", got, want)
	}
}

func TestNewChecksConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want []string // nil means accepted
	}{
		{Config{Address: "http://influx:8086", Database: "d"}, nil},
		{Config{Address: "https://u:p@influx/", Database: "d", Consistency: "quorum"}, nil},
		{Config{Address: "http://influx:8086", Database: "d", Consistency: "any"}, nil},
		{Config{Address: "http://influx:8086", Database: "d", Consistency: "one"}, nil},
		{Config{Address: "http://influx:8086", Database: "d", Consistency: "all"}, nil},
		{Config{Database: "d"}, []string{"influx_address is empty; use a URL such as http://influxdb:8086"}},
		{Config{Address: "influx:8086", Database: "d"}, []string{`influx_address "influx:8086": not an absolute http(s) URL; use a URL such as http://influxdb:8086`}},
		{Config{Address: "ftp://influx", Database: "d"}, []string{`influx_address "ftp://influx": not an absolute http(s) URL`}},
		{Config{Address: "http://influx:8086"}, []string{"influx_db_name is empty; name the database to write to"}},
		{Config{Address: "http://influx:8086", Database: "d", Consistency: "most"}, []string{
			`influx_consistency "most": must be one of any, one, quorum, all, or empty for the server's default`}},
		// Every problem at once.
		{Config{Address: "x", Consistency: "ONE"}, []string{"influx_address", "influx_db_name", "influx_consistency"}},
	} {
		_, err := New(c.cfg, plugins.Env{})
		if c.want == nil {
			if err != nil {
				t.Errorf("New(%+v) = %v, want it accepted", c.cfg, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("New(%+v) accepted, want %q", c.cfg, c.want)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("New(%+v) = %v, want an error with %q", c.cfg, err, w)
			}
		}
	}
}

// A write request as a stand-in server receives it: the query, headers
// and decompressed line protocol. The writes of a flush go out together;
// one the server fails is written again.
func TestFlushRequest(t *testing.T) {
	type write struct{ method, query, contentType, body string }
	var mu sync.Mutex
	var writes []write
	tries := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Encoding") != "gzip" {
			t.Errorf("Content-Encoding %q", r.Header.Get("Content-Encoding"))
		}
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			t.Errorf("write body: %v", err)
			return
		}
		b, _ := io.ReadAll(zr)
		mu.Lock()
		defer mu.Unlock()
		// Each write fails once.
		if tries[string(b)]++; tries[string(b)] == 1 {
			http.Error(w, `{"error":"timeout"}`, http.StatusServiceUnavailable)
			return
		}
		writes = append(writes, write{r.Method, r.URL.Path + "?" + r.URL.RawQuery, r.Header.Get("Content-Type"), string(b)})
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	stats := &statstest.Recorder{}
	env := plugins.Env{Common: plugins.Common{Hostname: "box", Tags: []string{"region:eu"}, Interval: time.Hour}, Stats: stats}
	p := newSink(t, Config{Address: srv.URL + "/", Database: "metrics", Consistency: "one", Batch: 2}, env)
	if p.Name() != "influxdb" {
		t.Errorf("Name() = %q", p.Name())
	}
	err := p.Flush(context.Background(), &plugins.Batch{Metrics: []samplers.InterMetric{
		{Series: &samplers.Series{Name: "hits", Tags: []string{"code:200"}}, Value: 3.0 / 3600, Timestamp: 1700000000, Kind: samplers.RateKind},
		metric("a", "", 1, 1700000000, "", ""),
		metric("b", "", 2, 1700000000, "h", ""),
	}})
	if err != nil {
		t.Fatal(err)
	}
	// An empty batch writes nothing.
	if err := p.Flush(context.Background(), &plugins.Batch{}); err != nil {
		t.Fatal(err)
	}
	drain(t, p, stats)
	want := []write{
		{"POST", "/write?consistency=one&db=metrics&precision=s", "text/plain; charset=utf-8",
			"b,host=h,region=eu value=2 1700000000\n"},
		{"POST", "/write?consistency=one&db=metrics&precision=s", "text/plain; charset=utf-8",
			"hits,code=200,host=box,region=eu value=0.0008333333333333334 1700000000\n" +
				"a,host=box,region=eu value=1 1700000000\n"},
	}
	slices.SortFunc(writes, func(a, b write) int { return strings.Compare(a.body, b.body) })
	if !slices.Equal(writes, want) {
		t.Errorf("writes\n%q\nwant\n%q", writes, want)
	}
	for _, c := range []struct {
		name string
		tags []string
		want int64
	}{
		{"influxdb.post_metrics_total", []string{"destination:influxdb"}, 3},
		{"influxdb.retry_total", nil, 2},
		{"influxdb.error_total", []string{"cause:response"}, 2},
		{"influxdb.dropped_total", nil, 0},
	} {
		if n := stats.Sum(c.name, c.tags...); n != c.want {
			t.Errorf("%s %v = %d, want %d", c.name, c.tags, n, c.want)
		}
	}
}

// A refused write is dropped, and logged naming the server, never its
// password, even when the answer quotes it.
func TestFlushErrorHidesPassword(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The answer quotes the password the request carried.
		_, pass, _ := r.BasicAuth()
		http.Error(w, `{"error":"authorization failed for `+pass+`"}`, http.StatusUnauthorized)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	u.User = url.UserPassword("veneur", "hunter2")
	log, hook := test.NewNullLogger()
	stats := &statstest.Recorder{}
	p := newSink(t, Config{Address: u.String(), Database: "d"}, plugins.Env{Log: log})
	if err := p.Flush(context.Background(), &plugins.Batch{Metrics: []samplers.InterMetric{metric("x", "", 1, 1, "", "")}}); err != nil {
		t.Fatal(err)
	}
	drain(t, p, stats)
	e := hook.LastEntry()
	if e == nil {
		t.Fatal("nothing logged")
	}
	line := e.Message + " " + fmt.Sprint(e.Data[logrus.ErrorKey])
	if !strings.Contains(line, "401") || !strings.Contains(line, "authorization failed for REDACTED") ||
		!strings.Contains(line, "InfluxDB at http://veneur:xxxxx@") || strings.Contains(line, "hunter2") ||
		!strings.Contains(line, "dropped (rejected_4xx)") {
		t.Errorf("logged %q, want the 401 naming the server without the password, and the drop", line)
	}
	if n := stats.Sum("influxdb.dropped_total", "cause:rejected_4xx"); n != 1 {
		t.Errorf("influxdb.dropped_total{cause:rejected_4xx} = %d, want 1", n)
	}
}

// Points written by Flush read back from a real InfluxDB exactly: names,
// escaped tags, values and timestamps, over several write requests.
func TestFlushToInfluxDB(t *testing.T) {
	base := influxd(t)
	env := plugins.Env{Common: plugins.Common{Hostname: "box", Tags: []string{"region:eu"}}}
	p := newSink(t, Config{Address: base, Database: "veneur", Consistency: "one", Batch: 2}, env)
	const ts = 1700000000
	err := p.Flush(context.Background(), &plugins.Batch{Metrics: []samplers.InterMetric{
		metric("req", "", 0.5, ts, "", "", "code:200"),
		metric("req", "", 1.5, ts, "", "", "code:500"),
		metric("lat", ".max", 99.25, ts, "web 1", "", "path:/a,b"),
		metric("lat", ".min", 0.001, ts, "", "sda", "bare"),
		metric("set size", "", 42, ts, "", ""),
	}})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, p, nil)
	read := func(measurement string) map[string]float64 {
		out := map[string]float64{}
		for _, r := range query(t, base, "veneur", fmt.Sprintf(`SELECT value FROM %q GROUP BY *`, measurement)) {
			var keys []string
			for k, v := range r.Tags {
				if v != "" {
					keys = append(keys, k+"="+v)
				}
			}
			slices.Sort(keys)
			for _, row := range r.Values {
				if row[0].(float64) != ts {
					t.Errorf("%s %v: time %v, want %d", measurement, keys, row[0], ts)
				}
				out[strings.Join(keys, " ")] = row[1].(float64)
			}
		}
		return out
	}
	for m, want := range map[string]map[string]float64{
		"req":      {"code=200 host=box region=eu": 0.5, "code=500 host=box region=eu": 1.5},
		"lat.max":  {"host=web 1 path=/a,b region=eu": 99.25},
		"lat.min":  {"bare=true device=sda host=box region=eu": 0.001},
		"set size": {"host=box region=eu": 42},
	} {
		if got := read(m); !maps.Equal(got, want) {
			t.Errorf("%s: got %v, want %v", m, got, want)
		}
	}
}

// A write the server refuses is dropped, counted and logged with the
// server's answer.
func TestFlushErrorFromInfluxDB(t *testing.T) {
	base := influxd(t)
	log, hook := test.NewNullLogger()
	stats := &statstest.Recorder{}
	p := newSink(t, Config{Address: base, Database: "missing"}, plugins.Env{Log: log})
	if err := p.Flush(context.Background(), &plugins.Batch{Metrics: []samplers.InterMetric{metric("x", "", 1, 1700000000, "", "")}}); err != nil {
		t.Fatal(err)
	}
	drain(t, p, stats)
	e := hook.LastEntry()
	if e == nil {
		t.Fatal("nothing logged")
	}
	if msg := fmt.Sprint(e.Data[logrus.ErrorKey]); !strings.Contains(msg, "database not found") || !strings.Contains(msg, "404") {
		t.Errorf("logged %v, want the server's 404 database not found", msg)
	}
	if n := stats.Sum("influxdb.dropped_total", "cause:rejected_4xx"); n != 1 {
		t.Errorf("influxdb.dropped_total{cause:rejected_4xx} = %d, want 1", n)
	}
}
