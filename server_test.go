package veneur

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/samplers"
)

// syncBuffer is a bytes.Buffer safe for the sink and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testConfig(t *testing.T, extra string) Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(`
udp_address: "127.0.0.1:0"
http_address: "127.0.0.1:0"
hostname: "box"
interval: "1h"
` + extra))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newServer builds (without starting) a server on extra config lines, with
// its logs and printed flushes discarded.
func newServer(tb testing.TB, extra string) *Server {
	tb.Helper()
	cfg, err := ParseConfig([]byte("udp_address: 127.0.0.1:0\nhostname: box\n" + extra))
	if err != nil {
		tb.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := NewFromConfig(cfg, Options{Log: log, Stdout: io.Discard})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func startServer(t *testing.T, cfg Config) (*Server, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := NewFromConfig(cfg, Options{Log: log, Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s, out
}

func sendUDP(t *testing.T, addr net.Addr, datagrams ...string) {
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

func shutdown(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestServerEndToEndInProcess(t *testing.T) {
	before := runtime.NumGoroutine()
	s, out := startServer(t, testConfig(t, "aggregates: [min, max, count, avg]\npercentiles: [0.5]\n"))

	resp, err := http.Get("http://" + s.HTTPAddr().String() + "/healthcheck")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthcheck = %d", resp.StatusCode)
	}

	sendUDP(t, s.UDPAddr(),
		"c:1|c|#b,a\nc:2|c|#a,b\nbad\ng:1|g\ng:7|g\n",
		"h:1|h\nh:3|h|@0.5\ns:x|s\ns:y|s\ns:x|s\nnan:NaN|g",
	)
	shutdown(t, s)

	got := out.String()
	for _, want := range []string{
		"c rate 0.0008333333333333334 interval=3600 host=box tags=[a b]",
		"g gauge 7 host=box tags=[]",
		"h.min gauge 1 ", "h.max gauge 3 ", "h.count rate 0.0008333333333333334 ", "h.avg gauge 2.3333333333333335 ",
		"h.50percentile gauge 3 ",
		"s gauge 2 host=box",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "nan") || strings.Contains(got, "bad") {
		t.Errorf("a malformed line was flushed:\n%s", got)
	}
	if n := strings.Count(got, "\n"); n != 8 {
		t.Errorf("%d series flushed, want 8:\n%s", n, got)
	}

	// Every goroutine the server started has returned.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after Shutdown, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestServerMultipleReaders(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)
	s, out := startServer(t, testConfig(t, "num_readers: 3\n"))
	if len(s.udpSocks) != 3 {
		t.Fatalf("%d sockets, want 3", len(s.udpSocks))
	}
	want := wantProcs(before, 3)
	if s.singleP {
		want = before // single-P mode leaves GOMAXPROCS alone
	}
	if got := runtime.GOMAXPROCS(0); got != want {
		t.Errorf("GOMAXPROCS %d with 3 readers (was %d), want %d", got, before, want)
	}
	// Many senders from different source ports spread over the sockets.
	for i := 0; i < 30; i++ {
		sendUDP(t, s.UDPAddr(), "n:1|c")
	}
	shutdown(t, s)
	if !strings.Contains(out.String(), "n rate 0.008333333333333333 ") {
		t.Errorf("want 30 counts (30/3600 per s):\n%s", out.String())
	}
}

// readModes are the UDP readers' modes: several Ps, and single P.
var readModes = []struct {
	name    string
	singleP bool
}{{"multiP", false}, {"singleP", true}}

// A reader told to stop processes every datagram already queued in the
// kernel, then returns.
func TestReaderDrainsQueuedDatagrams(t *testing.T) {
	for _, mode := range readModes {
		t.Run(mode.name, func(t *testing.T) {
			s := newServer(t, "read_buffer_size_bytes: 8388608\n")
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
			for _, w := range s.workers {
				go w.run()
				defer close(w.in)
			}
			in := s.newIngester()
			if err := readUDP(sock, in, s.cfg.MetricMaxLength+1, func() bool { return true }); err != nil {
				t.Fatal(err)
			}
			if p, l := s.ingest.packets.Load(), s.ingest.lines.Load(); p != n || l != 2*(n-1) {
				t.Errorf("%d datagrams and %d lines processed, want %d and %d", p, l, n, 2*(n-1))
			}
		})
	}
}

// wake ends an idle reader's wait before any receive timeout would, and a
// reader that went idle after traffic wakes for the next datagram.
func TestReaderWakes(t *testing.T) {
	for _, mode := range readModes {
		t.Run(mode.name, func(t *testing.T) {
			s := newServer(t, "")
			for _, w := range s.workers {
				go w.run()
				defer close(w.in)
			}
			sock, _, err := listenUDP("127.0.0.1:0", false, 1<<20, mode.singleP)
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			var stop atomic.Bool
			done := make(chan error, 1)
			go func() { done <- readUDP(sock, s.newIngester(), 1024, stop.Load) }()
			sendUDP(t, sock.LocalAddr(), "a:1|c")
			waitFor(t, "the first line", func() bool { return s.ingest.lines.Load() >= 1 })
			// Once the reader has gone idle, one more datagram must
			// still arrive.
			waitFor(t, "the reader to go idle", sock.isIdle)
			sendUDP(t, sock.LocalAddr(), "b:1|c")
			waitFor(t, "the line sent to an idle reader", func() bool { return s.ingest.lines.Load() >= 2 })
			waitFor(t, "the reader to go idle again", sock.isIdle)
			stop.Store(true)
			sock.wake()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(wakeWithin):
				t.Fatal("the reader did not return after wake")
			}
		})
	}
}

// With GOMAXPROCS 1 the readers take single-P mode and leave GOMAXPROCS
// alone: the workers, the flusher and the HTTP server keep running while
// the reader waits, busy or idle.
func TestServerSingleP(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	s, out := startServer(t, testConfig(t, ""))
	if got := runtime.GOMAXPROCS(0); got != 1 || !s.singleP {
		t.Errorf("GOMAXPROCS %d after Start (single-P mode %v), want 1", got, s.singleP)
	}
	sendUDP(t, s.UDPAddr(), "one:1|c")
	waitProcessed(t, s, 1)
	resp, err := http.Get("http://" + s.HTTPAddr().String() + "/healthcheck")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s.Flush(context.Background(), time.Unix(1000, 0))
	sendUDP(t, s.UDPAddr(), "two:1|c")
	waitProcessed(t, s, 2)
	shutdown(t, s)
	got := out.String()
	if !strings.Contains(got, "flush 1970-01-01T00:16:40Z one rate") || !strings.Contains(got, " two rate") {
		t.Errorf("want one in the first flush and two in the last:\n%s", got)
	}
}

func TestServerExpiresEveryFlush(t *testing.T) {
	s, out := startServer(t, testConfig(t, ""))
	sendUDP(t, s.UDPAddr(), "a:1|c")
	waitProcessed(t, s, 1)
	s.Flush(context.Background(), time.Unix(1000, 0))
	sendUDP(t, s.UDPAddr(), "b:1|c")
	shutdown(t, s)
	got := out.String()
	if strings.Count(got, "flush 1970-01-01T00:16:40Z a rate") != 1 || strings.Count(got, " a rate") != 1 || strings.Count(got, " b rate") != 1 {
		t.Errorf("each series should be flushed exactly once:\n%s", got)
	}
}

// waitProcessed polls until the workers have processed n samples in total.
func waitProcessed(t *testing.T, s *Server, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var total uint64
		for _, w := range s.workers {
			total += w.peekProcessed()
		}
		if total >= n {
			return
		}
		runtime.Gosched()
	}
	t.Fatalf("workers did not process %d samples in time", n)
}

func TestIngesterTruncatedDatagram(t *testing.T) {
	s := newServer(t, "metric_max_length: 20\n")
	in := s.newIngester()
	// "a:1|c\nb:2|c\n" is complete inside 20 bytes; "ccc..." is cut.
	in.handlePacket([]byte("a:1|c\nb:2|c\nccccccc:3|c"), true)
	in.handlePacket([]byte("no-newline-at-all-and-too-long:1|c"), false)
	if in.counts.truncated != 2 || in.counts.lines != 2 {
		t.Fatalf("truncated=%d lines=%d, want 2 and 2", in.counts.truncated, in.counts.lines)
	}
	var keys []string
	for _, b := range in.pending {
		if b == nil {
			continue
		}
		for _, smp := range b.samples {
			k, _ := samplers.DecodeKey(string(b.buf[smp.keyOff : smp.keyOff+smp.keyLen]))
			keys = append(keys, k.Name)
		}
	}
	if strings.Join(slices.Sorted(slices.Values(keys)), ",") != "a,b" {
		t.Errorf("samples for %v, want a and b only", keys)
	}
}

func TestIngesterSameKeySameWorker(t *testing.T) {
	s := newServer(t, "num_workers: 8\n")
	in := s.newIngester()
	in.handlePacket([]byte("k:1|c|#x,y\nk:1|c|#y,x\nk:1|c|#x,y"), false)
	used := 0
	for _, b := range in.pending {
		if b != nil && len(b.samples) > 0 {
			used++
			if len(b.samples) != 3 {
				t.Errorf("worker got %d of the 3 samples", len(b.samples))
			}
		}
	}
	if used != 1 {
		t.Errorf("one key went to %d workers", used)
	}
	// And different keys spread over the workers.
	in2 := s.newIngester()
	for i := 0; i < 200; i++ {
		in2.handleLine([]byte(fmt.Sprintf("k%d:1|c", i)))
	}
	used = 0
	for _, b := range in2.pending {
		if b != nil && len(b.samples) > 0 {
			used++
		}
	}
	if used < 6 {
		t.Errorf("200 keys landed on only %d of 8 workers", used)
	}
}

func TestIngesterDropsWhenWorkerStuck(t *testing.T) {
	s := newServer(t, "num_workers: 1\n")
	in := s.newIngester()
	in.sendWait = time.Millisecond
	// No worker goroutine runs: the queue fills, then batches are dropped
	// and counted instead of blocking the reader.
	for i := 0; i < workerQueueLen+2; i++ {
		in.handleLine([]byte("a:1|c"))
		in.flush()
	}
	if got := s.ingest.dropped.Load(); got != 2 {
		t.Errorf("dropped = %d, want 2", got)
	}
	if got := s.ingest.queueFull.Load(); got != 2 {
		t.Errorf("queueFull = %d, want 2", got)
	}
}

// TestServerRecycledSeries checks that series carried over in recycled maps
// neither leak values into a later interval nor reappear when idle.
func TestServerRecycledSeries(t *testing.T) {
	s, out := startServer(t, testConfig(t, "num_workers: 2\naggregates: [min, max, count]\npercentiles: []\n"))
	flushAt := func(sec int64, lines string) {
		t.Helper()
		before := uint64(0)
		for _, w := range s.workers {
			before += w.peekProcessed()
		}
		if lines != "" {
			sendUDP(t, s.UDPAddr(), lines)
			waitProcessed(t, s, before+uint64(strings.Count(lines, "\n")+1))
		}
		s.Flush(context.Background(), time.Unix(sec, 0))
		s.inFlight.Wait()
	}
	flushAt(1000, "c:5|c\nh:7|h\nh:9|h\ns:a|s\ng:3|g")
	flushAt(2000, "")
	flushAt(3000, "c:1|c\nh:2|h\ns:b|s")
	flushAt(4000, "c:1|c")
	shutdown(t, s)
	got := out.String()
	stamp := func(sec int64) string { return "flush " + time.Unix(sec, 0).UTC().Format(time.RFC3339) + " " }
	for _, want := range []string{
		stamp(1000) + "c rate 0.001388888888888889 ", stamp(1000) + "h.max gauge 9 ", stamp(1000) + "s gauge 1 ", stamp(1000) + "g gauge 3 ",
		stamp(3000) + "c rate 0.0002777777777777778 ", stamp(3000) + "h.max gauge 2 ", stamp(3000) + "h.min gauge 2 ", stamp(3000) + "s gauge 1 ",
		stamp(4000) + "c rate 0.0002777777777777778 ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, absent := range []string{stamp(2000), stamp(3000) + "g ", stamp(4000) + "h.", stamp(4000) + "s "} {
		if strings.Contains(got, absent) {
			t.Errorf("output has %q, which saw nothing in that interval", absent)
		}
	}
	if t.Failed() {
		t.Log(got)
	}
}

// TestKnownKeysDoNotAllocate checks the hot-path promise: once a worker
// knows a key, a line of it costs no heap allocation from datagram to
// sampler.
func TestKnownKeysDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, which allocates")
	}
	s := newServer(t, "num_workers: 2\n")
	in := s.newIngester()
	packet := []byte("c:1|c|#a,b\ng:2|g|#host:h\nh:3|h|@0.5\nt:4|ms|#x:y,device:d\ns:member|s\np:1:2:3|h\n")
	run := func() {
		in.handlePacket(packet, false)
		in.flush()
		for _, w := range s.workers {
			for len(w.in) > 0 {
				w.process(<-w.in)
			}
		}
	}
	for i := 0; i < 100; i++ {
		run() // create the series and warm the pools and digests
	}
	if allocs := testing.AllocsPerRun(200, run); allocs != 0 {
		t.Errorf("%v allocations per datagram of known keys, want 0", allocs)
	}
}

// TestSelfMetrics checks that the ingestion counters reach stats_address
// under the names the README lists.
func TestSelfMetrics(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s, _ := startServer(t, testConfig(t, "stats_address: "+pc.LocalAddr().String()+"\ntcp_address: 127.0.0.1:0\n"))
	sendUDP(t, s.UDPAddr(), "ok:1|c\nbroken\nalso:bad|q")
	c := dialTCP(t, s.TCPAddr())
	write(t, c, "viatcp:1|c\n")
	c.Close()
	waitProcessed(t, s, 2)
	s.Flush(context.Background(), time.Now())
	shutdown(t, s) // closes the stats client, which sends what it holds

	var got strings.Builder
	buf := make([]byte, 65536)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for !strings.Contains(got.String(), "veneur.packet.error_total") || !strings.Contains(got.String(), "flush.worker_duration_ns") {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("self-metrics so far:\n%s\nthen: %v", got.String(), err)
		}
		got.Write(buf[:n])
		got.WriteByte('\n')
	}
	// The client may send more after the loop's condition holds; what the
	// test checks is all in what arrived.
	for _, want := range []string{
		"veneur.packet.error_total:1|c|#cause:no_colon",
		"veneur.packet.error_total:1|c|#cause:unknown_type",
		"veneur.packet.received_total:1|c",
		"veneur.packet.lines_total:4|c",
		"veneur.tcp.connections_total:1|c",
	} {
		if !strings.Contains(got.String(), want) {
			t.Errorf("self-metrics lack %q:\n%s", want, got.String())
		}
	}
	// Durations are nanoseconds: collecting a worker's interval takes more
	// than one nanosecond and far less than a second.
	for _, line := range strings.Split(got.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "veneur.flush.worker_duration_ns:"); ok {
			v, err := strconv.ParseFloat(rest[:strings.IndexByte(rest, '|')], 64)
			if err != nil || v < 1 || v > 1e9 {
				t.Errorf("worker_duration_ns = %q, want nanoseconds", line)
			}
		}
	}
}

// Readers serve IPv6 addresses as well.
func TestServerIPv6(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		c.Close()
	}
	cfg := testConfig(t, "")
	cfg.UdpAddress = "[::1]:0"
	s, out := startServer(t, cfg)
	sendUDP(t, s.UDPAddr(), "six:1|c")
	shutdown(t, s)
	if !strings.Contains(out.String(), "six rate") {
		t.Errorf("the IPv6 datagram was not flushed:\n%s", out.String())
	}
}

func TestResolveVersion(t *testing.T) {
	info := func(kv ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{}
		for i := 0; i < len(kv); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return bi
	}
	for _, c := range []struct {
		linked string
		info   *debug.BuildInfo
		ok     bool
		want   string
	}{
		{"1.2.3", info("vcs.revision", "abc"), true, "1.2.3"},
		{"", info("vcs.revision", "abc", "vcs.modified", "false"), true, "abc"},
		{"", info("vcs.revision", "abc", "vcs.modified", "true"), true, "abc-dirty"},
		{"", info(), true, "unknown"},
		{"", nil, false, "unknown"},
	} {
		if got := resolveVersion(c.linked, c.info, c.ok); got != c.want {
			t.Errorf("resolveVersion(%q, %v) = %q, want %q", c.linked, c.info, got, c.want)
		}
	}
}

// Events and service checks print with the default host and config tags;
// a malformed one is counted, its neighbours kept.
func TestServerEventsAndChecks(t *testing.T) {
	s, out := startServer(t, testConfig(t, "tags: [\"env:dev\"]\n"))
	sendUDP(t, s.UDPAddr(), "_e{5,4}:title|text|d:1000|#a\n_sc|chk|1|d:1000|m:it broke\n_e{9,9}:cut|x\nok:1|c")
	waitProcessed(t, s, 1)
	if n := parseErrs(s, samplers.ErrBadEvent); n != 1 {
		t.Errorf("%d malformed events counted, want 1", n)
	}
	s.Flush(context.Background(), time.Unix(1000, 0))
	shutdown(t, s)
	got := out.String()
	for _, want := range []string{
		`event 1970-01-01T00:16:40Z "title" "text" host=box tags=[a env:dev]`,
		`check 1970-01-01T00:16:40Z chk status=1 host=box message="it broke" tags=[env:dev]`,
		" ok rate ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
