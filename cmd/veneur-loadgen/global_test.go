package main

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/plugins"
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

// recordingMember is the sink of one global in a forward.Sharded: it
// keeps the names of the series it was sent, in order.
type recordingMember struct {
	mu    sync.Mutex
	names []string
}

func (r *recordingMember) Name() string { return "forward" }
func (r *recordingMember) Flush(_ context.Context, b *plugins.Batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range b.Forward {
		r.names = append(r.names, f.Name)
	}
	return nil
}

func names(fwd []samplers.Forwarded) []string {
	out := make([]string, len(fwd))
	for i := range fwd {
		out[i] = fwd[i].Name
	}
	return out
}

// A flush splits over 1, 2 and 3 globals as a local with those
// forward_addresses splits it (forward.Sharded): every series in exactly
// one part, the part of its owner in the ring, in the flush's order.
func TestSplitByOwner(t *testing.T) {
	g, _ := globalWorkloadByName("g")
	fwds, err := buildForwarded(g, 1)
	if err != nil {
		t.Fatal(err)
	}
	fwd := fwds[0]
	urls := []string{"http://127.0.0.1:41003", "http://127.0.0.1:41001", "http://127.0.0.1:41002"}
	for n := 1; n <= len(urls); n++ {
		ring := forward.NewRing(urls[:n])
		parts := splitByOwner(fwd, ring)
		if len(parts) != n {
			t.Fatalf("%d globals: %d parts", n, len(parts))
		}
		owner := map[string]int{}
		for j, part := range parts {
			if len(part) == 0 {
				t.Errorf("%d globals: %s owns none of %d series", n, ring.Member(j), len(fwd))
			}
			for i := range part {
				key := samplers.AppendForwardedKey(nil, &part[i])
				if o, dup := owner[string(key)]; dup {
					t.Fatalf("%d globals: %s is in parts %d and %d", n, part[i].Name, o, j)
				}
				owner[string(key)] = j
				if o := ring.Owner(key); o != j {
					t.Errorf("%d globals: %s is in the part of %s, its owner is %s", n, part[i].Name, ring.Member(j), ring.Member(o))
				}
			}
		}
		if len(owner) != len(fwd) {
			t.Errorf("%d globals: the parts hold %d series, the flush %d", n, len(owner), len(fwd))
		}

		members := map[string]*recordingMember{}
		sh, err := forward.NewSharded(forward.ShardedConfig{
			Membership: forward.NewStaticMembership(urls[:n]),
			NewMember: func(address string) (plugins.Sink, error) {
				m := &recordingMember{}
				members[address] = m
				return m, nil
			},
			Interval: time.Second,
		}, plugins.Env{})
		if err != nil {
			t.Fatal(err)
		}
		if err := sh.Flush(context.Background(), &plugins.Batch{Start: time.Unix(1_700_000_000, 0), Forward: fwd}); err != nil {
			t.Fatal(err)
		}
		for j, part := range parts {
			m := members[ring.Member(j)]
			if m == nil {
				t.Fatalf("%d globals: the sharded local sent nothing to %s", n, ring.Member(j))
			}
			if !slices.Equal(m.names, names(part)) {
				t.Errorf("%d globals: %s got %d series from the sharded local, %d in our part (or another order)", n, ring.Member(j), len(m.names), len(part))
			}
		}
		shares := make([]int, n)
		for j := range parts {
			shares[j] = len(parts[j])
		}
		t.Logf("%d globals: series per global %v", n, shares)
	}
}

// decodeFlush decodes both wire forms of f, checks they hold the same
// series, and returns the series.
func decodeFlush(t *testing.T, f localFlush) []samplers.Forwarded {
	t.Helper()
	zr, err := zlib.NewReader(bytes.NewReader(f.body))
	if err != nil {
		t.Fatal(err)
	}
	var jms []forward.JSONMetric
	if err := json.NewDecoder(zr).Decode(&jms); err != nil {
		t.Fatal(err)
	}
	if len(jms) != f.series || len(f.msgs) != f.series {
		t.Fatalf("a flush of %d series holds %d JSON metrics and %d messages", f.series, len(jms), len(f.msgs))
	}
	out := make([]samplers.Forwarded, len(jms))
	for i := range jms {
		fj, err := forward.DecodeJSON(&jms[i])
		if err != nil {
			t.Fatal(err)
		}
		fp, err := forward.DecodeMetricpbWire(f.msgs[i].B)
		if err != nil {
			t.Fatal(err)
		}
		if fj.Name != fp.Name || fj.Type != fp.Type || !slices.Equal(fj.Tags, fp.Tags) {
			t.Fatalf("series %d is %q as JSON and %q as protobuf", i, fj.Name, fp.Name)
		}
		out[i] = fj
	}
	return out
}

// tierFlushes gives each global, by its place in the list of URLs (not
// the ring's sorted order), the encoded series it owns; with one global
// the flush is what buildFlushes encodes.
func TestTierFlushes(t *testing.T) {
	g, _ := globalWorkloadByName("g")
	const variants = 2
	fwds, err := buildForwarded(g, variants)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := buildFlushes(g, variants)
	if err != nil {
		t.Fatal(err)
	}
	one, err := tierFlushes(fwds, []string{"grpc://127.0.0.1:41001"})
	if err != nil {
		t.Fatal(err)
	}
	for v := range whole {
		f := one[v][0]
		if !bytes.Equal(f.body, whole[v].body) || len(f.msgs) != len(whole[v].msgs) || f.series != whole[v].series || f.counters != whole[v].counters {
			t.Fatalf("variant %d for one global differs from the whole flush", v)
		}
		for i := range f.msgs {
			if !bytes.Equal(f.msgs[i].B, whole[v].msgs[i].B) {
				t.Fatalf("variant %d, message %d for one global differs from the whole flush", v, i)
			}
		}
	}

	urls := []string{"grpc://127.0.0.1:41003", "grpc://127.0.0.1:41001", "grpc://127.0.0.1:41002"}
	ring := forward.NewRing(urls)
	tier, err := tierFlushes(fwds, urls)
	if err != nil {
		t.Fatal(err)
	}
	for v, parts := range tier {
		if len(parts) != len(urls) {
			t.Fatalf("variant %d: %d parts for %d globals", v, len(parts), len(urls))
		}
		seen := map[string]bool{}
		counters := 0
		for i, f := range parts {
			got := decodeFlush(t, f)
			if f.series == 0 {
				t.Errorf("variant %d: %s owns no series", v, urls[i])
			}
			partCounters := 0
			for j := range got {
				if seen[got[j].Name] {
					t.Fatalf("variant %d: %s in two parts", v, got[j].Name)
				}
				seen[got[j].Name] = true
				if o := ring.Owner(samplers.AppendForwardedKey(nil, &got[j])); ring.Member(o) != urls[i] {
					t.Errorf("variant %d: %s sent to %s, owned by %s", v, got[j].Name, urls[i], ring.Member(o))
				}
				if got[j].Type == samplers.CounterMetric {
					partCounters += int(got[j].Counter)
				}
			}
			if partCounters != f.counters {
				t.Errorf("variant %d, %s: counters add up to %d, the flush says %d", v, urls[i], partCounters, f.counters)
			}
			counters += f.counters
		}
		if len(seen) != g.series() || counters != g.counters {
			t.Errorf("variant %d: the parts hold %d series and %d counter increments, want %d and %d", v, len(seen), counters, g.series(), g.counters)
		}
	}
	if _, err := tierFlushes(fwds, []string{urls[0], urls[0]}); err == nil {
		t.Error("a URL listed twice was accepted")
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

// grpcImporter serves the gRPC import into m on 127.0.0.1:0 until the test
// ends, and returns its address.
func grpcImporter(t *testing.T, m forward.Merger) *net.TCPAddr {
	t.Helper()
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
	t.Cleanup(func() { srv.Stop(context.Background()) })
	return ln.Addr().(*net.TCPAddr)
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
	// checkTier has the locals shard over globals that merge into
	// mergers: each global merged what its answers accepted, and the
	// globals together took every series of every flush once.
	checkTier := func(t *testing.T, urls []string, dials []func() (flushSender, error), mergers []*countingMerger) {
		t.Helper()
		fwds, err := buildForwarded(g, 2)
		if err != nil {
			t.Fatal(err)
		}
		parts, err := tierFlushes(fwds, urls)
		if err != nil {
			t.Fatal(err)
		}
		st, err := runLocals(context.Background(), locals, parts, dials, d)
		if err != nil {
			t.Fatal(err)
		}
		var merged, counters int64
		for _, m := range mergers {
			merged += m.series
			counters += m.counters
		}
		check(t, st, merged, counters)
		if len(st.perGlobal) != len(urls) {
			t.Fatalf("series of %d globals counted, want %d", len(st.perGlobal), len(urls))
		}
		for i, m := range mergers {
			if st.perGlobal[i] != m.series || m.series == 0 {
				t.Errorf("global %d: the senders counted %d series accepted, it merged %d", i, st.perGlobal[i], m.series)
			}
			// Every flush sent this global its share of the series.
			if want := st.flushes * int64(parts[0][i].series); st.perGlobal[i] != want {
				t.Errorf("global %d: %d series in %d flushes, want %d (%d a flush)", i, st.perGlobal[i], st.flushes, want, parts[0][i].series)
			}
		}
	}

	t.Run("importer/http", func(t *testing.T) {
		m := &countingMerger{}
		im := forward.NewImporter(m, forward.ImporterConfig{})
		srv := httptest.NewServer(http.HandlerFunc(im.ServeHTTP))
		defer srv.Close()
		addr := strings.TrimPrefix(srv.URL, "http://")
		st, err := runLocals(context.Background(), locals, singleFlushes(flushes), []func() (flushSender, error){func() (flushSender, error) { return newHTTPSender(addr), nil }}, d)
		if err != nil {
			t.Fatal(err)
		}
		check(t, st, m.series, m.counters)
	})
	for _, transport := range []string{transportGRPC, transportGRPCv14} {
		t.Run("importer/"+transport, func(t *testing.T) {
			m := &countingMerger{}
			addr := grpcImporter(t, m)
			st, err := runLocals(context.Background(), locals, singleFlushes(flushes), []func() (flushSender, error){dialer(transport, addr.Port)}, d)
			if err != nil {
				t.Fatal(err)
			}
			check(t, st, m.series, m.counters)
		})
	}
	t.Run("tier/http", func(t *testing.T) {
		const n = 3
		mergers := make([]*countingMerger, n)
		urls := make([]string, n)
		dials := make([]func() (flushSender, error), n)
		for i := range n {
			mergers[i] = &countingMerger{}
			srv := httptest.NewServer(http.HandlerFunc(forward.NewImporter(mergers[i], forward.ImporterConfig{}).ServeHTTP))
			defer srv.Close()
			urls[i] = srv.URL
			addr := strings.TrimPrefix(srv.URL, "http://")
			dials[i] = func() (flushSender, error) { return newHTTPSender(addr), nil }
		}
		checkTier(t, urls, dials, mergers)
	})
	t.Run("tier/grpc", func(t *testing.T) {
		const n = 2
		mergers := make([]*countingMerger, n)
		urls := make([]string, n)
		dials := make([]func() (flushSender, error), n)
		for i := range n {
			mergers[i] = &countingMerger{}
			addr := grpcImporter(t, mergers[i]).String()
			urls[i] = "grpc://" + addr
			dials[i] = func() (flushSender, error) { return newGRPCSender(addr) }
		}
		checkTier(t, urls, dials, mergers)
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
			st, err := runLocals(context.Background(), locals, singleFlushes(flushes), []func() (flushSender, error){dialer(transport, port)}, d)
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
	if strings.Contains(s, "A tier of globals") {
		t.Error("a run with one global shows the table of tiers")
	}
}

// With -globals 1,2,3 the tiers have a table of their own: series per
// CPU-second of all the globals against one global's, the share of the
// global that took the most, the largest and the total peak RSS, and
// whether the globals together published every counter increment.
func TestReportTiers(t *testing.T) {
	tier := func(n int, perGlobal []int64, cpu float64, peak, total uint64, published int64) globalResult {
		var series int64
		for _, p := range perGlobal {
			series += p
		}
		return globalResult{workload: "g", transport: transportHTTP, server: serverVeneur, globals: n,
			sent:       globalSendStats{flushes: series / 1500, series: series, counters: series / 5, elapsed: 10 * time.Second, perGlobal: perGlobal},
			cpuSeconds: cpu, wall: 10, peakRSS: peak << 20, totalRSS: total << 20, countersPublished: published}
	}
	rep := &report{globalHeader: "Global workloads: test", global: []globalResult{
		{workload: "g", transport: transportHTTP, server: serverBare, sent: globalSendStats{series: 6_000_000, elapsed: 10 * time.Second}, cpuSeconds: 5, wall: 10, peakRSS: 20 << 20, countersPublished: -1},
		tier(1, []int64{1_200_000}, 12, 70, 70, 240_000),
		tier(2, []int64{570_000, 630_000}, 15, 60, 118, 240_000),
		tier(3, []int64{390_000, 450_000, 360_000}, 16, 55, 160, 239_999),
		{workload: "g", transport: transportGRPC, server: serverVeneur, globals: 2, err: errors.New("global 2 of 2: no answer")},
	}}
	var out bytes.Buffer
	rep.render(&out)
	s := out.String()
	t.Log("\n" + s)
	first, tiers, ok := strings.Cut(s, "A tier of globals")
	if !ok {
		t.Fatal("no table of tiers")
	}
	tiers, targets, _ := strings.Cut(tiers, "Targets")
	row := func(table string, prefix ...string) string {
		for l := range strings.SplitSeq(table, "\n") {
			if f := strings.Fields(l); len(f) >= len(prefix) && slices.Equal(f[:len(prefix)], prefix) {
				return l
			}
		}
		return ""
	}
	if row(first, "g", "http", "veneur") == "" || row(first, "g", "http", "bare") == "" {
		t.Error("the table of the global workloads lacks veneur's one global or the bare receiver")
	}
	if !strings.Contains(first, "1,200,000") || strings.Contains(first, "570,000") || strings.Contains(first, "no answer") {
		t.Error("the table of the global workloads holds a tier of more than one global")
	}
	for _, c := range []struct {
		globals string
		want    []string
	}{
		// 1,200,000 series / 12 CPU s; share 1; RSS 70 and 70.
		{"1", []string{"1,200,000", "100,000", "1.00x", "1.000", "70.0"}},
		// 1,200,000 / 15 = 80,000 a CPU-second, 0.80x of one global;
		// 630,000 over a mean of 600,000 is 1.050.
		{"2", []string{"80,000", "0.80x", "1.050", "60.0", "118.0", "exact"}},
		// 75,000, 0.75x; 450,000 / 400,000 = 1.125; the counters lost one.
		{"3", []string{"75,000", "0.75x", "1.125", "55.0", "160.0", "239999 of 240000"}},
	} {
		r := row(tiers, "g", "http", c.globals)
		if r == "" {
			t.Errorf("no row of %s globals", c.globals)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(r, w) {
				t.Errorf("the row of %s globals lacks %q: %s", c.globals, w, r)
			}
		}
	}
	if r := row(tiers, "g", "grpc", "2"); !strings.Contains(r, "ERROR") || !strings.Contains(r, "global 2 of 2: no answer") {
		t.Errorf("the failed tier's row: %q", r)
	}
	for _, want := range []string{
		"PASS (g) http: the global published every global counter increment it accepted: exact",
		"PASS (g) http, 2 globals: together they published every global counter increment they accepted: exact",
		"FAIL (g) http, 3 globals: together they published every global counter increment they accepted: 239999 of 240000",
	} {
		if !strings.Contains(targets, want) {
			t.Errorf("the targets lack %q", want)
		}
	}
}
