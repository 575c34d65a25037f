package plugins

import (
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vmHWM is the process's peak resident size in KiB (Linux), 0 elsewhere.
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// An API down for longer than the spool holds: Send never blocks, the
// oldest bodies are dropped and counted as spool_full, and what waits
// stays within MaxBytes. The peak resident size is logged (not asserted:
// the runtime's own overhead varies); it follows the bound, not the
// number of bodies sent.
func TestSpoolBoundHoldsMemory(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer api.Close()
	const (
		bound   = 16 << 20
		body    = 1 << 20
		flushes = 200 // 200 MiB offered, 12 times the bound
	)
	q := NewQueue("test", &Poster{Client: api.Client()}, DeliveryConfig{
		MaxBytes: bound, MaxAge: time.Hour, Concurrency: 1,
		BackoffInitial: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
	}, Env{Common: Common{Interval: time.Second}}, "flush")
	runtime.GC()
	before := vmHWM()
	for range flushes {
		b := make([]byte, body)
		rand.Read(b) // incompressible, as a compressed body is
		q.Send(Delivery{Request: Request{Method: http.MethodPost, URL: api.URL, What: "the API", Body: b}, Count: 1})
	}
	rec := report(q)
	if v, ok := rec.GaugeValue("flush.spool_bytes", "destination:test"); !ok || v > bound || v == 0 {
		t.Errorf("spool holds %v bytes (reported: %v), want some, at most the bound %d", v, ok, bound)
	}
	dropped := rec.Sum("flush.dropped_total", "cause:spool_full")
	if dropped < flushes-bound/body-1 {
		t.Errorf("%d bodies dropped as spool_full, want at least %d", dropped, flushes-bound/body-1)
	}
	runtime.GC()
	t.Logf("offered %d MiB to a %d MiB spool: %d bodies dropped as spool_full; peak RSS %d MiB before, %d MiB after",
		flushes*body>>20, bound>>20, dropped, before>>10, vmHWM()>>10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	q.Close(ctx)
}
