package veneur

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/internal/etcdtest"
	"github.com/veneur/veneur/internal/statstest"
)

// tierSeries sends n histograms, n global counters and n sets to addr
// (UDP), each name once, with known values.
func sendTierSeries(t *testing.T, local *Server, n int) {
	t.Helper()
	for i := range n {
		sendUDP(t, local.UDPAddr(),
			fmt.Sprintf("tier.h%d:%d|h|#svc:a\ntier.h%d:%d|h|#svc:a", i, i, i, i+10),
			fmt.Sprintf("tier.gc%d:2|c|#veneurglobalonly\ntier.gc%d:3|c|#veneurglobalonly", i, i),
			fmt.Sprintf("tier.s%d:alice|s\ntier.s%d:bob|s", i, i),
		)
	}
}

// publishers maps every series name printed by the outputs to the indexes
// of the outputs that printed it.
func publishers(outs ...string) map[string][]int {
	by := map[string][]int{}
	for i, out := range outs {
		for _, line := range strings.Split(out, "\n") {
			// flush <time> <name> <type> <value> host=... tags=[...]
			f := strings.Fields(line)
			if len(f) > 2 && strings.HasPrefix(f[2], "tier.") {
				by[f[2]] = append(by[f[2]], i)
			}
		}
	}
	return by
}

// checkSharded checks that each of the n series of sendTierSeries was
// published by exactly one global, with the exact value, and that the
// series were spread over every global.
func checkSharded(t *testing.T, n int, outs ...string) map[string]int {
	t.Helper()
	by := publishers(outs...)
	owner := map[string]int{}
	per := make([]int, len(outs))
	for i := range n {
		for _, name := range []string{fmt.Sprintf("tier.h%d.50percentile", i), fmt.Sprintf("tier.gc%d", i), fmt.Sprintf("tier.s%d", i)} {
			g := by[name]
			if len(g) != 1 {
				t.Errorf("%s published by globals %v, want exactly one", name, g)
				continue
			}
			owner[name] = g[0]
			per[g[0]]++
		}
		gc := fmt.Sprintf("tier.gc%d rate %v ", i, 5.0/3600)
		set := fmt.Sprintf("tier.s%d gauge 2 ", i)
		if g := by[fmt.Sprintf("tier.gc%d", i)]; len(g) == 1 && !strings.Contains(outs[g[0]], gc) {
			t.Errorf("global %d lacks %q", g[0], gc)
		}
		if g := by[fmt.Sprintf("tier.s%d", i)]; len(g) == 1 && !strings.Contains(outs[g[0]], set) {
			t.Errorf("global %d lacks %q", g[0], set)
		}
	}
	for g, k := range per {
		if k == 0 {
			t.Errorf("global %d owns none of %d series: %v", g, 3*n, per)
		}
	}
	return owner
}

func startGlobals(t *testing.T) ([]*Server, []*syncBuffer, []string) {
	t.Helper()
	var gs []*Server
	var outs []*syncBuffer
	var urls []string
	for i := range 3 {
		cfg := testConfig(t, "percentiles: [0.5]\ngrpc_address: 127.0.0.1:0\n")
		cfg.Hostname = fmt.Sprintf("global%d", i)
		g, out := startServer(t, cfg)
		gs, outs = append(gs, g), append(outs, out)
		if i == 2 {
			urls = append(urls, "grpc://"+g.GRPCAddr().String())
		} else {
			urls = append(urls, "http://"+g.HTTPAddr().String())
		}
	}
	return gs, outs, urls
}

// A local with forward_addresses sends each series to one global only;
// global counters, sets and percentiles are exact; veneur-proxy in front
// of the same globals routes every series to the same global.
func TestTierStaticListAndProxy(t *testing.T) {
	const n = 40
	gs, gouts, urls := startGlobals(t)
	lcfg := testConfig(t, "percentiles: [0.5]\nforward_addresses: ["+strings.Join(urls, ", ")+"]\n")
	local, _ := startServer(t, lcfg)
	sendTierSeries(t, local, n)
	shutdown(t, local)
	for _, g := range gs {
		shutdown(t, g)
	}
	var outs []string
	for _, o := range gouts {
		outs = append(outs, o.String())
	}
	checkSharded(t, n, outs...)

	// The same through veneur-proxy in front of three new globals, for a
	// local that forwards to one address.
	gs, gouts, purls := startGlobals(t)
	pcfg, err := ParseProxyConfig([]byte("http_address: 127.0.0.1:0\ninterval: 1h\nforward_addresses: [" + strings.Join(purls, ", ") + "]\n"))
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	p, err := NewProxy(pcfg, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + p.HTTPAddr().String() + "/healthcheck")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("proxy /healthcheck = %d with three members, want 200", resp.StatusCode)
	}
	lcfg = testConfig(t, "percentiles: [0.5]\nforward_address: http://"+p.HTTPAddr().String()+"\n")
	local, _ = startServer(t, lcfg)
	sendTierSeries(t, local, n)
	shutdown(t, local)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		shutdown(t, g)
	}
	outs = outs[:0]
	for _, o := range gouts {
		outs = append(outs, o.String())
	}
	checkSharded(t, n, outs...)
}

func TestIntervalStart(t *testing.T) {
	iv := 10 * time.Second
	b := time.Unix(1_700_000_000, 0)
	for _, c := range []struct {
		now, want time.Time
	}{
		{b, b.Add(-iv)},                              // the loop's tick at a boundary
		{b.Add(3 * time.Second), b},                  // Shutdown's flush mid-interval
		{b.Add(iv - time.Nanosecond), b},             // just before the next boundary
		{time.Unix(7, 0), time.Unix(0, 0)},           // near the epoch
		{time.Unix(-3, 0), time.Unix(-10, 0)},        // before it
		{b.Add(iv).In(time.FixedZone("x", 3600)), b}, // a zone changes nothing
	} {
		if got := intervalStart(c.now, iv); !got.Equal(c.want) {
			t.Errorf("intervalStart(%v) = %v, want %v", c.now.Unix(), got.Unix(), c.want.Unix())
		}
	}
	// 7 s does not divide a day: boundaries are Unix multiples of it, not
	// time.Truncate's multiples since year 1.
	if got := alignDown(time.Unix(700, 0).Add(3*time.Second), 7*time.Second); got.Unix() != 700 {
		t.Errorf("alignDown(703 s, 7 s) = %d, want 700", got.Unix())
	}
}

func TestProxyConfig(t *testing.T) {
	for _, c := range []struct {
		name, yaml, want string
	}{
		{"no listener", "forward_addresses: [http://g:8127]\n", "http_address"},
		{"no global", "http_address: 127.0.0.1:0\n", "forward_addresses"},
		{"udp", "http_address: 127.0.0.1:0\nforward_address: http://g:8127\nudp_address: 127.0.0.1:8126\n", "udp_address is set, but veneur-proxy"},
		{"api", "http_address: 127.0.0.1:0\nforward_address: http://g:8127\napi_hostname: https://app.datadoghq.com\nkey: x\n", "api_hostname"},
		{"advertise", "http_address: 127.0.0.1:0\netcd_endpoints: [http://127.0.0.1:2379]\netcd_advertise_address: http://p:8127\n", "etcd_advertise_address is set, but veneur-proxy"},
		{"both forward keys", "http_address: 127.0.0.1:0\nforward_address: http://g:8127\nforward_addresses: [http://g:8127]\n", "forward_address and forward_addresses"},
		{"bad scheme", "http_address: 127.0.0.1:0\nforward_addresses: [tcp://g:8127]\n", "forward_addresses[0]"},
		{"twice", "http_address: 127.0.0.1:0\nforward_addresses: [http://g:8127, http://g:8127]\n", "listed twice"},
		{"etcd endpoint", "http_address: 127.0.0.1:0\netcd_endpoints: [127.0.0.1:2379]\n", "etcd_endpoints[0]"},
		{"etcd prefix", "http_address: 127.0.0.1:0\netcd_endpoints: [http://127.0.0.1:2379]\netcd_prefix: veneur\n", "etcd_prefix"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseProxyConfig([]byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ParseProxyConfig: %v, want an error about %q", err, c.want)
			}
		})
	}
	for _, ok := range []string{
		"http_address: 127.0.0.1:0\nforward_address: http://g:8127\n",
		"grpc_address: 127.0.0.1:0\nforward_addresses: [http://g1:8127, grpcs://g2:8128]\n",
		"http_address: 127.0.0.1:0\netcd_endpoints: [http://127.0.0.1:2379]\n",
	} {
		if _, err := ParseProxyConfig([]byte(ok)); err != nil {
			t.Errorf("ParseProxyConfig(%q): %v", ok, err)
		}
	}
}

func TestTierConfig(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"etcd_advertise_address: http://g:8127\n", "etcd_endpoints is empty"},
		{"etcd_endpoints: [http://e:2379]\netcd_advertise_address: g:8127\n", "not a URL"},
		{"etcd_endpoints: [http://e:2379]\netcd_advertise_address: http://g:8127\nforward_address: http://x:8127\n", "does not forward"},
		{"etcd_endpoints: [http://e:2379]\netcd_lease_ttl: 0s\n", "etcd_lease_ttl"},
	} {
		_, err := ParseConfig([]byte("udp_address: 127.0.0.1:0\n" + c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseConfig(%q): %v, want an error about %q", c.yaml, err, c.want)
		}
	}
	// A global in etcd without a listener for imports.
	_, err := ParseConfig([]byte("udp_address: 127.0.0.1:0\netcd_endpoints: [http://e:2379]\netcd_advertise_address: http://g:8127\n"))
	if err == nil || !strings.Contains(err.Error(), "must take imports") {
		t.Errorf("a global without http_address: %v", err)
	}
	c, err := ParseConfig([]byte("udp_address: 127.0.0.1:0\netcd_endpoints: [http://e:2379]\n"))
	if err != nil || !c.IsLocal() {
		t.Errorf("etcd_endpoints alone: err %v, IsLocal %v; want a local that shards over etcd", err, c.IsLocal())
	}
	c, err = ParseConfig([]byte("udp_address: 127.0.0.1:0\nhttp_address: 127.0.0.1:0\netcd_endpoints: [http://e:2379]\netcd_advertise_address: http://g:8127\n"))
	if err != nil || c.IsLocal() {
		t.Errorf("a registered global: err %v, IsLocal %v; want a global", err, c.IsLocal())
	}
}

func TestBoundaryGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g boundaryGate
		// Not running: no wait.
		g.wait()
		start := time.Now()
		g.advance(start.Add(time.Second))
		g.wait()
		if time.Since(start) != 0 {
			t.Fatalf("an import before the boundary waited %v", time.Since(start))
		}
		// The boundary has passed and its flush is late: the import waits
		// for it.
		time.Sleep(time.Second + time.Millisecond)
		released := make(chan time.Duration)
		go func() {
			at := time.Now()
			g.wait()
			released <- time.Since(at)
		}()
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		select {
		case d := <-released:
			t.Fatalf("an import after the boundary, before its flush, was let through after %v", d)
		default:
		}
		g.advance(start.Add(2 * time.Second))
		if d := <-released; d != 300*time.Millisecond {
			t.Errorf("the import waited %v, want until the flush (300ms)", d)
		}
		// A flush that never comes holds an import gateMaxWait at most.
		time.Sleep(time.Second)
		at := time.Now()
		g.wait()
		if d := time.Since(at); d != gateMaxWait {
			t.Errorf("with no flush, the import waited %v, want %v", d, gateMaxWait)
		}
	})
}

// veneur-proxy answers 503 on /healthcheck while it has no global to send
// to, and 200 once a global has registered in etcd and joined the ring;
// GET /debug/ring shows it.
func TestProxyHealthFollowsEtcd(t *testing.T) {
	etcd := etcdtest.Start(t)
	log := logrus.New()
	log.SetOutput(io.Discard)
	pcfg, err := ParseProxyConfig([]byte("http_address: 127.0.0.1:0\ninterval: 1s\netcd_endpoints: [" + etcd.Endpoint() + "]\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProxy(pcfg, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	base := "http://" + p.HTTPAddr().String()
	health := func() int {
		resp, err := http.Get(base + "/healthcheck")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := health(); code != http.StatusServiceUnavailable {
		t.Errorf("/healthcheck with no global = %d, want 503", code)
	}
	// A global registers.
	gcfg := testConfig(t, "etcd_endpoints: ["+etcd.Endpoint()+"]\netcd_advertise_address: http://127.0.0.1:1\n")
	gcfg.Interval = "1s"
	g, _ := startServer(t, gcfg)
	t.Cleanup(func() { shutdown(t, g) })
	deadline := time.Now().Add(15 * time.Second)
	for health() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/healthcheck did not turn 200 after a global registered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get(base + "/debug/ring")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Members []string           `json:"members"`
		Epoch   int64              `json:"epoch"`
		Share   map[string]float64 `json:"share"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if len(v.Members) != 1 || v.Members[0] != "http://127.0.0.1:1" || v.Epoch == 0 || v.Share["http://127.0.0.1:1"] != 1 {
		t.Errorf("/debug/ring = %+v, want the one global, its epoch and its whole share", v)
	}
}

// Each member of a tier has its own delivery self-metrics, tagged
// destination:forward-<host:port>, so one's spool gauge is not taken for
// another's.
func TestTierMembersHaveTheirOwnDeliveryMetrics(t *testing.T) {
	var urls, hosts []string
	var gs []*Server
	for range 2 {
		g, _ := startServer(t, testConfig(t, ""))
		gs = append(gs, g)
		urls = append(urls, "http://"+g.HTTPAddr().String())
		hosts = append(hosts, g.HTTPAddr().String())
	}
	rec := &statstest.Recorder{}
	local, _ := startServerOpts(t, testConfig(t, "forward_addresses: ["+strings.Join(urls, ", ")+"]\n"), Options{Stats: rec})
	sendTierSeries(t, local, 40)
	shutdown(t, local)
	total := int64(0)
	for _, h := range hosts {
		n := rec.Sum("forward.post_metrics_total", "destination:forward-"+h)
		if n == 0 {
			t.Errorf("forward.post_metrics_total{destination:forward-%s} = 0, want that member's series", h)
		}
		total += n
	}
	if total != 120 {
		t.Errorf("forward.post_metrics_total summed over the members = %d, want 120", total)
	}
	for _, g := range gs {
		shutdown(t, g)
	}
}
