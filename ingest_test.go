package veneur

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/samplers"
)

// testIngest is a worker pool of n running workers and its ingest part,
// with metric_max_length maxLen.
func testIngest(t testing.TB, n, maxLen int) (*workerPool, *ingest) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	p := newWorkerPool(n, 0)
	return p, newIngest(p, maxLen, log)
}

// collectNames runs the pool's workers until they have processed what is
// queued, stops them, and returns the series names each worker held.
func collectNames(p *workerPool) [][]string {
	p.start(func() {})
	ivs := p.stop()
	out := make([][]string, len(ivs))
	for i, iv := range ivs {
		for _, r := range iv.recs {
			out[i] = append(out[i], r.se.meta.Name)
		}
		slices.Sort(out[i])
	}
	return out
}

// A datagram is processed whole, line by line: metric_max_length (here 20)
// applies to each line, and a datagram cut by its receive buffer loses the
// line at the cut, counted as truncated, not the lines before it.
func TestIngesterLineLimitAndTruncation(t *testing.T) {
	p, g := testIngest(t, 1, 20)
	in := g.newIngester()
	// 60 bytes, three times metric_max_length: every line counts.
	in.Packet([]byte("a:1|c\nb:2|c\n"+strings.Repeat("d", 30)+":1|c\ne:3|c\nf:4|c"), false)
	// Cut inside "ccc...": a and g before it count; the cut line does not,
	// although its prefix would parse.
	in.Packet([]byte("g:1|c\nh:2|c\nccccccc:3|c"), true)
	in.Packet([]byte("cut-before-any-newline:1|c"), true)
	in.Flush()
	rec := &statstest.Recorder{}
	g.Report(rec)
	for _, c := range []struct {
		cause string
		want  int64
	}{{"truncated", 2}, {"too_long", 1}} {
		if got := rec.Sum("packet.error_total", "cause:"+c.cause); got != c.want {
			t.Errorf("packet.error_total{cause:%s} = %d, want %d", c.cause, got, c.want)
		}
	}
	if l := rec.Sum("packet.lines_total"); l != 9 {
		t.Errorf("packet.lines_total = %d, want 9 (6 processed, 3 skipped)", l)
	}
	if got := collectNames(p)[0]; strings.Join(got, ",") != "a,b,e,f,g,h" {
		t.Errorf("series %v, want a, b, e, f, g and h", got)
	}
}

func TestIngesterSameKeySameWorker(t *testing.T) {
	p, g := testIngest(t, 8, 4096)
	in := g.newIngester()
	in.Packet([]byte("k:1|c|#x,y\nk:1|c|#y,x\nk:1|c|#x,y"), false)
	for i := 0; i < 200; i++ {
		in.Line([]byte(fmt.Sprintf("k%d:1|c", i)))
	}
	in.Flush()
	p.start(func() {})
	ivs := p.stop()
	used, withK := 0, 0
	for _, iv := range ivs {
		if len(iv.recs) > 0 {
			used++
		}
		for _, r := range iv.recs {
			if r.se.meta.Name == "k" {
				withK++
				if r.value != 3 {
					t.Errorf("k = %v on one worker, want all 3 samples there", r.value)
				}
			}
		}
	}
	if withK != 1 {
		t.Errorf("one key is a series on %d workers", withK)
	}
	// Different keys spread over the workers.
	if used < 6 {
		t.Errorf("201 keys landed on only %d of 8 workers", used)
	}
}

func TestIngesterDropsWhenWorkerStuck(t *testing.T) {
	p, g := testIngest(t, 1, 4096)
	in := g.newIngester().(*ingester)
	in.sendWait = time.Millisecond
	// No worker goroutine runs: the queue fills, then batches are dropped
	// and counted instead of blocking the reader.
	for i := 0; i < workerQueueLen+2; i++ {
		in.Line([]byte("a:1|c"))
		in.Flush()
	}
	rec := &statstest.Recorder{}
	g.Report(rec)
	if got := rec.Sum("worker.dropped_total"); got != 2 {
		t.Errorf("dropped = %d, want 2", got)
	}
	if got := rec.Sum("worker.queue_full_total"); got != 2 {
		t.Errorf("queue_full = %d, want 2", got)
	}
	p.start(func() {})
	if ivs := p.stop(); ivs[0].processed != workerQueueLen {
		t.Errorf("processed %d, want the %d queued", ivs[0].processed, workerQueueLen)
	}
}

// An error no parse cause lists is counted as other, never under another
// cause's name.
func TestIngesterUnlistedErrorIsOther(t *testing.T) {
	_, g := testIngest(t, 1, 4096)
	in := g.newIngester()
	in.Skip(fmt.Errorf("something nobody listed"))
	in.Skip(samplers.ErrTooLong)
	in.Flush()
	rec := &statstest.Recorder{}
	g.Report(rec)
	if n := rec.Sum("packet.error_total", "cause:other"); n != 1 {
		t.Errorf("other = %d, want 1", n)
	}
	if n := rec.Sum("packet.error_total", "cause:too_long"); n != 1 {
		t.Errorf("too_long = %d, want 1", n)
	}
	if n := rec.Sum("packet.error_total"); n != 2 {
		t.Errorf("%d errors in all, want 2", n)
	}
}

// TestKnownKeysDoNotAllocate checks the hot-path promise: once a worker
// knows a key, a line of it costs no heap allocation from datagram to
// sampler. The worker's loop body runs on the test's goroutine, so that
// AllocsPerRun sees all of it.
func TestKnownKeysDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, which allocates")
	}
	p, g := testIngest(t, 2, 4096)
	in := g.newIngester()
	packet := []byte("c:1|c|#a,b\ng:2|g|#host:h\nh:3|h|@0.5\nt:4|ms|#x:y,device:d\ns:member|s\np:1:2:3|h\n")
	run := func() {
		in.Packet(packet, false)
		in.Flush()
		for _, w := range p.workers {
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

// A reader publishes its counts before it hands its batches over: a flush
// reports the counts after it has collected the workers' intervals, so a
// flush that holds the samples of a datagram also counts its malformed
// lines.
func TestIngesterPublishesBeforeHandingOver(t *testing.T) {
	p, g := testIngest(t, 1, 4096)
	w := p.workers[0]
	w.in = make(chan *batch) // a hand-over completes only when taken
	in := g.newIngester()
	bad := g.parse.IndexOf("no_colon")
	for range 20 {
		seen := make(chan uint64)
		go func() {
			b := <-w.in
			seen <- g.parse.Load(bad)
			b.reset()
			p.batches.Put(b)
		}()
		before := g.parse.Load(bad)
		in.Packet([]byte("nocolon\nok:1|c"), false)
		in.Flush()
		if got := <-seen; got != before+1 {
			t.Fatalf("the batch was taken with %d malformed lines counted, want %d", got-before, 1)
		}
	}
}
