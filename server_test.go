package veneur

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/internal/statstest"
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
	return startServerOpts(t, cfg, Options{})
}

// startServerOpts starts a server with opts, its logs discarded and its
// printed flushes in the buffer returned.
func startServerOpts(t *testing.T, cfg Config, opts Options) (*Server, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	log := logrus.New()
	log.SetOutput(io.Discard)
	opts.Log, opts.Stdout = log, out
	s, err := NewFromConfig(cfg, opts)
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

// flushUntil flushes s at ts until the printed output holds every one of
// wants: a datagram sent before is in the interval of some flush, and every
// series of one datagram in the same one.
func flushUntil(t *testing.T, s *Server, out *syncBuffer, ts time.Time, wants ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := s.Flush(context.Background(), ts); err != nil {
			t.Fatal(err)
		}
		got := out.String()
		missing := false
		for _, w := range wants {
			missing = missing || !strings.Contains(got, w)
		}
		if !missing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("output lacks some of %q:\n%s", wants, got)
		}
		time.Sleep(time.Millisecond)
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

// With GOMAXPROCS 1 the readers take single-P mode and leave GOMAXPROCS
// alone: the workers, the flusher and the HTTP server keep running while
// the reader waits, busy or idle.
func TestServerSingleP(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	s, out := startServer(t, testConfig(t, ""))
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("GOMAXPROCS %d after Start, want 1", got)
	}
	sendUDP(t, s.UDPAddr(), "one:1|c")
	flushUntil(t, s, out, time.Unix(1000, 0), "one rate")
	resp, err := http.Get("http://" + s.HTTPAddr().String() + "/healthcheck")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sendUDP(t, s.UDPAddr(), "two:1|c")
	shutdown(t, s)
	got := out.String()
	if !strings.Contains(got, "flush 1970-01-01T00:16:40Z one rate") || !strings.Contains(got, " two rate") {
		t.Errorf("want one in the first flush and two in the last:\n%s", got)
	}
}

// With several readers, GOMAXPROCS leaves room for each busy reader and
// the workers, and datagrams spread over the sockets all count.
func TestServerMultipleReaders(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)
	s, out := startServer(t, testConfig(t, "num_readers: 3\n"))
	// With several Ps and no GOMAXPROCS from the operator, each busy
	// reader keeps a P and the workers need one more: at least 4.
	if before > 1 && os.Getenv("GOMAXPROCS") == "" {
		if got := runtime.GOMAXPROCS(0); got < 4 {
			t.Errorf("GOMAXPROCS %d with 3 readers (was %d), want at least 4", got, before)
		}
	}
	for i := 0; i < 30; i++ {
		sendUDP(t, s.UDPAddr(), "n:1|c")
	}
	shutdown(t, s)
	if !strings.Contains(out.String(), "n rate 0.008333333333333333 ") {
		t.Errorf("want 30 counts (30/3600 per s):\n%s", out.String())
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

func TestServerExpiresEveryFlush(t *testing.T) {
	s, out := startServer(t, testConfig(t, ""))
	sendUDP(t, s.UDPAddr(), "a:1|c")
	flushUntil(t, s, out, time.Unix(1000, 0), " a rate")
	sendUDP(t, s.UDPAddr(), "b:1|c")
	shutdown(t, s)
	got := out.String()
	if strings.Count(got, "flush 1970-01-01T00:16:40Z a rate") != 1 || strings.Count(got, " a rate") != 1 || strings.Count(got, " b rate") != 1 {
		t.Errorf("each series should be flushed exactly once:\n%s", got)
	}
}

// TestServerRecycledSeries checks that series carried over in recycled maps
// neither leak values into a later interval nor reappear when idle.
func TestServerRecycledSeries(t *testing.T) {
	s, out := startServer(t, testConfig(t, "num_workers: 2\naggregates: [min, max, count]\npercentiles: []\n"))
	// Each step's lines are one datagram, so they land in one interval;
	// flushes before they arrive print nothing.
	flushAt := func(sec int64, lines string, wants ...string) {
		t.Helper()
		if lines == "" {
			if err := s.Flush(context.Background(), time.Unix(sec, 0)); err != nil {
				t.Fatal(err)
			}
			return
		}
		sendUDP(t, s.UDPAddr(), lines)
		flushUntil(t, s, out, time.Unix(sec, 0), wants...)
	}
	stamp := func(sec int64) string { return "flush " + time.Unix(sec, 0).UTC().Format(time.RFC3339) + " " }
	flushAt(1000, "c:5|c\nh:7|h\nh:9|h\ns:a|s\ng:3|g", stamp(1000)+"c rate", stamp(1000)+"h.max", stamp(1000)+"s gauge", stamp(1000)+"g gauge")
	flushAt(2000, "")
	flushAt(3000, "c:1|c\nh:2|h\ns:b|s", stamp(3000)+"c rate", stamp(3000)+"h.max", stamp(3000)+"s gauge")
	flushAt(4000, "c:1|c", stamp(4000)+"c rate")
	shutdown(t, s)
	got := out.String()
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

// TestSelfMetrics checks that the ingestion counters reach stats_address
// under the names docs/operations.md lists.
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
	s.Flush(context.Background(), time.Now())
	shutdown(t, s) // flushes what is left, then closes the stats client, which sends what it holds

	wants := []string{
		"veneur.packet.error_total:1|c|#cause:no_colon",
		"veneur.packet.error_total:1|c|#cause:unknown_type",
		"veneur.packet.received_total:1|c",
		"veneur.packet.lines_total:4|c",
		"veneur.tcp.connections_total:1|c",
		"veneur.flush.worker_duration_ns:",
	}
	// The client's workers send their datagrams in no set order: read
	// until every wanted line has come, or the deadline.
	var got strings.Builder
	buf := make([]byte, 65536)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	missing := func() bool {
		for _, w := range wants {
			if !strings.Contains(got.String(), w) {
				return true
			}
		}
		return false
	}
	for missing() {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			for _, want := range wants {
				if !strings.Contains(got.String(), want) {
					t.Errorf("self-metrics lack %q", want)
				}
			}
			t.Fatalf("self-metrics that came:\n%s\nthen: %v", got.String(), err)
		}
		got.Write(buf[:n])
		got.WriteByte('\n')
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
	rec := &statstest.Recorder{}
	s, out := startServerOpts(t, testConfig(t, "tags: [\"env:dev\"]\n"), Options{Stats: rec})
	sendUDP(t, s.UDPAddr(), "_e{5,4}:title|text|d:1000|#a\n_sc|chk|1|d:1000|m:it broke\n_e{9,9}:cut|x\nok:1|c")
	flushUntil(t, s, out, time.Unix(1000, 0), " ok rate ")
	if n := rec.Sum("packet.error_total", "cause:bad_event"); n != 1 {
		t.Errorf("%d malformed events counted, want 1", n)
	}
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

// Flush called while Shutdown runs neither panics (by handing a flush
// request to a worker queue Shutdown has closed) nor loses the data: every
// flush either completes or reports that the server is shut down.
func TestFlushDuringShutdown(t *testing.T) {
	for i := 0; i < 20; i++ {
		s, out := startServer(t, testConfig(t, "num_workers: 4\n"))
		sendUDP(t, s.UDPAddr(), "x:1|c")
		stopped := make(chan error, 1)
		go func() {
			for {
				if err := s.Flush(context.Background(), time.Unix(1000, 0)); err != nil {
					stopped <- err
					return
				}
			}
		}()
		shutdown(t, s)
		if err := <-stopped; !errors.Is(err, errPoolStopped) {
			t.Fatalf("Flush after Shutdown: %v", err)
		}
		if n := strings.Count(out.String(), " x rate "); n != 1 {
			t.Fatalf("x flushed %d times, want once:\n%s", n, out.String())
		}
	}
}

func dialTCP(t *testing.T, addr net.Addr) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func write(t *testing.T, c net.Conn, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
}

// Values no sink can publish are dropped and counted by cause, and the rest
// of their series is flushed.
func TestServerCountsInvalidValues(t *testing.T) {
	rec := &statstest.Recorder{}
	s, out := startServerOpts(t, testConfig(t, "aggregates: [max, sum, avg, count]\npercentiles: []\n"), Options{Stats: rec})
	sendUDP(t, s.UDPAddr(),
		"big:1e308|c|@0.5\nok:1|c",
		"w:5|h|@1e-300\nw:7|h",
		"s:1e308|h\ns:1e308|h",
	)
	shutdown(t, s)
	got := out.String()
	for _, want := range []string{" ok rate ", " w.max gauge 7 ", " w.sum gauge 7 ", " s.max gauge 1e+308 ", " s.count rate "} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, absent := range []string{" big ", " s.sum ", " s.avg "} {
		if strings.Contains(got, absent) {
			t.Errorf("output has the invalid %q:\n%s", absent, got)
		}
	}
	for cause, want := range map[string]int64{"counter_overflow": 1, "sample_weight": 1, "sum_overflow": 1, "avg_overflow": 1, "other": 0} {
		if n := rec.Sum("flush.invalid_value_total", "cause:"+cause); n != want {
			t.Errorf("invalid_value_total{cause:%s} = %d, want %d", cause, n, want)
		}
	}
}

// Each sink validates its own keys when the server is built, which is what
// veneur -validate runs; the error names the key and the fix.
func TestSinksValidateTheirKeys(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"api_hostname without scheme", "api_hostname: app.datadoghq.com", []string{"api_hostname", "https://app.datadoghq.com"}},
		{"api_hostname ftp", "api_hostname: ftp://app.datadoghq.com", []string{"api_hostname", "http(s)"}},
		{"api_hostname unparseable", "api_hostname: 'http://[::1'", []string{"api_hostname", "absolute URL"}},
		{"flush_max_per_body negative", "api_hostname: https://app.datadoghq.com\nkey: k\nflush_max_per_body: -1", []string{"flush_max_per_body = -1", "5000"}},
		{"api_hostname without key", "api_hostname: https://app.datadoghq.com", []string{"key is empty but api_hostname", "set key to your Datadog API key"}},
		{"forward_address host:port", "forward_address: veneur:8127", []string{"forward_address", "http(s)"}},
		{"trace_api_address no host", "trace_api_address: 'http://'", []string{"trace_api_address", "http(s)"}},
		{"influx_consistency", "influx_address: http://influx:8086\ninflux_db_name: m\ninflux_consistency: most", []string{`influx_consistency "most"`, "any, one, quorum, all"}},
		{"influx_db_name", "influx_address: http://influx:8086", []string{"influx_db_name"}},
		{"aws_region", "aws_s3_bucket: b", []string{"aws_region"}},
		{"aws keys", "aws_s3_bucket: b\naws_region: us-west-2\naws_access_key_id: k", []string{"aws_access_key_id", "aws_secret_access_key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte("udp_address: 127.0.0.1:0\n" + tc.doc + "\n"))
			if err != nil {
				t.Fatalf("ParseConfig: %v (a sink's key belongs to the sink)", err)
			}
			_, err = NewFromConfig(cfg, Options{Stdout: io.Discard})
			if err == nil {
				t.Fatalf("NewFromConfig accepted %q", tc.doc)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
