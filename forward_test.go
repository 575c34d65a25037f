package veneur

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/veneur/veneur/samplers"
)

func TestForwardParts(t *testing.T) {
	const (
		c, g, h, tm, st = samplers.CounterMetric, samplers.GaugeMetric, samplers.HistogramMetric, samplers.TimerMetric, samplers.SetMetric
		mixed, lo, gl   = samplers.MixedScope, samplers.LocalOnly, samplers.GlobalOnly
	)
	for _, x := range []struct {
		t             samplers.MetricType
		scope         samplers.MetricScope
		local, global bool
	}{
		{c, mixed, true, false}, {c, lo, true, false}, {c, gl, false, true},
		{g, mixed, true, false}, {g, gl, true, false},
		{h, mixed, true, true}, {h, lo, true, false}, {h, gl, false, true},
		{tm, mixed, true, true},
		{st, mixed, false, true}, {st, lo, true, false}, {st, gl, false, true},
	} {
		if l, gb := forwardParts(x.t, x.scope); l != x.local || gb != x.global {
			t.Errorf("%v scope %d: local %v global %v, want %v %v", x.t, x.scope, l, gb, x.local, x.global)
		}
	}
}

// A local instance flushes host-level parts itself and forwards digests,
// sketches and global counters; the global instance publishes percentiles,
// set sizes and global counters. Nothing is published twice. The same
// holds over HTTP /import and over gRPC.
func TestForwardLocalToGlobal(t *testing.T) {
	for _, transport := range []string{"http", "grpc"} {
		t.Run(transport, func(t *testing.T) { testForwardLocalToGlobal(t, transport) })
	}
}

func testForwardLocalToGlobal(t *testing.T, transport string) {
	gcfg := testConfig(t, "percentiles: [0.5]\naggregates: [min, max, count]\ngrpc_address: 127.0.0.1:0\n")
	gcfg.Hostname = "global"
	global, gout := startServer(t, gcfg)
	addr := "http://" + global.HTTPAddr().String()
	if transport == "grpc" {
		addr = "grpc://" + global.GRPCAddr().String()
	}
	lcfg := testConfig(t, "percentiles: [0.5]\naggregates: [min, max, count]\nforward_address: "+addr+"\n")
	lcfg.Hostname = "local"
	local, lout := startServer(t, lcfg)
	sendUDP(t, local.UDPAddr(),
		"lat:10|ms|#svc:a\nlat:20|ms|#svc:a\nlat:30|ms|#svc:a",
		"near:5|h|#veneurlocalonly",
		"far:7|h|#veneurglobalonly",
		"users:alice|s\nusers:bob|s",
		"hits:2|c\nglobal.hits:3|c|#veneurglobalonly",
		"temp:21|g",
	)
	// Shutdown drains the socket and flushes; that final flush forwards and
	// waits until the global took the import.
	shutdown(t, local)
	shutdown(t, global)
	lo, gl := lout.String(), gout.String()

	for _, want := range []string{
		"lat.min gauge 10 host=local", "lat.max gauge 30 ", "lat.count rate ",
		"near.min gauge 5 ", "near.50percentile gauge 5 ",
		"hits rate ", "temp gauge 21 ",
	} {
		if !strings.Contains(lo, want) {
			t.Errorf("local output lacks %q:\n%s", want, lo)
		}
	}
	for _, unwanted := range []string{"lat.50percentile", "far", "users", "global.hits"} {
		if strings.Contains(lo, unwanted) {
			t.Errorf("local published %q, which is the global's:\n%s", unwanted, lo)
		}
	}
	for _, want := range []string{
		"lat.50percentile gauge 20 host=global tags=[svc:a]",
		"far.50percentile gauge 7 ",
		"users gauge 2 ",
		"global.hits rate 0.0008333333333333334 ", // 3/3600
	} {
		if !strings.Contains(gl, want) {
			t.Errorf("global output lacks %q:\n%s", want, gl)
		}
	}
	for _, unwanted := range []string{"lat.min", "lat.count", "far.min", "near", "temp", " hits "} {
		if strings.Contains(gl, unwanted) {
			t.Errorf("global published %q, which is the local's:\n%s", unwanted, gl)
		}
	}
}

// A forward whose answer is lost is retried with the same batch id, and
// the global merges it once: its global counter is not doubled.
func TestForwardLostAnswerCountsOnce(t *testing.T) {
	gcfg := testConfig(t, "")
	gcfg.Hostname = "global"
	global, gout := startServer(t, gcfg)
	target := "http://" + global.HTTPAddr().String() + "/import"
	var mu sync.Mutex
	answers, lost := 0, 0
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequest(r.Method, target, r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		mu.Lock()
		answers++
		drop := answers == 1
		if drop {
			lost++
		}
		mu.Unlock()
		if drop {
			// The global merged it; the local never hears so.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer proxy.Close()
	lcfg := testConfig(t, "forward_address: "+proxy.URL+"\n")
	local, _ := startServer(t, lcfg)
	sendUDP(t, local.UDPAddr(), "fleet.hits:5|c|#veneurglobalonly")
	shutdown(t, local) // forwards, and retries the lost answer
	shutdown(t, global)
	if lost != 1 || answers < 2 {
		t.Fatalf("%d answers, %d lost: the retry did not happen", answers, lost)
	}
	if got := gout.String(); strings.Count(got, "fleet.hits rate") != 1 || !strings.Contains(got, "fleet.hits rate 0.001388888888888889 ") {
		t.Errorf("want fleet.hits once, at 5/3600 per second:\n%s", got)
	}
}
