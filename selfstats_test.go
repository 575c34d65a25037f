package veneur

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/internal/statstest"
)

func quietLogger() *logrus.Logger {
	log := logrus.New()
	log.SetOutput(io.Discard)
	return log
}

// The self-metrics client is built for veneur's few metrics: it holds
// far less than with datadog-go's defaults (4.5 MB, 7% of the live heap
// of a host with 100,000 series).
func TestStatsClientHoldsLittle(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	before := liveHeap()
	c, err := newStatsClient(pc.LocalAddr().String(), "veneur.", quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	held := liveHeap() - before
	runtime.KeepAlive(c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if held > 1<<20 {
		t.Errorf("the self-metrics client holds %d bytes, want under 1 MiB", held)
	}
}

// A burst of self-metrics ten times what one interval sends arrives whole:
// it fits the smaller queue even if the client's sender does not run
// until the burst has been written (2,000 lines of about 40 bytes fill
// about 60 datagram buffers of the 128), so nothing is dropped however
// busy the machine.
func TestStatsClientBurstArrives(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if uc, ok := pc.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(4 << 20)
	}
	const n = 1000
	got := make(chan map[string]bool, 1)
	go func() {
		seen := map[string]bool{}
		buf := make([]byte, 65536)
		deadline := time.Now().Add(20 * time.Second)
		for len(seen) < 2*n && time.Now().Before(deadline) {
			_ = pc.SetReadDeadline(time.Now().Add(time.Second))
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(buf[:k]), "\n") {
				if name, _, ok := strings.Cut(line, ":"); ok {
					seen[name] = true
				}
			}
		}
		got <- seen
	}()
	c, err := newStatsClient(pc.LocalAddr().String(), "veneur.", quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		// Counters are aggregated in the client and written at its
		// flush; timings go through its workers and buffers.
		_ = c.Count("burst.count."+strconv.Itoa(i), 1, []string{"sink:datadog"}, 1)
		_ = c.Timing("burst.timing."+strconv.Itoa(i), time.Millisecond, nil, 1)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	seen := <-got
	_ = c.Close()
	if len(seen) != 2*n {
		t.Errorf("%d of %d self-metrics arrived", len(seen), 2*n)
	}
}

// What the self-metrics client loses is counted and reported with the next
// self-metrics, and logged at most once a minute: self-metrics its full
// queue dropped, and datagrams the socket refused (nothing listens at
// stats_address).
func TestStatsClientCountsWhatItLoses(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close() // nothing listens there now: writes are refused
	var logged bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logged)
	c, err := newStatsClient(addr, "veneur.", log)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	c.lost(&statsd.ErrorSenderChannelFull{LostElements: 7, Msg: "Sender queue is full"})
	c.lost(&statsd.ErrorSenderChannelFull{LostElements: 5, Msg: "Sender queue is full"})
	// The refused writes, through the client's own error handler.
	for deadline := time.Now().Add(10 * time.Second); c.writeErrs.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d refused writes counted after 10s, want 2 or more", c.writeErrs.Load())
		}
		_ = c.Count("probe", 1, nil, 1)
		_ = c.Flush()
	}
	writes := int64(c.writeErrs.Load())
	rec := &statstest.Recorder{}
	c.Report(rec)
	if n := rec.Sum("stats.dropped_total", "cause:queue_full"); n != 12 {
		t.Errorf("stats.dropped_total{cause:queue_full} = %d, want 12", n)
	}
	if n := rec.Sum("stats.error_total", "cause:write"); n < writes {
		t.Errorf("stats.error_total{cause:write} = %d, want at least %d", n, writes)
	}
	if n := strings.Count(logged.String(), "the client's queue to stats_address was full"); n != 1 {
		t.Errorf("the full queue was logged %d times, want once:\n%s", n, logged.String())
	}
	if n := strings.Count(logged.String(), "sending to stats_address failed"); n != 1 {
		t.Errorf("the refused writes were logged %d times, want once:\n%s", n, logged.String())
	}
	// Reported once: the counts start again from zero.
	rec = &statstest.Recorder{}
	c.Report(rec)
	if n := rec.Sum("stats.dropped_total"); n != 0 {
		t.Errorf("stats.dropped_total reported again: %d", n)
	}
}

// The server reports its self-metrics client's losses with its other
// self-metrics.
func TestServerReportsStatsClientLosses(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cfg := testConfig(t, "stats_address: "+pc.LocalAddr().String()+"\n")
	s, err := NewFromConfig(cfg, Options{Stdout: io.Discard, Log: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	c, ok := s.stats.(*selfStats)
	if !ok {
		t.Fatalf("the server's self-metrics client is a %T", s.stats)
	}
	defer c.Close()
	for _, r := range s.flusher.reporters {
		if r == reporter(c) {
			return
		}
	}
	t.Errorf("the self-metrics client is not among the flusher's reporters")
}
