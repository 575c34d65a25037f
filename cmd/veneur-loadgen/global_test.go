package main

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/samplers"
)

// Every flush holds the workload's series, the same names in both wire
// forms, each decoding as the global decodes it; the variants differ in
// their values only.
func TestBuildFlushes(t *testing.T) {
	for _, name := range []string{"g", "d"} {
		g, ok := globalWorkloadByName(name)
		if !ok {
			t.Fatalf("no workload %s", name)
		}
		flushes, err := buildFlushes(g, 2)
		if err != nil {
			t.Fatal(err)
		}
		var names [2][]string
		for v, f := range flushes {
			if f.series != g.series() || len(f.msgs) != g.series() || f.counters != g.counters {
				t.Fatalf("%s: a flush of %d series (%d messages, %d counters), want %d (%d counters)", name, f.series, len(f.msgs), f.counters, g.series(), g.counters)
			}
			zr, err := zlib.NewReader(bytes.NewReader(f.body))
			if err != nil {
				t.Fatal(err)
			}
			var jms []forward.JSONMetric
			if err := json.NewDecoder(zr).Decode(&jms); err != nil {
				t.Fatal(err)
			}
			if len(jms) != g.series() {
				t.Fatalf("%s: %d JSON metrics, want %d", name, len(jms), g.series())
			}
			kinds := map[samplers.MetricType]int{}
			counterSum := 0.0
			for i := range jms {
				fj, err := forward.DecodeJSON(&jms[i])
				if err != nil {
					t.Fatalf("%s: JSON metric %d: %v", name, i, err)
				}
				fp, err := forward.DecodeMetricpbWire(f.msgs[i].B)
				if err != nil {
					t.Fatalf("%s: message %d: %v", name, i, err)
				}
				if fj.Name != fp.Name || fj.Type != fp.Type || strings.Join(fj.Tags, ",") != strings.Join(fp.Tags, ",") {
					t.Fatalf("%s: metric %d is %v %q %q as JSON, %v %q %q as protobuf", name, i, fj.Type, fj.Name, fj.Tags, fp.Type, fp.Name, fp.Tags)
				}
				kinds[fj.Type]++
				names[v] = append(names[v], fj.Name)
				switch fj.Type {
				case samplers.CounterMetric:
					counterSum += fj.Counter
					if !strings.HasPrefix(fj.Name, counterPrefix) || fj.Scope != samplers.GlobalOnly {
						t.Errorf("%s: counter %q of scope %v: the stand-in API counts lg.c.* global counters", name, fj.Name, fj.Scope)
					}
				case samplers.HistogramMetric, samplers.TimerMetric:
					if fj.Digest.Count() != float64(g.samples) || fp.Digest.Count() != float64(g.samples) {
						t.Errorf("%s: digest of %v and %v samples, want %d", name, fj.Digest.Count(), fp.Digest.Count(), g.samples)
					}
				case samplers.SetMetric:
					if e := fj.Set.Estimate(); e == 0 || e > uint64(g.members) {
						t.Errorf("%s: set estimate %d, want 1 to %d", name, e, g.members)
					}
				}
			}
			want := map[samplers.MetricType]int{samplers.HistogramMetric: g.histograms / 2, samplers.TimerMetric: g.histograms / 2, samplers.SetMetric: g.sets, samplers.CounterMetric: g.counters}
			for k, n := range want {
				if kinds[k] != n {
					t.Errorf("%s: %d series of %v, want %d", name, kinds[k], k, n)
				}
			}
			if counterSum != float64(g.counters) {
				t.Errorf("%s: counters add up to %v, want %d", name, counterSum, g.counters)
			}
		}
		if strings.Join(names[0], ",") != strings.Join(names[1], ",") {
			t.Errorf("%s: the variants hold different series", name)
		}
		if bytes.Equal(flushes[0].body, flushes[1].body) {
			t.Errorf("%s: the variants are the same", name)
		}
	}
}

// countingMerger counts the series and counter increments merged.
type countingMerger struct {
	mu               sync.Mutex
	series, counters int64
}

func (m *countingMerger) Merge(fwd []samplers.Forwarded) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.series += int64(len(fwd))
	for _, f := range fwd {
		if f.Type == samplers.CounterMetric {
			m.counters += int64(math.Round(f.Counter))
		}
	}
	return nil
}

// Simulated locals send to our importer over both transports, and to the
// bare receivers: what they count as accepted is what was merged.
func TestRunLocals(t *testing.T) {
	g, _ := globalWorkloadByName("g")
	g.histograms, g.sets, g.counters = 20, 5, 7
	flushes, err := buildFlushes(g, 2)
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, st globalSendStats, merged, counters int64) {
		t.Helper()
		if st.flushes == 0 || st.errors != 0 || st.partial != 0 || st.busy != 0 {
			t.Fatalf("%d flushes, %d errors (%v), %d partial, %d busy", st.flushes, st.errors, st.firstError, st.partial, st.busy)
		}
		if st.series != st.flushes*int64(g.series()) || st.counters != st.flushes*int64(g.counters) {
			t.Errorf("%d series and %d counters accepted in %d flushes, want %d and %d a flush", st.series, st.counters, st.flushes, g.series(), g.counters)
		}
		if merged >= 0 && (merged != st.series || counters != st.counters) {
			t.Errorf("the senders counted %d series and %d counters, the importer merged %d and %d", st.series, st.counters, merged, counters)
		}
	}
	const locals, d = 3, 200 * time.Millisecond

	t.Run("importer/http", func(t *testing.T) {
		m := &countingMerger{}
		im := forward.NewImporter(m, forward.ImporterConfig{})
		srv := httptest.NewServer(http.HandlerFunc(im.ServeHTTP))
		defer srv.Close()
		addr := strings.TrimPrefix(srv.URL, "http://")
		st, err := runLocals(context.Background(), locals, flushes, func() (flushSender, error) { return newHTTPSender(addr), nil }, d)
		if err != nil {
			t.Fatal(err)
		}
		check(t, st, m.series, m.counters)
	})
	t.Run("importer/grpc", func(t *testing.T) {
		m := &countingMerger{}
		srv, err := forward.NewGRPCServer(forward.NewImporter(m, forward.ImporterConfig{}), forward.GRPCServerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.ServeGRPC(ln); err != nil {
			t.Fatal(err)
		}
		defer srv.Stop(context.Background())
		st, err := runLocals(context.Background(), locals, flushes, func() (flushSender, error) { return newGRPCSender(ln.Addr().String()) }, d)
		if err != nil {
			t.Fatal(err)
		}
		check(t, st, m.series, m.counters)
	})
	for _, transport := range []string{transportHTTP, transportGRPC} {
		t.Run("bare/"+transport, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			pr, pw := io.Pipe()
			done := make(chan error, 1)
			go func() { done <- serveBare(ctx, transport, pw) }()
			var port int
			buf := make([]byte, 64)
			n, err := pr.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fmt.Sscanf(string(buf[:n]), "ready %d", &port); err != nil {
				t.Fatal(err)
			}
			st, err := runLocals(context.Background(), locals, flushes, dialer(transport, port), d)
			if err != nil {
				t.Fatal(err)
			}
			check(t, st, -1, 0)
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serveBare: %v", err)
			}
		})
	}
}

// The report's table of the global workloads gives the series merged per
// CPU-second beside the bare receiver's, and the targets judge them.
func TestReportGlobal(t *testing.T) {
	sent := func(series, counters int64) globalSendStats {
		return globalSendStats{flushes: series / 1500, series: series, counters: counters, elapsed: 10 * time.Second}
	}
	rep := &report{header: []string{"head"}, globalHeader: "Global workloads: test", global: []globalResult{
		{workload: "d", transport: transportGRPC, server: serverBare, sent: sent(6_000_000, 0), cpuSeconds: 5, wall: 10, peakRSS: 20 << 20, countersPublished: -1},
		{workload: "d", transport: transportGRPC, server: serverVeneur, sent: sent(3_000_000, 0), cpuSeconds: 6, wall: 10, peakRSS: 40 << 20},
		{workload: "g", transport: transportHTTP, server: serverVeneur, sent: sent(1_500_000, 300_000), cpuSeconds: 1, wall: 10, peakRSS: 30 << 20, countersPublished: 299_000},
	}}
	var out bytes.Buffer
	rep.render(&out)
	s := out.String()
	t.Log("\n" + s)
	for _, want := range []string{
		"Global workloads: test",
		"1,200,000", // the bare receiver per CPU-s
		"500,000",   // veneur per CPU-s
		"0.42x",     // veneur/bare
		"2.00x",     // RSS
		"FAIL (d) gRPC: the global merged 500,000 small digests per CPU-second (aim >= 1,000,000)",
		"a bare gRPC receiver, which only receives them, took 1,200,000 per CPU-second",
		"FAIL (g) http: the global published every global counter increment it accepted: 299000 of 300000",
		"PASS (d) grpc: the global published every global counter increment it accepted: exact",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(s, "Highest offered rate") {
		t.Error("a run of global workloads only shows the DogStatsD tables")
	}
}
