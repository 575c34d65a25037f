package forward

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/veneur/veneur/internal/etcdtest"
	"github.com/veneur/veneur/internal/statstest"
)

func TestEtcdConfigErrors(t *testing.T) {
	good := EtcdConfig{Endpoints: []string{"http://127.0.0.1:2379"}, Interval: 10 * time.Second}
	for _, c := range []struct {
		name      string
		edit      func(*EtcdConfig)
		advertise string
		ttl       time.Duration
		want      []string // in the error
	}{
		{"no endpoints", func(c *EtcdConfig) { c.Endpoints = nil }, "", 0, []string{"etcd_endpoints", "http://127.0.0.1:2379"}},
		{"endpoint without scheme", func(c *EtcdConfig) { c.Endpoints = []string{"http://a:2379", "127.0.0.1:2379"} }, "", 0, []string{"etcd_endpoints[1]", "http://127.0.0.1:2379"}},
		{"endpoint of another scheme", func(c *EtcdConfig) { c.Endpoints = []string{"unix:///run/etcd.sock"} }, "", 0, []string{"etcd_endpoints[0]"}},
		{"prefix without a trailing slash", func(c *EtcdConfig) { c.Prefix = "/veneur/globals" }, "", 0, []string{"etcd_prefix", `"/"`, DefaultEtcdPrefix}},
		{"relative prefix", func(c *EtcdConfig) { c.Prefix = "veneur/" }, "", 0, []string{"etcd_prefix"}},
		{"no interval", func(c *EtcdConfig) { c.Interval = 0 }, "", 0, []string{"interval", "whole number of seconds"}},
		{"sub-second interval", func(c *EtcdConfig) { c.Interval = 1500 * time.Millisecond }, "", 0, []string{"interval 1.5s", "such as 10s"}},
		{"advertise without scheme", nil, "10.0.0.1:8127", time.Second, []string{"etcd_advertise_address", "http://10.0.0.1:8127"}},
		{"advertise empty", nil, "", time.Second, []string{"etcd_advertise_address"}},
		{"advertise of another scheme", nil, "udp://10.0.0.1:8126", time.Second, []string{"etcd_advertise_address"}},
		{"ttl too short", nil, "http://10.0.0.1:8127", 500 * time.Millisecond, []string{"etcd_lease_ttl 500ms", "at least 1s"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := good
			cfg.Endpoints = slices.Clone(good.Endpoints)
			if c.edit != nil {
				c.edit(&cfg)
			}
			var err error
			if c.ttl == 0 {
				_, err = WatchEtcd(context.Background(), cfg)
			} else {
				_, err = RegisterEtcd(context.Background(), cfg, c.advertise, c.ttl)
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	// The good config is good (it fails only on reaching etcd, which does
	// not stop a watcher).
	if _, err := good.withDefaults(); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeEtcdValue(t *testing.T) {
	p := DefaultEtcdPrefix
	key := []byte(etcdKey(p, gA))
	if string(key) != "/veneur/globals/http:%2F%2Fglobal-a:8127" {
		t.Fatalf("key of %s = %s", gA, key)
	}
	v, err := decodeEtcdValue(p, key, []byte(`{"address":"http://global-a:8127","from":100,"until":0,"later":"ignored"}`))
	if err != nil || v != (etcdValue{Address: gA, From: 100}) {
		t.Fatalf("decode = %+v, %v", v, err)
	}
	for _, bad := range []struct{ key, value string }{
		{string(key), `not json`},
		{string(key), `{"address":"http://global-b:8127","from":100}`}, // under another's key
		{string(key), `{"address":"http://global-a:8127","from":0}`},
		{string(key), `{"address":"http://global-a:8127","from":10,"until":-1}`},
		{p + "x", `{"address":"x","from":10}`},
	} {
		if _, err := decodeEtcdValue(p, []byte(bad.key), []byte(bad.value)); err == nil || !strings.Contains(err.Error(), bad.key) {
			t.Errorf("decode %s = %s: error %v, want one naming the key", bad.key, bad.value, err)
		}
	}
}

// fakeClock is a clock that tests set.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.Set(t)
	return c
}

func (c *fakeClock) Now() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// testEtcdConfig is a config for the etcd of s, with the 10s interval of
// the schedule tests and clock c (nil: the real one).
func testEtcdConfig(t *testing.T, s *etcdtest.Server, c *fakeClock) (EtcdConfig, *logtest.Hook) {
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	cfg := EtcdConfig{Endpoints: []string{s.Endpoint()}, Interval: iv, DialTimeout: 2 * time.Second, Log: log}
	if c != nil {
		cfg.Now = c.Now
	}
	return cfg, hook
}

// rawClient is a client of the test's own, to look at and change etcd
// behind the backs of the clients under test.
func rawClient(t *testing.T, s *etcdtest.Server) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint()}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// waitFor polls cond until it holds, or fails the test after 15s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ringOf is the members and epoch (relative to T) of m's ring for T+off.
func ringOf(m Membership, off int64) string {
	r, e := m.RingFor(time.Unix(T+off, 0))
	return fmt.Sprintf("%v@%d", r.Members(), e-T)
}

func mustWatch(t *testing.T, cfg EtcdConfig) *EtcdMembership {
	t.Helper()
	m, err := WatchEtcd(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func mustRegister(t *testing.T, cfg EtcdConfig, address string, ttl time.Duration) *Registration {
	t.Helper()
	r, err := RegisterEtcd(context.Background(), cfg, address, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

// caughtUp waits until m has seen every change made to etcd so far.
func caughtUp(t *testing.T, m *EtcdMembership, raw *clientv3.Client) {
	t.Helper()
	resp, err := raw.Get(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, fmt.Sprintf("the watcher at revision %d", resp.Header.Revision), func() bool {
		return m.Snapshot(time.Unix(T, 0)).Revision >= resp.Header.Revision
	})
}

// TestEtcdRegisterWatch runs a tier through a real etcd with a fake
// clock: two globals register, one leaves and closes; two watchers, one
// started late, agree on the ring of every interval.
func TestEtcdRegisterWatch(t *testing.T) {
	srv := etcdtest.Start(t)
	raw := rawClient(t, srv)
	clock := newFakeClock(at(3))
	cfg, hook := testEtcdConfig(t, srv, clock)

	w1 := mustWatch(t, cfg)
	if s := w1.Snapshot(at(3)); !s.Connected || len(s.Members) != 0 || s.Source != "etcd" || s.Revision == 0 {
		t.Fatalf("snapshot of an empty prefix: %+v", s)
	}

	ra := mustRegister(t, cfg, gA, 5*time.Second)
	if got := ra.From().Unix(); got != T+20 {
		t.Fatalf("registered at T+3: From = T+%d, want T+20", got-T)
	}
	resp, err := raw.Get(context.Background(), etcdKey(DefaultEtcdPrefix, gA))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the key of A: %v, %v", resp, err)
	}
	if kv := resp.Kvs[0]; string(kv.Value) != `{"address":"http://global-a:8127","from":1700000020,"until":0}` || kv.Lease == 0 {
		t.Fatalf("the key of A: value %s, lease %d", kv.Value, kv.Lease)
	}
	waitFor(t, "A in the ring of T+20", func() bool { return ringOf(w1, 20) == fmt.Sprintf("[%s]@20", gA) })
	if got := ringOf(w1, 10); got != "[]@-1700000000" {
		t.Fatalf("ring of T+10 = %s, want empty since ever", got)
	}
	if s := w1.Snapshot(at(3)); len(s.Pending) != 1 || s.Pending[0] != (PendingChange{Address: gA, Join: true, At: time.Unix(T+20, 0)}) {
		t.Fatalf("pending at T+3: %+v", s.Pending)
	}

	clock.Set(at(25))
	rb := mustRegister(t, cfg, gB, 5*time.Second)
	if got := rb.From().Unix(); got != T+40 {
		t.Fatalf("registered at T+25: From = T+%d, want T+40", got-T)
	}
	waitFor(t, "B in the ring of T+40", func() bool { return ringOf(w1, 40) == fmt.Sprintf("[%s %s]@40", gA, gB) })
	w2 := mustWatch(t, cfg)

	clock.Set(at(44))
	until, err := ra.Leave(context.Background())
	if err != nil || until.Unix() != T+60 {
		t.Fatalf("Leave at T+44 = T+%d, %v; want T+60", until.Unix()-T, err)
	}
	if again, err := ra.Leave(context.Background()); err != nil || !again.Equal(until) {
		t.Fatalf("a second Leave = %v, %v; want the first until", again, err)
	}
	waitFor(t, "A out of the ring of T+60", func() bool { return ringOf(w1, 60) == fmt.Sprintf("[%s]@60", gB) })
	if got := ringOf(w1, 50); got != fmt.Sprintf("[%s %s]@40", gA, gB) {
		t.Fatalf("ring of T+50 = %s: A left early", got)
	}
	if s := w1.Snapshot(at(44)); len(s.Pending) != 1 || s.Pending[0] != (PendingChange{Address: gA, At: time.Unix(T+60, 0)}) ||
		s.Epoch != T+40 || len(s.Members) != 2 || !s.Start.Equal(time.Unix(T+40, 0)) {
		t.Fatalf("snapshot at T+44: %+v", s)
	}

	// A has flushed its last interval: it closes, which revokes its lease.
	clock.Set(at(71))
	if err := ra.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if resp, err := raw.Get(context.Background(), etcdKey(DefaultEtcdPrefix, gA)); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("A's key after Close: %v, %v", resp, err)
	}
	caughtUp(t, w1, raw)
	caughtUp(t, w2, raw)
	for off := int64(20); off <= 100; off += 10 {
		a, b := ringOf(w1, off), ringOf(w2, off)
		if a != b {
			t.Errorf("ring of T+%d: %s for the first watcher, %s for the one started at T+25", off, a, b)
		}
	}
	if got := ringOf(w1, 50); got != fmt.Sprintf("[%s %s]@40", gA, gB) {
		t.Fatalf("after A's lease was revoked, ring of T+50 = %s", got)
	}

	stats := &statstest.Recorder{}
	w1.Report(stats)
	if g, _ := stats.GaugeValue("forward.ring.members"); g != 1 {
		t.Errorf("forward.ring.members = %v at T+71, want 1", g)
	}
	if n := stats.Sum("forward.ring.changes_total"); n != 3 {
		t.Errorf("forward.ring.changes_total = %d, want 3 (two joins, a leave)", n)
	}
	if n := stats.Sum("forward.etcd.error_total"); n != 0 {
		t.Errorf("forward.etcd.error_total = %d", n)
	}
	w1.Report(stats)
	if n := stats.Sum("forward.ring.changes_total"); n != 3 {
		t.Errorf("a second Report counted the changes again: %d", n)
	}
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel {
			t.Errorf("logged at %s: %s %v", e.Level, e.Message, e.Data)
		}
	}
}

// TestEtcdLeaseLost: a global whose lease is lost (here revoked behind its
// back, as etcd does when it expires) registers again with a new lease, and
// stays in the ring without a gap when that happens within the interval.
func TestEtcdLeaseLost(t *testing.T) {
	srv := etcdtest.Start(t)
	raw := rawClient(t, srv)
	clock := newFakeClock(at(3))
	cfg, hook := testEtcdConfig(t, srv, clock)
	w := mustWatch(t, cfg)
	ra := mustRegister(t, cfg, gA, 5*time.Second)
	ra.mu.Lock()
	lease := ra.lease
	ra.mu.Unlock()

	clock.Set(at(33))
	if _, err := raw.Revoke(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A registered again", func() bool {
		ra.mu.Lock()
		defer ra.mu.Unlock()
		return ra.lease != lease
	})
	if got := ra.From().Unix(); got != T+50 {
		t.Fatalf("registered again at T+33: From = T+%d, want T+50", got-T)
	}
	caughtUp(t, w, raw)
	for off := int64(20); off <= 80; off += 10 {
		if got := ringOf(w, off); got != fmt.Sprintf("[%s]@20", gA) {
			t.Errorf("ring of T+%d = %s: the lost lease made a gap", off, got)
		}
	}
	stats := &statstest.Recorder{}
	ra.Report(stats)
	if n := stats.Sum("forward.etcd.error_total", "cause:lease_lost"); n != 1 {
		t.Errorf("forward.etcd.error_total{cause:lease_lost} = %d, want 1", n)
	}
	warned := 0
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "lease was lost") {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("%d warnings of the lost lease, want 1", warned)
	}
}

// TestEtcdRestartWithinTTL: a global that dies and comes back before its
// lease expires finds its key and keeps its From: nothing moves.
func TestEtcdRestartWithinTTL(t *testing.T) {
	srv := etcdtest.Start(t)
	clock := newFakeClock(at(3))
	cfg, _ := testEtcdConfig(t, srv, clock)
	first, err := RegisterEtcd(context.Background(), cfg, gA, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Dies: no keepalive any more, no revoke.
	first.cancel()
	<-first.done
	first.cli.Close()

	clock.Set(at(45))
	second := mustRegister(t, cfg, gA, 30*time.Second)
	if got := second.From().Unix(); got != T+20 {
		t.Fatalf("restarted at T+45 with its key still there: From = T+%d, want T+20", got-T)
	}
}

// TestEtcdCompacted: a watch whose revision was compacted away lists the
// prefix again, and counts it; a value that is not a registration is
// counted and skipped.
func TestEtcdCompacted(t *testing.T) {
	srv := etcdtest.Start(t)
	raw := rawClient(t, srv)
	clock := newFakeClock(at(3))
	cfg, _ := testEtcdConfig(t, srv, clock)
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := cfg.newClient()
	if err != nil {
		t.Fatal(err)
	}
	m := &EtcdMembership{cfg: cfg, cli: cli, errs: newEtcdErrors(), sched: newSchedule(cfg.Interval)}
	t.Cleanup(func() { m.Close() })
	if err := m.list(context.Background()); err != nil {
		t.Fatal(err)
	}
	old := m.rev
	// While the watcher is not watching: two registrations, a value that is
	// not one, and a compaction of all that history.
	ctx := context.Background()
	for _, a := range []string{gA, gB} {
		b, _ := json.Marshal(etcdValue{Address: a, From: T + 20})
		if _, err := raw.Put(ctx, etcdKey(DefaultEtcdPrefix, a), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := raw.Put(ctx, DefaultEtcdPrefix+"garbage", "{"); err != nil {
		t.Fatal(err)
	}
	resp, err := raw.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	m.start() // watches from old+1, which is gone
	waitFor(t, "A and B after the re-list", func() bool { return ringOf(m, 20) == fmt.Sprintf("[%s %s]@20", gA, gB) })
	if m.Snapshot(at(3)).Revision <= old {
		t.Fatal("the revision did not move on")
	}
	stats := &statstest.Recorder{}
	m.Report(stats)
	if n := stats.Sum("forward.etcd.error_total", "cause:compacted"); n != 1 {
		t.Errorf("forward.etcd.error_total{cause:compacted} = %d, want 1", n)
	}
	if n := stats.Sum("forward.etcd.error_total", "cause:decode"); n != 1 {
		t.Errorf("forward.etcd.error_total{cause:decode} = %d, want 1", n)
	}
	// The watch goes on from the fresh revision.
	b, _ := json.Marshal(etcdValue{Address: gC, From: T + 30})
	if _, err := raw.Put(ctx, etcdKey(DefaultEtcdPrefix, gC), string(b)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "C after the re-list", func() bool { return ringOf(m, 30) == fmt.Sprintf("[%s %s %s]@30", gC, gA, gB) })
}

// TestEtcdOutage: when etcd goes away the watcher keeps its ring, logs the
// outage once and counts each failed probe; when etcd is back it logs
// that, and sees changes again. Real time, with a 1s interval.
func TestEtcdOutage(t *testing.T) {
	srv := etcdtest.Start(t)
	cfg, hook := testEtcdConfig(t, srv, nil)
	cfg.Interval = time.Second
	cfg.DialTimeout = 500 * time.Millisecond
	mustRegister(t, cfg, gA, 30*time.Second)
	w := mustWatch(t, cfg)
	members := func() []string { return w.Snapshot(time.Now()).Members }
	waitFor(t, "A in the ring", func() bool { return slices.Equal(members(), []string{gA}) })

	srv.Kill()
	stats := &statstest.Recorder{}
	waitFor(t, "two failed probes", func() bool {
		w.Report(stats)
		return stats.Sum("forward.etcd.error_total", "cause:unreachable") >= 2
	})
	if s := w.Snapshot(time.Now()); s.Connected || !slices.Equal(s.Members, []string{gA}) {
		t.Fatalf("during the outage: %+v; want the last ring, not connected", s)
	}
	srv.Restart()
	waitFor(t, "connected again", func() bool { return w.Snapshot(time.Now()).Connected })
	mustRegister(t, cfg, gB, 30*time.Second)
	waitFor(t, "B in the ring", func() bool { return slices.Equal(members(), []string{gA, gB}) })

	var down, up int
	for _, e := range hook.AllEntries() {
		switch {
		case strings.Contains(e.Message, "does not answer"):
			down++
		case strings.Contains(e.Message, "answers again"):
			up++
		}
	}
	if down != 1 || up != 1 {
		t.Errorf("logged the outage %d times and its end %d times; want once each", down, up)
	}
}

// TestEtcdStartWithoutEtcd: a watcher starts when etcd does not answer,
// empty and not connected, and fills when etcd comes.
func TestEtcdStartWithoutEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	clock := newFakeClock(at(3))
	cfg, _ := testEtcdConfig(t, srv, clock)
	mustRegister(t, cfg, gA, 30*time.Second)
	srv.Kill()
	cfg.DialTimeout = 300 * time.Millisecond
	w := mustWatch(t, cfg)
	if s := w.Snapshot(at(30)); s.Connected || len(s.Members) != 0 {
		t.Fatalf("started without etcd: %+v", s)
	}
	srv.Restart()
	waitFor(t, "A after etcd came", func() bool { return ringOf(w, 20) == fmt.Sprintf("[%s]@20", gA) })
	if !w.Snapshot(at(30)).Connected {
		t.Fatal("not connected after the list")
	}
}

// etcdHelperEnv makes the test binary a registered global (see
// TestEtcdHelperProcess) so that a test can SIGKILL it.
const etcdHelperEnv = "VENEUR_FORWARD_ETCD_HELPER"

// TestEtcdHelperProcess is not a test: run by TestEtcdCrash with
// etcdHelperEnv=<endpoint>, it registers gC with a 1s lease, prints
// "from <unix s>", and waits to be killed (it exits by itself after two
// minutes, should its parent be gone).
func TestEtcdHelperProcess(t *testing.T) {
	endpoint := os.Getenv(etcdHelperEnv)
	if endpoint == "" {
		t.Skip("a helper process of TestEtcdCrash")
	}
	cfg := EtcdConfig{Endpoints: []string{endpoint}, Interval: iv}
	r, err := RegisterEtcd(context.Background(), cfg, gC, time.Second)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("from", r.From().Unix())
	time.Sleep(2 * time.Minute)
	os.Exit(3)
}

// TestEtcdCrash: a global process killed with SIGKILL leaves the ring at
// the boundary after the next full interval once its lease expires; a
// watcher that sees the expiry anywhere in an interval agrees.
func TestEtcdCrash(t *testing.T) {
	srv := etcdtest.Start(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestEtcdHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), etcdHelperEnv+"="+srv.Endpoint())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "from ") {
		t.Fatalf("helper said %q, %v", line, err)
	}
	from, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "from ")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	// Two watchers whose clocks say from+21 and from+29.5: both see the
	// expiry within the interval [from+20, from+30).
	var ws []*EtcdMembership
	for _, s := range []time.Duration{21 * time.Second, 29500 * time.Millisecond} {
		clock := newFakeClock(time.Unix(from, 0).Add(s))
		cfg, _ := testEtcdConfig(t, srv, clock)
		ws = append(ws, mustWatch(t, cfg))
	}
	ring := func(w *EtcdMembership, off int64) []string {
		r, _ := w.RingFor(time.Unix(from+off, 0))
		return r.Members()
	}
	for _, w := range ws {
		if got := ring(w, 20); !slices.Equal(got, []string{gC}) {
			t.Fatalf("ring of from+20 = %q before the kill", got)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	for _, w := range ws {
		waitFor(t, "the lease to expire", func() bool { return len(ring(w, 40)) == 0 })
		if got := ring(w, 30); !slices.Equal(got, []string{gC}) {
			t.Errorf("ring of from+30 = %q: the crashed global left before the boundary after the next full interval", got)
		}
	}
	// The key is gone from etcd.
	raw := rawClient(t, srv)
	resp, err := raw.Get(context.Background(), DefaultEtcdPrefix, clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("keys after the lease expired: %v, %v", resp, err)
	}
	if u, _ := url.PathUnescape(strings.TrimPrefix(etcdKey(DefaultEtcdPrefix, gC), DefaultEtcdPrefix)); u != gC {
		t.Fatalf("the key of %s does not unescape to it: %s", gC, u)
	}
}
