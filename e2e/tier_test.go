package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/veneur/veneur/internal/etcdtest"
	"github.com/veneur/veneur/tdigest"
)

// The global tier end to end: a real etcd, real veneur globals that
// register in it, real locals (or a veneur-proxy) that shard over what
// they see, and one stand-in API every global publishes to.

// tierInterval is the tier's interval: the test sends each interval's
// data in its middle, so that half an interval separates it from both
// boundaries; a second left too little on a loaded 2-CPU machine (a local
// took lines sent 0.5-0.8 s into an interval after its boundary).
const (
	tierInterval = 2 * time.Second
	tierSeries   = 12 // series of each kind (histogram, set, global counter)
	tierLocals   = 4
)

// tierGlobal starts a global registered in etcd under its http_address.
func tierGlobal(t *testing.T, fake *fakeDD, etcd string, i int) *daemon {
	t.Helper()
	return startDaemon(t, fake, func(c config) {
		c["interval"] = tierInterval.String()
		c["hostname"] = fmt.Sprintf("global-%d", i)
		c["etcd_endpoints"] = []string{etcd}
		c["etcd_advertise_address"] = "http://" + c["http_address"].(string)
		c["etcd_lease_ttl"] = "2s"
	})
}

// tierLocal starts a local that shards over the globals in etcd, or
// forwards to one address (veneur-proxy) when forward is set.
func tierLocal(t *testing.T, fake *fakeDD, etcd, forward string, i int) *daemon {
	t.Helper()
	return startDaemon(t, fake, func(c config) {
		c["interval"] = tierInterval.String()
		c["hostname"] = fmt.Sprintf("local-%d", i)
		if forward != "" {
			c["forward_address"] = forward
		} else {
			c["etcd_endpoints"] = []string{etcd}
		}
	})
}

// ringOf reads GET /debug/ring of d.
func ringOf(t *testing.T, d *daemon) (members []string, pending int) {
	t.Helper()
	resp, err := http.Get("http://" + d.httpAddr + "/debug/ring")
	if err != nil {
		t.Fatalf("GET /debug/ring: %v", err)
	}
	defer resp.Body.Close()
	var v struct {
		Members []string          `json:"members"`
		Pending []json.RawMessage `json:"pending"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("decoding /debug/ring: %v", err)
	}
	return v.Members, len(v.Pending)
}

// waitRing polls the /debug/ring of every d until it shows n members and
// no pending change.
func waitRing(t *testing.T, n int, ds ...*daemon) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, d := range ds {
		for {
			members, pending := ringOf(t, d)
			if len(members) == n && pending == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the ring of %s shows %v (%d pending), want %d members", d.httpAddr, members, pending, n)
			}
			time.Sleep(pollEvery)
		}
	}
}

// tierSender sends, in each interval, the same known data to every local:
// local l sends the values l*5+1 .. l*5+5 to each histogram, 1 to each
// global counter and the member "l" to each set.
type tierSender struct {
	locals []*daemon
	mu     sync.Mutex
	sent   []time.Time // the starts of the intervals sent
}

// sendInterval waits for the next boundary, then sends one interval's
// data in the middle of the interval, well away from both boundaries: a
// local whose flush fires late (a busy machine) must not take it into the
// interval before.
func (s *tierSender) sendInterval(t *testing.T) {
	t.Helper()
	now := time.Now()
	start := now.Truncate(tierInterval).Add(tierInterval)
	time.Sleep(time.Until(start.Add(tierInterval / 2)))
	for l, d := range s.locals {
		var lines []string
		for j := range tierSeries {
			for v := l*5 + 1; v <= l*5+5; v++ {
				lines = append(lines, fmt.Sprintf("tier.h%d:%d|h", j, v))
			}
			lines = append(lines, fmt.Sprintf("tier.gc%d:1|c|#veneurglobalonly", j), fmt.Sprintf("tier.s%d:%d|s", j, l))
		}
		// Datagrams well under 4096 bytes.
		var dgs []string
		for i := 0; i < len(lines); i += 40 {
			dgs = append(dgs, strings.Join(lines[i:min(i+40, len(lines))], "\n"))
		}
		sendRaw(t, d, dgs...)
	}
	if time.Since(start) > 3*tierInterval/4 {
		t.Logf("sending the interval at %v took until %v", start, time.Since(start))
	}
	s.mu.Lock()
	s.sent = append(s.sent, start)
	s.mu.Unlock()
}

// wantMedian is the median of the values 1..5*locals, through our
// t-digest, as a single global fed every value would publish it.
func wantMedian(locals int) float64 {
	d := tdigest.New()
	for v := 1; v <= 5*locals; v++ {
		d.Add(float64(v), 1)
	}
	return d.Quantile(0.5)
}

// published is what the globals published: by series name and timestamp,
// the hosts (globals) that published it and the values.
type published map[string]map[int64][]point

type point struct {
	host  string
	value float64
}

func globalSeries(reqs []apiRequest) published {
	p := published{}
	for _, r := range reqs {
		for _, s := range r.Series {
			if !strings.HasPrefix(s.Host, "global-") || !strings.HasPrefix(s.Metric, "tier.") {
				continue
			}
			if p[s.Metric] == nil {
				p[s.Metric] = map[int64][]point{}
			}
			v := s.Value
			if s.Type == "rate" {
				v *= s.Interval
			}
			p[s.Metric][int64(s.Timestamp)] = append(p[s.Metric][int64(s.Timestamp)], point{s.Host, v})
		}
	}
	return p
}

// checkInterval checks that the data sent in the interval starting at
// start was published by exactly one global per series, at start+2
// intervals (the locals flush it at start+1, their globals at start+2),
// with the values of a single global. It returns the hosts that
// published each series, and the series missing, by name.
func checkInterval(t *testing.T, p published, start time.Time, median float64, allowMissing func(name string) bool) (owners map[string]string, missing []string) {
	t.Helper()
	ts := start.Add(2 * tierInterval).Unix()
	owners = map[string]string{}
	for j := range tierSeries {
		for _, c := range []struct {
			name  string
			value float64
		}{
			{fmt.Sprintf("tier.h%d.50percentile", j), median},
			{fmt.Sprintf("tier.gc%d", j), tierLocals},
			{fmt.Sprintf("tier.s%d", j), tierLocals},
		} {
			pts := p[c.name][ts]
			switch {
			case len(pts) == 0:
				missing = append(missing, c.name)
				if allowMissing == nil || !allowMissing(c.name) {
					t.Errorf("interval %v: %s not published at %d", start.Unix(), c.name, ts)
				}
			case len(pts) > 1:
				t.Errorf("interval %v: %s published at %d by %d globals: %v", start.Unix(), c.name, ts, len(pts), pts)
			case math.Abs(pts[0].value-c.value) > 1e-9*math.Max(1, c.value):
				t.Errorf("interval %v: %s = %v from %s, want %v", start.Unix(), c.name, pts[0].value, pts[0].host, c.value)
			default:
				owners[c.name] = pts[0].host
			}
		}
	}
	return owners, missing
}

// noStrayPoints checks that no global published a tier series at a
// timestamp the test did not send for: nothing published twice, or late.
func noStrayPoints(t *testing.T, p published, sent []time.Time) {
	t.Helper()
	want := map[int64]bool{}
	for _, s := range sent {
		want[s.Add(2*tierInterval).Unix()] = true
	}
	for name, byTS := range p {
		for ts, pts := range byTS {
			if !want[ts] {
				t.Errorf("%s published at %d by %v, an interval nothing was sent in", name, ts, pts)
			}
		}
	}
}

func hostsOf(owners map[string]string) []string {
	var hs []string
	for _, h := range owners {
		if !slices.Contains(hs, h) {
			hs = append(hs, h)
		}
	}
	sort.Strings(hs)
	return hs
}

// Three globals and four locals: every series exactly once per interval,
// exact sums and sets, percentiles of a single global; a fourth global
// joins, then one leaves with SIGTERM: no interval missing, nothing twice.
func TestTierEtcdJoinAndLeave(t *testing.T) {
	etcd := etcdtest.Start(t)
	fake := newFakeDD(t)
	var globals []*daemon
	for i := range 3 {
		globals = append(globals, tierGlobal(t, fake, etcd.Endpoint(), i))
	}
	var locals []*daemon
	for i := range tierLocals {
		locals = append(locals, tierLocal(t, fake, etcd.Endpoint(), "", i))
	}
	waitRing(t, 3, locals...)
	s := &tierSender{locals: locals}
	median := wantMedian(tierLocals)

	for range 3 {
		s.sendInterval(t)
	}
	steady := len(s.sent)
	// A fourth global joins while the locals keep sending.
	globals = append(globals, tierGlobal(t, fake, etcd.Endpoint(), 3))
	for range 4 {
		s.sendInterval(t)
	}
	joined := len(s.sent)
	// One leaves with SIGTERM while they keep sending: it announces its
	// leave, imports until the last interval routed to it is flushed, and
	// exits 0.
	left := make(chan struct{})
	go func() {
		defer close(left)
		globals[1].terminate(t, syscall.SIGTERM)
	}()
	for range 5 {
		s.sendInterval(t)
	}
	<-left
	// The last interval sent is published two intervals later.
	time.Sleep(time.Until(s.sent[len(s.sent)-1].Add(3*tierInterval + 500*time.Millisecond)))

	p := globalSeries(fake.snapshot())
	var all []map[string]string
	for _, start := range s.sent {
		owners, _ := checkInterval(t, p, start, median, nil)
		all = append(all, owners)
	}
	noStrayPoints(t, p, s.sent)
	if hs := hostsOf(all[steady-1]); !slices.Equal(hs, []string{"global-0", "global-1", "global-2"}) {
		t.Errorf("before the join, series were published by %v, want the three first globals", hs)
	}
	if hs := hostsOf(all[joined-1]); !slices.Contains(hs, "global-3") {
		t.Errorf("after the join, series were published by %v, want global-3 among them", hs)
	}
	if hs := hostsOf(all[len(all)-1]); slices.Contains(hs, "global-1") || len(hs) != 3 {
		t.Errorf("after the leave, series were published by %v, want the three globals left", hs)
	}
}

// veneur-proxy in front of three globals in etcd, for locals that
// forward to one address, gives the same results as locals that shard
// themselves.
func TestTierEtcdProxy(t *testing.T) {
	etcd := etcdtest.Start(t)
	fake := newFakeDD(t)
	for i := range 3 {
		tierGlobal(t, fake, etcd.Endpoint(), i)
	}
	proxy := startProxy(t, config{
		"http_address":   freeTCPAddr(t),
		"interval":       tierInterval.String(),
		"etcd_endpoints": []string{etcd.Endpoint()},
	})
	waitRing(t, 3, proxy)
	var locals []*daemon
	for i := range tierLocals {
		locals = append(locals, tierLocal(t, fake, "", "http://"+proxy.httpAddr, i))
	}
	s := &tierSender{locals: locals}
	for range 4 {
		s.sendInterval(t)
	}
	time.Sleep(time.Until(s.sent[len(s.sent)-1].Add(3*tierInterval + 500*time.Millisecond)))
	p := globalSeries(fake.snapshot())
	median := wantMedian(tierLocals)
	for _, start := range s.sent {
		owners, _ := checkInterval(t, p, start, median, nil)
		if hs := hostsOf(owners); len(hs) != 3 {
			t.Errorf("interval %v published by %v, want all three globals", start.Unix(), hs)
		}
	}
	noStrayPoints(t, p, s.sent)
}

// startProxy starts veneur-proxy on cfg and waits until it is healthy
// (which it is once it has a global to send to).
func startProxy(t *testing.T, cfg config) *daemon {
	t.Helper()
	d, err := launch(t, nil, cfg, "", str(cfg["http_address"]), func(path string) *exec.Cmd {
		return exec.Command(proxyBinPath(), "-f", path)
	})
	if err != nil {
		t.Fatalf("starting veneur-proxy: %v", err)
	}
	t.Cleanup(func() {
		d.terminate(t, syscall.SIGTERM)
		if t.Failed() {
			d.logOutput(t)
		}
	})
	return d
}

// statsSink collects the DogStatsD counters daemons send to it.
type statsSink struct {
	conn *net.UDPConn
	mu   sync.Mutex
	sums map[string]int64
}

func newStatsSink(t *testing.T) *statsSink {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &statsSink{conn: conn, sums: map[string]int64{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				// name:value|c|#tags
				name, rest, ok := strings.Cut(line, ":")
				if !ok {
					continue
				}
				v, typ, _ := strings.Cut(rest, "|")
				if !strings.HasPrefix(typ, "c") {
					continue
				}
				var n int64
				fmt.Sscan(v, &n)
				s.mu.Lock()
				s.sums[name] += n
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return s
}

func (s *statsSink) sum(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sums[name]
}

// A global killed with SIGKILL loses at most its share of the interval it
// held; its lease expires, it leaves the ring, and what the locals could
// not deliver to it is sent to the new owners (forward.ring.resent_total);
// later intervals are complete, and nothing is published twice.
func TestTierEtcdKill(t *testing.T) {
	etcd := etcdtest.Start(t)
	fake := newFakeDD(t)
	stats := newStatsSink(t)
	var globals []*daemon
	for i := range 3 {
		globals = append(globals, tierGlobal(t, fake, etcd.Endpoint(), i))
	}
	var locals []*daemon
	for i := range tierLocals {
		locals = append(locals, startDaemon(t, fake, func(c config) {
			c["interval"] = tierInterval.String()
			c["hostname"] = fmt.Sprintf("local-%d", i)
			c["etcd_endpoints"] = []string{etcd.Endpoint()}
			c["stats_address"] = stats.conn.LocalAddr().String()
		}))
	}
	waitRing(t, 3, locals...)
	s := &tierSender{locals: locals}
	for range 3 {
		s.sendInterval(t)
	}
	killedAfter := len(s.sent)
	// The kill comes in the middle of the interval after the third, when
	// global-2 holds the third's forwards, taken at the boundary, and
	// nothing is on its way to it. Killed at a boundary (the sends can run
	// late on a busy machine), it would also take the forwards in flight
	// with it: the locals cannot tell whether it merged them before it
	// died, so they count them dropped rather than send them twice, and
	// more than the interval it held is lost.
	time.Sleep(time.Until(time.Now().Truncate(tierInterval).Add(tierInterval + tierInterval/2)))
	if err := globals[2].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-globals[2].done
	globals[2].stopOnce.Do(func() {}) // killed: no SIGTERM at cleanup
	for range 8 {
		s.sendInterval(t)
	}
	time.Sleep(time.Until(s.sent[len(s.sent)-1].Add(3*tierInterval + 500*time.Millisecond)))
	// The locals' last self-metrics come with their shutdown.
	for _, l := range locals {
		l.terminate(t, syscall.SIGTERM)
	}

	p := globalSeries(fake.snapshot())
	median := wantMedian(tierLocals)
	// The first interval was published before the kill (the third was
	// held by global-2 when it was killed): complete, and global-2 owned
	// a share.
	owners, _ := checkInterval(t, p, s.sent[killedAfter-3], median, nil)
	share := 0
	for name, h := range owners {
		if h == "global-2" && strings.HasPrefix(name, "tier.gc") {
			share++
		}
	}
	if share == 0 {
		t.Fatalf("global-2 owned no global counter before the kill: %v", owners)
	}
	// The last three intervals: complete, each series exactly once, from
	// the globals left.
	for _, start := range s.sent[len(s.sent)-3:] {
		ts := start.Add(2 * tierInterval).Unix()
		for j := range tierSeries {
			for _, name := range []string{fmt.Sprintf("tier.h%d.50percentile", j), fmt.Sprintf("tier.gc%d", j), fmt.Sprintf("tier.s%d", j)} {
				pts := p[name][ts]
				if len(pts) != 1 {
					t.Errorf("interval %v after the kill: %s published %d times (%v), want once", start.Unix(), name, len(pts), pts)
				} else if pts[0].host == "global-2" {
					t.Errorf("interval %v: %s published by the killed global", start.Unix(), name)
				}
			}
		}
	}
	// Nothing twice, anywhere.
	for name, byTS := range p {
		for ts, pts := range byTS {
			if len(pts) > 1 {
				t.Errorf("%s published at %d by %v", name, ts, pts)
			}
		}
	}
	// Global counters: what was published is what was sent, but for at
	// most global-2's share of one interval, lost with it.
	var published float64
	for j := range tierSeries {
		for _, pts := range p[fmt.Sprintf("tier.gc%d", j)] {
			published += pts[0].value
		}
	}
	sent := float64(len(s.sent) * tierSeries * tierLocals)
	lost := sent - published
	t.Logf("global counters: %v sent, %v published, %v lost (global-2's share of one interval: %d)", sent, published, lost, share*tierLocals)
	if lost < 0 || lost > float64(share*tierLocals) {
		t.Errorf("lost %v of the global counters sent, want between 0 and global-2's share of one interval, %d", lost, share*tierLocals)
	}
	if n := stats.sum("veneur.forward.ring.resent_total"); n == 0 {
		t.Errorf("veneur.forward.ring.resent_total = 0: nothing the killed global did not take was sent again")
	} else {
		t.Logf("veneur.forward.ring.resent_total = %d", n)
	}
}
