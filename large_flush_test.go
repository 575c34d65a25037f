package veneur

import (
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/veneur/veneur/internal/statstest"
)

// largeFlushSeries is how many series TestLargeFlushDeliveredWhole flushes:
// VENEUR_LARGE_FLUSH_SERIES, or 100,000. docs/benchmark.md quotes it run
// with 1,000,000.
func largeFlushSeries(t *testing.T) int {
	if v := os.Getenv("VENEUR_LARGE_FLUSH_SERIES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("VENEUR_LARGE_FLUSH_SERIES=%q: want a positive number", v)
		}
		return n
	}
	return 100_000
}

// An interval of many series reaches an API that takes 50 ms per body
// whole: every series once, none cut off by a deadline, and
// veneur.flush.post_metrics_total counts what the API accepted.
func TestLargeFlushDeliveredWhole(t *testing.T) {
	n := largeFlushSeries(t)
	var mu sync.Mutex
	seen := make(map[string]int, n)
	bodies := 0
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond) // the API's pace, per body
		zr, err := zlib.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var body struct {
			Series []struct {
				Metric string `json:"metric"`
			} `json:"series"`
		}
		if err := json.NewDecoder(zr).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		bodies++
		for _, s := range body.Series {
			seen[s.Metric]++
		}
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer api.Close()

	rec := &statstest.Recorder{}
	// All series go in the final flush of Shutdown, which delivers them.
	cfg := testConfig(t, fmt.Sprintf("api_hostname: %s\nkey: k\nflush_max_per_body: 5000\nshutdown_timeout: 60s\nnum_workers: 2\n", api.URL))
	s, _ := startServerOpts(t, cfg, Options{Stats: rec})
	in := s.ingest.newIngester()
	line := make([]byte, 0, 64)
	for i := range n {
		line = append(strconv.AppendInt(append(line[:0], "large.s"...), int64(i), 10), ":1|c"...)
		in.Line(line)
	}
	in.Flush()
	start := time.Now()
	// The final flush, then delivery of what is spooled: at 4 bodies at
	// once, 1,000,000 series take about 3 s of the API's time.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)

	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Errorf("%d distinct series delivered, want %d", len(seen), n)
	}
	for name, c := range seen {
		if c != 1 {
			t.Fatalf("%s delivered %d times", name, c)
		}
	}
	if got := rec.Sum("flush.post_metrics_total", "destination:datadog"); got != int64(n) {
		t.Errorf("flush.post_metrics_total = %d, want %d", got, n)
	}
	if got := rec.Sum("flush.dropped_total"); got != 0 {
		t.Errorf("flush.dropped_total = %d, want 0", got)
	}
	t.Logf("%d series in %d bodies delivered %v after the shutdown began", n, bodies, took.Round(time.Millisecond))
}
