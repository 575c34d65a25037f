package listen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/ssf"
)

// received is what a reader handed over: what its ingester held at a
// Flush. Nothing an ingester gets shows here before the reader flushes it,
// so tests also check that readers flush.
type received struct {
	packets   int
	truncated int
	lines     []string // from Line, and from Packet split at newlines
	skips     []error
	checks    []samplers.ServiceCheck
	spans     []*ssf.SSFSpan
}

// sink records what the ingesters it makes are given, per ingester and in
// all. It is the listeners' only consumer in these tests: no workers.
type sink struct {
	t     testing.TB
	mu    sync.Mutex
	total received
	// per is how many packets and lines each ingester handed over, by
	// the order of the ingesters' creation.
	per []int
	// panicOn, when set, makes every ingester panic with it on its first
	// Packet or Line.
	panicOn any
}

func newSink(t testing.TB) *sink { return &sink{t: t} }

// newIngester is the NewIngester of the listeners under test.
func (s *sink) newIngester() Ingester {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.per = append(s.per, 0)
	return &fakeIngester{s: s, id: len(s.per) - 1}
}

// get returns a copy of what was handed over.
func (s *sink) get() received {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.total
	r.lines = append([]string(nil), r.lines...)
	r.skips = append([]error(nil), r.skips...)
	r.checks = append([]samplers.ServiceCheck(nil), r.checks...)
	r.spans = append([]*ssf.SSFSpan(nil), r.spans...)
	return r
}

// lineCount is how many lines were handed over, without copying them.
func (s *sink) lineCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.total.lines)
}

// busyIngesters is how many ingesters handed anything over.
func (s *sink) busyIngesters() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.per {
		if c > 0 {
			n++
		}
	}
	return n
}

func (s *sink) ingesters() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.per)
}

// fakeIngester keeps what it is given until Flush. It copies every byte
// slice, which is valid only during the call, and fails the test when
// used by two goroutines at once.
type fakeIngester struct {
	s       *sink
	id      int
	busy    atomic.Bool
	pending received
}

var _ Ingester = (*fakeIngester)(nil)

func (f *fakeIngester) enter() func() {
	if !f.busy.CompareAndSwap(false, true) {
		f.s.t.Errorf("ingester %d used by two goroutines at once", f.id)
	}
	return func() { f.busy.Store(false) }
}

func (f *fakeIngester) maybePanic() {
	if p := f.s.panicOn; p != nil {
		panic(p)
	}
}

func (f *fakeIngester) Packet(p []byte, truncated bool) {
	defer f.enter()()
	f.maybePanic()
	f.pending.packets++
	if truncated {
		f.pending.truncated++
	}
	for _, l := range strings.Split(string(p), "\n") {
		if l != "" {
			f.pending.lines = append(f.pending.lines, l)
		}
	}
}

func (f *fakeIngester) Line(line []byte) {
	defer f.enter()()
	f.maybePanic()
	f.pending.lines = append(f.pending.lines, string(line))
}

func (f *fakeIngester) Skip(err error) {
	defer f.enter()()
	f.pending.skips = append(f.pending.skips, err)
}

func (f *fakeIngester) Check(c samplers.ServiceCheck) {
	defer f.enter()()
	f.pending.checks = append(f.pending.checks, c)
}

func (f *fakeIngester) Span(sp *ssf.SSFSpan) {
	defer f.enter()()
	f.pending.spans = append(f.pending.spans, sp)
}

func (f *fakeIngester) Flush() {
	defer f.enter()()
	p := &f.pending
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &s.total
	t.packets += p.packets
	t.truncated += p.truncated
	t.lines = append(t.lines, p.lines...)
	t.skips = append(t.skips, p.skips...)
	t.checks = append(t.checks, p.checks...)
	t.spans = append(t.spans, p.spans...)
	s.per[f.id] += p.packets + len(p.lines)
	*p = received{}
}

// quietLog is a logger that writes nowhere.
func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// waitFor polls cond, with short sleeps, until it holds or a generous
// deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// sendUDP sends each datagram from a new socket, so from its own source
// port.
func sendUDP(t testing.TB, addr net.Addr, datagrams ...string) {
	t.Helper()
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, d := range datagrams {
		if _, err := c.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
}

// stop stops l, failing the test if it takes very long.
func stop(t testing.TB, l Listener) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// listenerKinds build each listener on a loopback address, and send it one
// line ("x:1|c") as it expects.
var listenerKinds = []struct {
	name string
	new  func(addr string, ni NewIngester, opts Options) (Listener, error)
	send func(t testing.TB, addr net.Addr)
}{
	{
		"udp",
		func(addr string, ni NewIngester, opts Options) (Listener, error) {
			return NewUDP(UDPConfig{Address: addr, Readers: 1, ReadBuffer: 1 << 20}, ni, opts)
		},
		func(t testing.TB, addr net.Addr) { sendUDP(t, addr, "x:1|c") },
	},
	{
		"tcp",
		func(addr string, ni NewIngester, opts Options) (Listener, error) {
			return NewTCP(TCPConfig{Address: addr, MaxLength: 4096}, ni, opts)
		},
		func(t testing.TB, addr net.Addr) {
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("x:1|c\n")); err != nil {
				t.Fatal(err)
			}
		},
	},
	{
		"ssf",
		func(addr string, ni NewIngester, opts Options) (Listener, error) {
			return NewSSF(SSFConfig{Address: addr, MaxLength: 4096}, ni, opts)
		},
		func(t testing.TB, addr net.Addr) {
			sendUDP(t, addr, string(marshalSpan(t, &ssf.SSFSpan{Metrics: []*ssf.SSFSample{{Metric: ssf.SSFSample_COUNTER, Name: "x", Value: 1}}})))
		},
	},
}

// Constructors bind nothing; Start binds, refuses a second Start, and
// Stop before Start or twice is harmless.
func TestLifecycle(t *testing.T) {
	for _, k := range listenerKinds {
		t.Run(k.name, func(t *testing.T) {
			snk := newSink(t)
			l, err := k.new("127.0.0.1:0", snk.newIngester, Options{Log: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			if a := l.Addr(); a != nil {
				t.Errorf("Addr() = %v before Start, want nil", a)
			}
			if n := snk.ingesters(); n != 0 {
				t.Errorf("%d ingesters made before Start", n)
			}
			stop(t, l) // before Start: nothing to stop
			if err := l.Start(); err != nil {
				t.Fatal(err)
			}
			if l.Addr() == nil {
				t.Fatal("Addr() = nil after Start")
			}
			if err := l.Start(); err == nil {
				t.Error("a second Start succeeded")
			}
			k.send(t, l.Addr())
			waitFor(t, "the line", func() bool { return len(snk.get().lines) == 1 })
			stop(t, l)
			stop(t, l)
			if got := snk.get().lines; len(got) != 1 || got[0] != "x:1|c" {
				t.Errorf("lines %q, want [x:1|c]", got)
			}
		})
	}
}

// A failed bind is reported with the config key and the address, and
// leaves the listener unstarted.
func TestStartErrors(t *testing.T) {
	for _, k := range listenerKinds {
		t.Run(k.name, func(t *testing.T) {
			l, err := k.new("127.0.0.1:99999", newSink(t).newIngester, Options{Log: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			err = l.Start()
			key := map[string]string{"udp": "udp_address", "tcp": "tcp_address", "ssf": "trace_address"}[k.name]
			if want := key + ` "127.0.0.1:99999": `; err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("Start() = %v, want an error starting %s", err, want)
			}
			if a := l.Addr(); a != nil {
				t.Errorf("Addr() = %v after a failed Start", a)
			}
			stop(t, l)
		})
	}
}

// Every reader goroutine defers Guard, which can recover a panic of the
// ingester; the listener's Stop still returns.
func TestGuard(t *testing.T) {
	for _, k := range listenerKinds {
		t.Run(k.name, func(t *testing.T) {
			snk := newSink(t)
			snk.panicOn = errors.New("boom")
			recovered := make(chan any, 4)
			guard := func() {
				if p := recover(); p != nil {
					recovered <- p
				}
			}
			l, err := k.new("127.0.0.1:0", snk.newIngester, Options{Log: quietLog(), Guard: guard})
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Start(); err != nil {
				t.Fatal(err)
			}
			k.send(t, l.Addr())
			select {
			case p := <-recovered:
				if fmt.Sprint(p) != "boom" {
					t.Errorf("Guard recovered %v, want boom", p)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Guard recovered no panic")
			}
			stop(t, l)
		})
	}
}

func TestConstructorsRefuseBadConfig(t *testing.T) {
	ni := newSink(t).newIngester
	for _, c := range []struct {
		name string
		err  error
	}{
		{"udp no address", second(NewUDP(UDPConfig{Readers: 1}, ni, Options{}))},
		{"udp no readers", second(NewUDP(UDPConfig{Address: "127.0.0.1:0"}, ni, Options{}))},
		{"udp no length", second(NewUDP(UDPConfig{Address: "127.0.0.1:0", Readers: 1, MaxDatagram: -1}, ni, Options{}))},
		{"udp no ingester", second(NewUDP(UDPConfig{Address: "127.0.0.1:0", Readers: 1}, nil, Options{}))},
		{"tcp no address", second(NewTCP(TCPConfig{MaxLength: 1}, ni, Options{}))},
		{"tcp no length", second(NewTCP(TCPConfig{Address: "127.0.0.1:0"}, ni, Options{}))},
		{"tcp no ingester", second(NewTCP(TCPConfig{Address: "127.0.0.1:0", MaxLength: 1}, nil, Options{}))},
		{"ssf no address", second(NewSSF(SSFConfig{MaxLength: 1}, ni, Options{}))},
		{"ssf no length", second(NewSSF(SSFConfig{Address: "127.0.0.1:0"}, ni, Options{}))},
		{"ssf no ingester", second(NewSSF(SSFConfig{Address: "127.0.0.1:0", MaxLength: 1}, nil, Options{}))},
	} {
		if c.err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}

func second[T any](_ T, err error) error { return err }
