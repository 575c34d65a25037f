package listen

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/internal/yield"
)

func newUDP(t *testing.T, cfg UDPConfig, snk *sink) *UDP {
	t.Helper()
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	if cfg.Readers == 0 {
		cfg.Readers = 1
	}
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = 1 << 20
	}
	u, err := NewUDP(cfg, snk.newIngester, Options{Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Datagrams reach the ingester whole, lines and all, in both reader modes;
// one longer than MaxDatagram arrives cut there and marked truncated; Stop
// hands over everything sent before it.
func TestUDPLines(t *testing.T) {
	for _, mode := range readModes {
		t.Run(mode.name, func(t *testing.T) {
			defer useReadMode(mode)()
			snk := newSink(t)
			u := newUDP(t, UDPConfig{MaxDatagram: 32}, snk)
			if u.singleP != mode.singleP {
				t.Fatalf("single-P mode %v with GOMAXPROCS %d", u.singleP, runtime.GOMAXPROCS(0))
			}
			if err := u.Start(); err != nil {
				t.Fatal(err)
			}
			sendUDP(t, u.Addr(), "a:1|c\nb:2|g", "c:3|h\n", strings.Repeat("x", 40))
			waitFor(t, "3 datagrams", func() bool { return snk.get().packets == 3 })
			// Sent just before Stop: the drain must take it.
			sendUDP(t, u.Addr(), "d:4|c")
			if !readerDrains {
				waitFor(t, "the last datagram", func() bool { return snk.get().packets == 4 })
			}
			stop(t, u)
			got := snk.get()
			if want := "a:1|c b:2|g c:3|h " + strings.Repeat("x", 32) + " d:4|c"; strings.Join(got.lines, " ") != want {
				t.Errorf("lines %q, want %q", got.lines, want)
			}
			if got.packets != 4 {
				t.Errorf("%d datagrams, want 4", got.packets)
			}
			if wantTrunc := map[bool]int{true: 1, false: 0}[truncationReported]; got.truncated != wantTrunc {
				t.Errorf("%d datagrams marked truncated, want %d", got.truncated, wantTrunc)
			}
			if mode.singleP && runtime.GOMAXPROCS(0) != 1 {
				t.Errorf("GOMAXPROCS %d in single-P mode, want 1 left alone", runtime.GOMAXPROCS(0))
			}
			rec := &statstest.Recorder{}
			u.Report(rec)
			if n := rec.Sum("packet.read_error_total"); n != 0 {
				t.Errorf("Report sent %d read errors, want none", n)
			}
		})
	}
}

// Three readers share the port with SO_REUSEPORT, each with its own
// ingester, and GOMAXPROCS makes room for them unless the environment set
// it.
func TestUDPMultipleReaders(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("num_readers > 1 needs SO_REUSEPORT, supported on Linux only")
	}
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)
	snk := newSink(t)
	u := newUDP(t, UDPConfig{Readers: 3}, snk)
	if err := u.Start(); err != nil {
		t.Fatal(err)
	}
	if len(u.socks) != 3 || snk.ingesters() != 3 {
		t.Fatalf("%d sockets and %d ingesters, want 3 and 3", len(u.socks), snk.ingesters())
	}
	port := u.Addr().(*net.UDPAddr).Port
	for i, s := range u.socks {
		if p := s.LocalAddr().(*net.UDPAddr).Port; p != port {
			t.Errorf("socket %d on port %d, want %d", i, p, port)
		}
	}
	want := max(before, 4)
	if u.singleP || os.Getenv("GOMAXPROCS") != "" {
		want = before
	}
	if got := runtime.GOMAXPROCS(0); got != want {
		t.Errorf("GOMAXPROCS %d with 3 readers (was %d), want %d", got, before, want)
	}
	// Senders from different source ports spread over the sockets.
	for i := 0; i < 30; i++ {
		sendUDP(t, u.Addr(), "n:1|c")
	}
	stop(t, u)
	if got := snk.get(); got.packets != 30 || len(got.lines) != 30 {
		t.Errorf("%d datagrams and %d lines, want 30 and 30", got.packets, len(got.lines))
	}
	if n := snk.busyIngesters(); n < 2 {
		t.Errorf("30 source ports all went to %d reader(s)", n)
	}
}

// readMode is a mode of the UDP readers: several Ps, or single P.
type readMode struct {
	name    string
	singleP bool
}

// readModes are both.
var readModes = []readMode{{"multiP", false}, {"singleP", true}}

// A reader told to stop processes every datagram already queued in the
// kernel, an empty one included, then returns.
func TestReaderDrainsQueuedDatagrams(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only the Linux reader drains the kernel's queue")
	}
	for _, mode := range readModes {
		t.Run(mode.name, func(t *testing.T) {
			sock, _, err := listenUDP("127.0.0.1:0", false, 8<<20, mode.singleP)
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			const n = 3000
			d := make([]string, n)
			for i := range d {
				d[i] = "q:1|c\nr:2|c"
			}
			d[n/2] = "" // an empty datagram mid-queue ends nothing
			sendUDP(t, sock.LocalAddr(), d...)
			sock.wake()
			snk := newSink(t)
			var readErrs atomic.Uint64
			if err := readUDP(sock, snk.newIngester(), 4097, func() bool { return true }, &readErrs, new(readerGaps)); err != nil {
				t.Fatal(err)
			}
			if got := snk.get(); got.packets != n || len(got.lines) != 2*(n-1) {
				t.Errorf("%d datagrams and %d lines processed, want %d and %d", got.packets, len(got.lines), n, 2*(n-1))
			}
			if e := readErrs.Load(); e != 0 {
				t.Errorf("%d read errors", e)
			}
		})
	}
}

// wake ends an idle reader's wait before any receive timeout would, and a
// reader that went idle after traffic wakes for the next datagram.
func TestReaderWakes(t *testing.T) {
	for _, mode := range readModes {
		t.Run(mode.name, func(t *testing.T) {
			sock, _, err := listenUDP("127.0.0.1:0", false, 1<<20, mode.singleP)
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			snk := newSink(t)
			var stopping atomic.Bool
			var readErrs atomic.Uint64
			done := make(chan error, 1)
			go func() { done <- readUDP(sock, snk.newIngester(), 1024, stopping.Load, &readErrs, new(readerGaps)) }()
			lines := func() int { return len(snk.get().lines) }
			sendUDP(t, sock.LocalAddr(), "a:1|c")
			waitFor(t, "the first line", func() bool { return lines() >= 1 })
			// Once the reader has gone idle, one more datagram must
			// still arrive.
			waitFor(t, "the reader to go idle", sock.isIdle)
			sendUDP(t, sock.LocalAddr(), "b:1|c")
			waitFor(t, "the line sent to an idle reader", func() bool { return lines() >= 2 })
			waitFor(t, "the reader to go idle again", sock.isIdle)
			stopping.Store(true)
			sock.wake()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(wakeWithin):
				t.Fatal("the reader did not return after wake")
			}
			if n := lines(); n != 2 {
				t.Errorf("%d lines, want 2", n)
			}
		})
	}
}

// Readers serve IPv6 addresses as well.
func TestUDPIPv6(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		c.Close()
	}
	snk := newSink(t)
	u := newUDP(t, UDPConfig{Address: "[::1]:0"}, snk)
	if err := u.Start(); err != nil {
		t.Fatal(err)
	}
	if ip := u.Addr().(*net.UDPAddr).IP; !ip.Equal(net.IPv6loopback) {
		t.Errorf("bound to %v, want ::1", ip)
	}
	sendUDP(t, u.Addr(), "six:1|c")
	stop(t, u)
	if got := snk.get().lines; len(got) != 1 || got[0] != "six:1|c" {
		t.Errorf("lines %q, want [six:1|c]", got)
	}
}

// GOMAXPROCS is raised to readers+1 when the operator did not set it, and
// left alone with a warning naming the wanted value when the environment
// set it.
func TestReserveReaderProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	for _, c := range []struct {
		name          string
		readers       int
		env           string
		before, after int
		level         string // of the one log entry; "" for none
	}{
		{"enough Ps", 1, "", 2, 2, ""},
		{"enough Ps, env set", 1, "2", 2, 2, ""},
		{"raised", 3, "", 2, 4, "info"},
		{"env set", 3, "2", 2, 2, "warning"},
		{"env set to 1", 3, "1", 1, 1, "warning"},
	} {
		t.Run(c.name, func(t *testing.T) {
			runtime.GOMAXPROCS(c.before)
			log, hook := logtest.NewNullLogger()
			b, a := reserveReaderProcs(log, c.readers, c.env)
			if b != c.before || a != c.after || runtime.GOMAXPROCS(0) != c.after {
				t.Errorf("%d readers, GOMAXPROCS %d, env %q: %d -> %d (now %d), want %d -> %d",
					c.readers, c.before, c.env, b, a, runtime.GOMAXPROCS(0), c.before, c.after)
			}
			entries := hook.AllEntries()
			if c.level == "" {
				if len(entries) != 0 {
					t.Errorf("logged %q, want nothing", entries[0].Message)
				}
				return
			}
			if len(entries) != 1 || entries[0].Level.String() != c.level {
				t.Fatalf("logged %d entries (%v), want one at %v", len(entries), entries, c.level)
			}
			if c.level == "warning" && entries[0].Data["wanted"] != c.readers+1 {
				t.Errorf("warning says %v Ps are wanted, want %d", entries[0].Data["wanted"], c.readers+1)
			}
		})
	}
}

// A single-P reader's receive rounds are turns (yield.Turn), which end the
// slice that the flush's goroutines share; a reader with a P of its own
// takes none, and the flush goes on yielding to the workers.
func TestSinglePReaderTakesTurns(t *testing.T) {
	for _, mode := range readModes {
		t.Run(mode.name, func(t *testing.T) {
			defer useReadMode(mode)()
			snk := newSink(t)
			u := newUDP(t, UDPConfig{Address: "127.0.0.1:0", Readers: 1, ReadBuffer: 1 << 20}, snk)
			if u.singleP != mode.singleP {
				t.Fatalf("single-P mode %v with GOMAXPROCS %d", u.singleP, runtime.GOMAXPROCS(0))
			}
			before := yield.Turns()
			if err := u.Start(); err != nil {
				t.Fatal(err)
			}
			defer stop(t, u)
			sendUDP(t, u.Addr(), "a:1|c", "b:2|c")
			waitFor(t, "both datagrams", func() bool { return len(snk.get().lines) == 2 })
			turns := yield.Turns() - before
			if mode.singleP && turns == 0 {
				t.Error("the single-P reader took no turn while it read two datagrams")
			}
			if !mode.singleP && turns != 0 {
				t.Errorf("a reader with a P of its own took %d turns, want none", turns)
			}
		})
	}
}

// While work that shares its slice with the readers waits for the P
// (yield.Pending), a single-P reader receives without waiting, so that it
// never holds the P idle in a blocking receive; otherwise it waits in
// the receive call.
func TestSinglePReaderProbesWhileWorkWaits(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	snk := newSink(t)
	u := newUDP(t, UDPConfig{Address: "127.0.0.1:0", Readers: 1, ReadBuffer: 1 << 20}, snk)
	if !u.singleP {
		t.Fatal("not in single-P mode with GOMAXPROCS 1")
	}
	if err := u.Start(); err != nil {
		t.Fatal(err)
	}
	defer stop(t, u)

	// Work that yields in slices runs until the reader has every line.
	const n = 200
	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var y yield.Slicer
		x := 1.0
		for !done.Load() {
			for range 1000 {
				x = x*1.0000001 + 1e-9
			}
			y.Tick()
		}
		_ = x
	}()
	waitFor(t, "the work to yield", yield.Pending)
	before := probes.Load()
	sent := 0
	waitFor(t, "a receive without waiting while work waits", func() bool {
		// n more lines once the last n are in: at most n datagrams wait
		// in the socket's buffer, however slowly the reader runs.
		if snk.lineCount() == sent {
			for range n {
				sendUDP(t, u.Addr(), fmt.Sprintf("p%d:1|c", sent))
				sent++
			}
		}
		return probes.Load() != before
	})
	waitFor(t, "every line", func() bool { return len(snk.get().lines) == sent })
	done.Store(true)
	wg.Wait()

	// Without such work the reader waits in its receive calls.
	waitFor(t, "the work to be over", func() bool { return !yield.Pending() })
	before = probes.Load()
	for i := range n {
		sendUDP(t, u.Addr(), fmt.Sprintf("q%d:1|c", i))
	}
	waitFor(t, "every line", func() bool { return len(snk.get().lines) == sent+n })
	if d := probes.Load() - before; d != 0 {
		t.Errorf("%d receives without waiting with no work waiting, want none", d)
	}
}

// useReadMode sets GOMAXPROCS for mode (1 for the single-P readers, at
// least 2 for the others) and returns what restores it.
func useReadMode(mode readMode) (restore func()) {
	was := runtime.GOMAXPROCS(0)
	if mode.singleP {
		runtime.GOMAXPROCS(1)
	} else if was == 1 {
		runtime.GOMAXPROCS(2)
	}
	return func() { runtime.GOMAXPROCS(was) }
}
