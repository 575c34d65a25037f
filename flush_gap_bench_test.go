package veneur

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veneur/veneur/listen"
)

// gapSenderEnv, when set to a UDP address, makes the test binary the
// sender of BenchmarkFlushReaderGap (TestMain); gapSenderRateEnv is its
// rate in lines per second.
const (
	gapSenderEnv     = "VENEUR_TEST_GAP_SENDER"
	gapSenderRateEnv = "VENEUR_TEST_GAP_SENDER_RATE"
)

// runGapSender sends workload c's datagrams to addr at the rate of
// gapSenderRateEnv until its standard input closes, then prints how many
// datagrams and lines it sent. It runs in a process of its own, so that
// it takes no time from the Go scheduler of the process under test.
func runGapSender(addr string) int {
	rate, err := strconv.Atoi(os.Getenv(gapSenderRateEnv))
	if err != nil || rate <= 0 {
		fmt.Fprintf(os.Stderr, "%s=%q: want lines per second\n", gapSenderRateEnv, os.Getenv(gapSenderRateEnv))
		return 2
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var stop atomic.Bool
	go func() {
		io.Copy(io.Discard, os.Stdin)
		stop.Store(true)
	}()
	dgs := wlcDatagrams(wlcSeries, wlcSeries)
	start := time.Now()
	sent, lines := 0, 0
	for !stop.Load() {
		due := int(time.Since(start).Seconds() * float64(rate) / wlcPerDgram)
		for ; sent < due; sent++ {
			d := dgs[sent%len(dgs)]
			conn.Write(d)
			lines += bytes.Count(d, []byte{'\n'})
		}
		time.Sleep(200 * time.Microsecond)
	}
	fmt.Printf("%d %d\n", sent, lines)
	return 0
}

// gapRecorder keeps, for one reader goroutine, the time between the
// datagrams it hands to its ingester: a reader that is not running hands
// over none, so the longest of these gaps is how long the reader was kept
// from the socket. It measures each gap twice: in wall time, and in the
// CPU time the whole process used meanwhile. With one P the second is the
// time the process's other goroutines (the flush, the workers, the GC)
// held the reader off; the first adds the time the machine's other
// processes took the CPU, which a pinned core would not share.
type gapRecorder struct {
	base    time.Time
	last    time.Duration // wall
	lastCPU time.Duration
	dgrams  atomic.Int64
	long    []gap // the gaps of at least gapKeep, in wall or CPU time
	dropped int   // long gaps past gapKeepMax
}

type gap struct{ end, wall, cpu time.Duration }

const (
	gapKeep    = 250 * time.Microsecond
	gapKeepMax = 1 << 20
)

// processCPU is the CPU time of the process so far.
func processCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

func (r *gapRecorder) packet() {
	now, cpu := time.Since(r.base), processCPU()
	if r.last != 0 {
		g := gap{now, now - r.last, cpu - r.lastCPU}
		if g.wall >= gapKeep || g.cpu >= gapKeep {
			if len(r.long) < gapKeepMax {
				r.long = append(r.long, g)
			} else {
				r.dropped++
			}
		}
	}
	r.last, r.lastCPU = now, cpu
	r.dgrams.Add(1)
}

// gapIngester records every datagram in rec before it passes it on.
type gapIngester struct {
	listen.Ingester
	rec *gapRecorder
}

func (g *gapIngester) Packet(p []byte, truncated bool) {
	g.rec.packet()
	g.Ingester.Packet(p, truncated)
}

// udpDrops reads the kernel's count of datagrams dropped by the socket
// bound to port on 127.0.0.1 (the last column of /proc/net/udp), or -1.
func udpDrops(port int) int64 {
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		return -1
	}
	defer f.Close()
	want := fmt.Sprintf("0100007F:%04X", port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 2 && fs[1] == want {
			n, err := strconv.ParseInt(fs[len(fs)-1], 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// gcCycles is how many GC cycles the process has completed.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// heapAllocs is how many bytes the process has allocated on the heap.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// gapBuckets are the upper bounds of the histogram of reader gaps that
// BenchmarkFlushReaderGap reports; the last bucket is open.
var gapBuckets = []time.Duration{time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond}

func bucketName(i int) string {
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	switch {
	case i == 0:
		return "gaps<" + ms(gapBuckets[0]) + "ms"
	case i == len(gapBuckets):
		return "gaps>=" + ms(gapBuckets[i-1]) + "ms"
	}
	return "gaps" + ms(gapBuckets[i-1]) + "-" + ms(gapBuckets[i]) + "ms"
}

// BenchmarkFlushReaderGap measures how long a flush keeps a UDP reader
// from its socket, with one P (GOMAXPROCS=1, as on one pinned core) and
// with two: a
// sender process sends workload c (100,000 series) at a steady rate to
// the real UDP listener of a server, whose ingester records the time
// between the datagrams it receives; every 2 s the server flushes an
// interval through the Datadog sink (to an API that only reads the
// bodies). Each op is one flush. It reports the longest gap between two
// datagrams while a flush ran (from its start until the API had every
// body), the histogram of the gaps of at least 1 ms during flushes per
// flush, the longest gap outside flushes (what the machine's other load
// and the ingestion cost by themselves), the kernel's drops, and the
// flush's wall time.
//
//	go test -run '^$' -bench FlushReaderGap -benchtime 5x .
//
// The procs=2 runs give the server two Ps (the reader then has one of its
// own, and the flush and the workers share the other), as on a host with
// more than one CPU for veneur; the sender process shares the machine.
func BenchmarkFlushReaderGap(b *testing.B) {
	for _, procs := range []int{1, 2} {
		for _, rate := range []int{50_000, 250_000} {
			b.Run("procs="+strconv.Itoa(procs)+"/lines/s="+strconv.Itoa(rate), func(b *testing.B) { benchReaderGap(b, rate, procs) })
		}
	}
}

func benchReaderGap(b *testing.B, rate, procs int) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	defer debug.SetGCPercent(debug.SetGCPercent(25)) // as cmd/veneur sets
	api := newDiscardAPI()
	s := newWLCServer(b, api)
	rec := &gapRecorder{base: time.Now()}
	l, err := listen.NewUDP(listen.UDPConfig{
		Address: "127.0.0.1:0", Readers: 1, ReadBuffer: DefaultReadBufferSizeBytes,
	}, func() listen.Ingester { return &gapIngester{Ingester: s.ingest.newIngester(), rec: rec} }, listen.Options{Log: s.log})
	if err != nil {
		b.Fatal(err)
	}
	if err := l.Start(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			l.Stop(ctx)
		}
	}
	defer stop()
	port := l.Addr().(*net.UDPAddr).Port

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), gapSenderEnv+"="+l.Addr().String(), gapSenderRateEnv+"="+strconv.Itoa(rate))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()

	const interval = 2 * time.Second
	now := time.Unix(1700000000, 0)
	bodies := 0
	type window struct {
		start, end time.Duration
		gcs        uint64 // GC cycles that ended during the flush
	}
	var windows []window
	var flushWall time.Duration
	// A flush lasts from its start until the API has every body.
	flush := func() window {
		var wg sync.WaitGroup
		gc0 := gcCycles()
		w := window{start: time.Since(rec.base)}
		bodies += flushWLC(b, s, now, &wg)
		t1 := time.Since(rec.base)
		wg.Wait()
		t2 := time.Since(rec.base)
		api.waitBodies(bodies)
		w.end = time.Since(rec.base)
		b.Logf("flush: collect and values %v, sinks %v, delivery %v", t1-w.start, t2-t1, w.end-t2)
		w.gcs = gcCycles() - gc0
		now = now.Add(interval)
		return w
	}
	// The first interval fills the maps and pools; its flush is not
	// counted.
	next := time.Now().Add(interval)
	time.Sleep(time.Until(next))
	flush()
	drops0 := udpDrops(port)
	allocs0, gcs0 := heapAllocs(), gcCycles()
	measured := time.Since(rec.base)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		next = next.Add(interval)
		time.Sleep(time.Until(next))
		w := flush()
		windows = append(windows, w)
		flushWall += w.end - w.start
	}
	b.StopTimer()
	allocs, gcsAll := heapAllocs()-allocs0, gcCycles()-gcs0
	drops := udpDrops(port) - drops0
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	var sentDgrams, sentLines int64
	fmt.Sscan(out.String(), &sentDgrams, &sentLines)
	// Let the reader take what is still queued, then stop it.
	deadline := time.Now().Add(5 * time.Second)
	for prev := int64(-1); time.Now().Before(deadline); {
		n := rec.dgrams.Load()
		if n == prev {
			break
		}
		prev = n
		time.Sleep(100 * time.Millisecond)
	}
	stop()

	inFlush := func(g gap) int {
		start := g.end - g.wall
		for i, w := range windows {
			if start < w.end && g.end > w.start {
				return i
			}
		}
		return -1
	}
	hist := make([]int, len(gapBuckets)+1)
	var maxFlush, maxIdle, maxFlushWall, maxIdleWall time.Duration
	perFlushMax := make([]time.Duration, len(windows))
	var gcs []uint64
	for _, w := range windows {
		gcs = append(gcs, w.gcs)
	}
	for _, g := range rec.long {
		if g.end-g.wall < measured {
			continue // the first interval's
		}
		wi := inFlush(g)
		if wi < 0 {
			maxIdle = max(maxIdle, g.cpu)
			maxIdleWall = max(maxIdleWall, g.wall)
			continue
		}
		maxFlush = max(maxFlush, g.cpu)
		maxFlushWall = max(maxFlushWall, g.wall)
		perFlushMax[wi] = max(perFlushMax[wi], g.cpu)
		i, _ := slices.BinarySearch(gapBuckets, g.cpu+1)
		hist[i]++
	}
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(maxFlush), "max-flush-gap-ms")
	b.ReportMetric(ms(maxIdle), "max-idle-gap-ms")
	b.ReportMetric(ms(maxFlushWall), "max-flush-gap-wall-ms")
	b.ReportMetric(ms(maxIdleWall), "max-idle-gap-wall-ms")
	for i := 1; i < len(hist); i++ {
		b.ReportMetric(float64(hist[i])/n, bucketName(i)+"/op")
	}
	b.ReportMetric(float64(flushWall.Milliseconds())/n, "flush-wall-ms/op")
	if sentDgrams > 0 {
		b.ReportMetric(100*float64(sentDgrams-rec.dgrams.Load())/float64(sentDgrams), "loss-%")
	}
	b.ReportMetric(float64(drops), "kernel-drops")
	b.ReportMetric(float64(allocs)/n/(1<<20), "alloc-MiB/op")
	b.ReportMetric(float64(gcsAll)/n, "gc-cycles/op")
	slices.SortFunc(rec.long, func(a, b gap) int { return int(b.cpu - a.cpu) })
	top := rec.long[:min(5, len(rec.long))]
	b.Logf("rate %d lines/s: sent %d datagrams, read %d; longest gap (CPU) per flush %v; GC cycles per flush %v; longest gaps (end, wall, CPU) %v; long gaps not kept %d",
		rate, sentDgrams, rec.dgrams.Load(), perFlushMax, gcs, top, rec.dropped)
}
