package influxdb

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/veneur/veneur/samplers"
)

// influxd runs a real InfluxDB 1.x server for the test on free loopback
// ports. Without the influxd binary the test is skipped, unless
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
	httpAddr, rpcAddr := freePort(t), freePort(t)
	conf := fmt.Sprintf(`reporting-disabled = true
bind-address = %q
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
[http]
  bind-address = %q
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[logging]
  level = "error"
`, rpcAddr, filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), httpAddr)
	cfgPath := filepath.Join(dir, "influxdb.conf")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", cfgPath)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("influxd output:\n%s", out.String())
		}
	})
	base := "http://" + httpAddr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				break
			}
		}
		select {
		case <-done:
			t.Fatalf("influxd exited:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("influxd did not answer /ping within 30s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	query(t, base, "", "CREATE DATABASE veneur")
	return base
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
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

func metric(name, suffix string, v float64, ts int64, host, device string, tags ...string) samplers.InterMetric {
	return samplers.InterMetric{
		Series: &samplers.Series{Name: name, Tags: tags, Host: host, Device: device},
		Suffix: suffix, Value: v, Timestamp: ts,
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
	for _, c := range []Config{
		{Address: "influx:8086", Database: "d"},
		{Address: "ftp://influx", Database: "d"},
		{Address: "http://influx:8086"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

// Points written by Flush read back from a real InfluxDB exactly: names,
// escaped tags, values and timestamps, over several write requests.
func TestFlushToInfluxDB(t *testing.T) {
	base := influxd(t)
	p, err := New(Config{Address: base, Database: "veneur", Consistency: "one", Hostname: "box", Tags: []string{"region:eu"}, Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	const ts = 1700000000
	err = p.Flush(context.Background(), []samplers.InterMetric{
		metric("req", "", 0.5, ts, "", "", "code:200"),
		metric("req", "", 1.5, ts, "", "", "code:500"),
		metric("lat", ".max", 99.25, ts, "web 1", "", "path:/a,b"),
		metric("lat", ".min", 0.001, ts, "", "sda", "bare"),
		metric("set size", "", 42, ts, "", ""),
	})
	if err != nil {
		t.Fatal(err)
	}
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

// A refused write is an error naming the server's answer.
func TestFlushErrorFromInfluxDB(t *testing.T) {
	base := influxd(t)
	p, err := New(Config{Address: base, Database: "missing"})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Flush(context.Background(), []samplers.InterMetric{metric("x", "", 1, 1700000000, "", "")})
	if err == nil || !strings.Contains(err.Error(), "database not found") || !strings.Contains(err.Error(), "404") {
		t.Errorf("err = %v, want the server's 404 database not found", err)
	}
}
