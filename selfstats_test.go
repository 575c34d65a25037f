package veneur

import (
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

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
	c, err := newStatsClient(pc.LocalAddr().String(), "veneur.")
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

// A burst of self-metrics many times what one interval sends arrives
// whole: the smaller queue drops nothing.
func TestStatsClientBurstArrives(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if uc, ok := pc.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(4 << 20)
	}
	const n = 3000
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
	c, err := newStatsClient(pc.LocalAddr().String(), "veneur.")
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
