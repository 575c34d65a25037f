package veneur

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/samplers"
)

// getCardinality fetches /debug/cardinality with query (such as "?top=1").
func getCardinality(t *testing.T, s *Server, query string) cardinalityReport {
	t.Helper()
	resp, err := http.Get("http://" + s.HTTPAddr().String() + "/debug/cardinality" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /debug/cardinality%s = %d: %s", query, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var r cardinalityReport
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
	return r
}

// flushedSeries lists, sorted, the names of the values a printed flush
// holds at stamp.
func flushedSeries(out string, stamp string) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, stamp); ok {
			names = append(names, rest[:strings.IndexByte(rest, ' ')])
		}
	}
	slices.Sort(names)
	return names
}

// testIngestCap is testIngest with max_series_per_interval maxSeries.
func testIngestCap(t testing.TB, n, maxSeries int) (*workerPool, *ingest) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	p := newWorkerPool(n, maxSeries)
	return p, newIngest(p, 4096, log)
}

func stampOf(sec int64) string {
	return "flush " + time.Unix(sec, 0).UTC().Format(time.RFC3339) + " "
}

// With max_series_per_interval: 3, the first three series of an interval
// keep every sample, new series past them are dropped and counted per
// metric name, and the next interval starts with room for three again.
func TestSeriesCap(t *testing.T) {
	rec := &statstest.Recorder{}
	// One worker, so the series are created in the order of the lines.
	s, out := startServerOpts(t, testConfig(t, "num_workers: 1\nmax_series_per_interval: 3\naggregates: [max, count]\npercentiles: []\n"), Options{Stats: rec})
	defer shutdown(t, s)

	before := getCardinality(t, s, "")
	if before.MaxSeriesPerInterval != 3 || before.SeriesTotal != 0 || len(before.Top) != 0 || !before.IntervalEnd.IsZero() {
		t.Errorf("report before the first flush: %+v", before)
	}

	sendUDP(t, s.UDPAddr(),
		"a:1|c\nb:1|g\nc:1|h\n"+
			"boom:1|c|#id:1\nboom:1|c|#id:2\n"+
			"a:2|c\nb:5|g\nc:7|h\nboom:1|c|#id:1\na:4|c\nc:3|h")
	st := stampOf(1000)
	flushUntil(t, s, out, time.Unix(1000, 0), st+"a rate", st+"b gauge", st+"c.max")
	got := out.String()
	for _, want := range []string{
		st + "a rate 0.0019444444444444444 ", // (1+2+4)/3600: no sample of a known series lost
		st + "b gauge 5 ",
		st + "c.max gauge 7 ",
		st + "c.count rate 0.0008333333333333334 ", // 3/3600
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "boom") {
		t.Errorf("a series past the cap was flushed:\n%s", got)
	}
	if n := rec.Sum("worker.series_dropped_total", "cause:max_series"); n != 3 {
		t.Errorf("series_dropped_total{cause:max_series} = %d, want 3 (boom's three samples)", n)
	}

	r := getCardinality(t, s, "")
	if !r.IntervalEnd.Equal(time.Unix(1000, 0)) || r.MaxSeriesPerInterval != 3 || r.SeriesTotal != 3 || r.DroppedTotal != 3 || r.Names != 4 {
		t.Errorf("report %+v, want the interval of 1000 with 3 series, 3 drops and 4 names", r)
	}
	want := []nameCardinality{{"boom", 0, 3}, {"a", 1, 0}, {"b", 1, 0}, {"c", 1, 0}}
	if fmt.Sprint(r.Top) != fmt.Sprint(want) {
		t.Errorf("top %v, want %v", r.Top, want)
	}
	if r := getCardinality(t, s, "?top=1"); len(r.Top) != 1 || r.Top[0].Name != "boom" {
		t.Errorf("?top=1 gave %v, want boom alone", r.Top)
	}

	// The next interval has room for three series again; the one after
	// them is dropped.
	sendUDP(t, s.UDPAddr(), "d:1|c\ne:1|c\nf:1|c\ng:1|c\ng:1|c|#x:y\nd:1|c")
	st = stampOf(2000)
	flushUntil(t, s, out, time.Unix(2000, 0), st+"d rate", st+"e rate", st+"f rate")
	if names := flushedSeries(out.String(), st); strings.Join(names, ",") != "d,e,f" {
		t.Errorf("second interval flushed %v, want d, e and f", names)
	}
	if !strings.Contains(out.String(), st+"d rate 0.0005555555555555556 ") {
		t.Errorf("d lost a sample:\n%s", out.String())
	}
	if n := rec.Sum("worker.series_dropped_total", "cause:max_series"); n != 5 {
		t.Errorf("series_dropped_total = %d after two intervals, want 3+2", n)
	}
	r = getCardinality(t, s, "")
	if r.SeriesTotal != 3 || r.DroppedTotal != 2 || len(r.Top) == 0 || r.Top[0] != (nameCardinality{"g", 0, 2}) {
		t.Errorf("second report %+v, want g first with 2 drops", r)
	}
	for _, nc := range r.Top {
		if nc.Name == "boom" {
			t.Errorf("the report still lists boom from the interval before: %v", r.Top)
		}
	}
}

// The workers share one cap: with four of them running at once, 40 new
// series in one interval leave 3, whichever workers they hashed to, and
// every place is given back when the intervals are handed over.
func TestSeriesCapAcrossWorkers(t *testing.T) {
	p, g := testIngestCap(t, 4, 3)
	p.start(func() {})
	in := g.newIngester()
	for i := range 40 {
		in.Line(fmt.Appendf(nil, "n%d:1|c", i))
	}
	in.Flush()
	ivs := p.stop()
	series, workers := 0, 0
	for _, iv := range ivs {
		series += iv.nseries()
		if iv.processed > 0 {
			workers++
		}
	}
	drops, total := sumDrops(ivs)
	if series != 3 || total != 37 || len(drops) != 37 {
		t.Errorf("%d series and %d drops (%d names), want 3 and 37", series, total, len(drops))
	}
	if workers < 2 {
		t.Errorf("the keys reached %d worker(s); the test needs several", workers)
	}
	if n := p.card.limit.n.Load(); n != 0 {
		t.Errorf("%d places still taken after the intervals were handed over", n)
	}
}

// Without a cap (the default, 0) nothing is dropped, and the report still
// counts the series per name.
func TestSeriesUnlimited(t *testing.T) {
	rec := &statstest.Recorder{}
	// One worker, so that the one datagram is in one flush.
	s, out := startServerOpts(t, testConfig(t, "num_workers: 1\n"), Options{Stats: rec})
	defer shutdown(t, s)
	var lines []string
	for i := range 50 {
		lines = append(lines, fmt.Sprintf("wide:1|c|#id:%d", i))
	}
	lines = append(lines, "narrow:1|g")
	sendUDP(t, s.UDPAddr(), strings.Join(lines, "\n"))
	flushUntil(t, s, out, time.Unix(1000, 0), "narrow gauge", "wide rate 0.0002777777777777778 interval=3600 host=box tags=[id:49]")
	if n := strings.Count(out.String(), "\n"); n != 51 {
		t.Errorf("%d series flushed, want 51", n)
	}
	if names := rec.Names(); strings.Contains(strings.Join(names, ","), "series_dropped") {
		t.Errorf("self-metrics %v report drops without a cap", names)
	}
	r := getCardinality(t, s, "")
	want := []nameCardinality{{"wide", 50, 0}, {"narrow", 1, 0}}
	if r.MaxSeriesPerInterval != 0 || r.SeriesTotal != 51 || r.DroppedTotal != 0 || fmt.Sprint(r.Top) != fmt.Sprint(want) {
		t.Errorf("report %+v, want %v", r, want)
	}
}

func TestCardinalityHandler(t *testing.T) {
	s, _ := startServer(t, testConfig(t, ""))
	defer shutdown(t, s)
	base := "http://" + s.HTTPAddr().String() + "/debug/cardinality"
	for _, c := range []struct {
		method, query string
		status        int
	}{
		{"GET", "", 200},
		{"GET", "?top=1000", 200},
		{"HEAD", "", 200},
		{"POST", "", 405},
		{"DELETE", "", 405},
		{"GET", "?top=0", 400},
		{"GET", "?top=1001", 400},
		{"GET", "?top=-3", 400},
		{"GET", "?top=ten", 400},
	} {
		req, _ := http.NewRequest(c.method, base+c.query, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s = %d, want %d: %s", c.method, c.query, resp.StatusCode, c.status, body)
		}
		if c.status == 405 && resp.Header.Get("Allow") == "" {
			t.Errorf("%s: 405 without Allow", c.method)
		}
	}
}

// forwardedCounter is an imported counter of value v.
func forwardedCounter(name string, v float64, tags ...string) samplers.Forwarded {
	return samplers.Forwarded{Type: samplers.CounterMetric, Name: name, Tags: tags, Counter: v}
}

// intervalCounters maps each counter series of ivs (name and tags) to its
// value.
func intervalCounters(ivs []interval) map[string]float64 {
	out := map[string]float64{}
	for _, iv := range ivs {
		for _, r := range iv.recs {
			out[r.se.meta.Name+fmt.Sprint(r.se.meta.Tags)] = r.value
		}
	}
	return out
}

// Imported series take places under the cap like received ones; an
// import into a known series merges whatever the cap.
func TestSeriesCapCountsImports(t *testing.T) {
	p, g := testIngestCap(t, 1, 3)
	in := g.newIngester()
	in.Packet([]byte("a:1|c\nb:1|c"), false)
	in.Flush()
	if err := p.Merge([]samplers.Forwarded{
		forwardedCounter("a", 5),
		forwardedCounter("imp", 1, "k:1"),
		forwardedCounter("imp", 1, "k:2"),
		forwardedCounter("imp", 1, "k:3"),
	}); err != nil {
		t.Fatal(err)
	}
	p.start(func() {})
	ivs := p.stop()
	got := intervalCounters(ivs)
	want := map[string]float64{"a[]": 6, "b[]": 1, "imp[k:1]": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("series %v, want %v", got, want)
	}
	drops, total := sumDrops(ivs)
	if total != 2 || drops["imp"] != 2 || len(drops) != 1 {
		t.Errorf("drops %v (total %d), want imp=2", drops, total)
	}
	if ivs[0].imported != 2 {
		t.Errorf("imported %d, want 2 (a and imp k:1)", ivs[0].imported)
	}
	// The stopped workers gave every place back.
	if n := p.card.limit.n.Load(); n != 0 {
		t.Errorf("%d places still taken after the intervals were handed over", n)
	}
}

// A worker counts apart at most maxDropNames names per interval; the
// total counts every drop.
func TestSeriesCapBoundsDropNames(t *testing.T) {
	p := newWorkerPool(1, 1)
	w := p.workers[0]
	key := func(name string) []byte {
		return samplers.AppendKey(nil, &samplers.Line{Type: samplers.CounterMetric, Name: []byte(name)})
	}
	if w.lookup(1, key("kept")) == nil {
		t.Fatal("the first series was refused")
	}
	for i := range maxDropNames + 50 {
		if w.lookup(uint64(i+2), key(fmt.Sprintf("n%d", i))) != nil {
			t.Fatal("a series past the cap was created")
		}
	}
	w.lookup(2, key("n0"))
	iv := w.swap()
	drops, total := sumDrops([]interval{iv})
	if total != maxDropNames+51 || len(drops) != maxDropNames || drops["n0"] != 2 {
		t.Errorf("total %d, %d names, n0=%d; want %d, %d, 2", total, len(drops), drops["n0"], maxDropNames+51, maxDropNames)
	}
	if w.lookup(3, key("fresh")) == nil {
		t.Error("the new interval has no room after the swap")
	}
}

// The warning about drops names the top ten names by drops, most first,
// and the key to raise; an interval without drops logs nothing.
func TestSeriesCapWarning(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	rec := &statstest.Recorder{}
	f := &flusher{log: log, stats: rec, card: newCardinality(5)}
	iv := interval{seriesDropped: 0}
	f.reportDrops(sumDrops([]interval{iv}))
	if len(hook.AllEntries()) != 0 {
		t.Fatalf("logged %v without drops", hook.AllEntries())
	}
	perName := map[string]uint64{}
	for i := range 15 {
		perName[fmt.Sprintf("m%02d", i)] = uint64(i + 1)
	}
	f.reportDrops(perName, 200)
	entries := hook.AllEntries()
	if len(entries) != 1 || entries[0].Level != logrus.WarnLevel {
		t.Fatalf("entries %v, want one warning", entries)
	}
	e := entries[0]
	if !strings.Contains(e.Message, "raise max_series_per_interval") {
		t.Errorf("message %q does not name the key to raise", e.Message)
	}
	wantTop := "m14=15, m13=14, m12=13, m11=12, m10=11, m09=10, m08=9, m07=8, m06=7, m05=6"
	if e.Data["top_names"] != wantTop || e.Data["dropped"] != uint64(200) || e.Data["max_series_per_interval"] != 5 {
		t.Errorf("fields %v, want top_names %q, dropped 200, max 5", e.Data, wantTop)
	}
	if n := rec.Sum("worker.series_dropped_total", "cause:max_series"); n != 200 {
		t.Errorf("series_dropped_total = %d, want 200", n)
	}
}

// topNames keeps the first n by rank whatever the order they come in.
func TestTopNames(t *testing.T) {
	for _, n := range []int{0, 1, 3, 7, 20} {
		for _, order := range []string{"up", "down", "mixed"} {
			top := newTopNames(n, byVolume)
			for i := range 10 {
				v := i
				switch order {
				case "down":
					v = 9 - i
				case "mixed":
					v = (i * 7) % 10
				}
				top.offer(nameCardinality{Name: fmt.Sprint("x", v), Series: v / 2, Dropped: uint64(v - v/2)})
			}
			got := top.sorted()
			if len(got) != min(n, 10) {
				t.Fatalf("n=%d %s: %d kept", n, order, len(got))
			}
			for i, nc := range got {
				if want := fmt.Sprint("x", 9-i); nc.Name != want {
					t.Errorf("n=%d %s: [%d] = %s, want %s", n, order, i, nc.Name, want)
				}
			}
		}
	}
	// Equal volumes rank by name.
	top := newTopNames(2, byVolume)
	for _, name := range []string{"c", "a", "b"} {
		top.offer(nameCardinality{Name: name, Series: 1})
	}
	if got := top.sorted(); got[0].Name != "a" || got[1].Name != "b" {
		t.Errorf("ties %v, want a then b", got)
	}
}

// Under the cap, a line of a known series costs no allocation, and neither
// does a refused line of a name already counted: an explosion of new keys
// is refused at the price of a map lookup.
func TestCappedKeysDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, which allocates")
	}
	p, g := testIngestCap(t, 2, 3)
	in := g.newIngester()
	packet := []byte("c:1|c|#a,b\nh:3|h|@0.5\ns:member|s\nover:1|c|#id:1\nover:1|c|#id:2\nover:1|g\n")
	run := func() {
		in.Packet(packet, false)
		in.Flush()
		for _, w := range p.workers {
			for len(w.in) > 0 {
				w.process(<-w.in)
			}
		}
	}
	for range 100 {
		run()
	}
	if allocs := testing.AllocsPerRun(200, run); allocs != 0 {
		t.Errorf("%v allocations per datagram of known and refused keys, want 0", allocs)
	}
	var dropped uint64
	for _, w := range p.workers {
		dropped += w.cur.seriesDropped
	}
	if dropped == 0 {
		t.Error("nothing was refused: the test does not test the refusal")
	}
}

// An interval of cardinalityCheap series or more is counted per name only
// when cardinalityEvery has passed since the last one counted: the report
// stays that interval's until then. Smaller intervals are counted every
// flush.
func TestCardinalityReportEvery(t *testing.T) {
	api := newDiscardAPI()
	s := newWLCServer(t, api)
	in := s.ingest.newIngester()
	bodies := 0
	interval := func(nSeries int, at int64) cardinalityReport {
		t.Helper()
		for _, d := range wlcDatagrams(nSeries, nSeries) {
			in.Packet(d, false)
		}
		in.Flush()
		var wg sync.WaitGroup
		bodies += flushWLC(t, s, time.Unix(at, 0), &wg)
		wg.Wait()
		api.waitBodies(bodies)
		return *s.pool.card.report()
	}
	const big = cardinalityCheap + cardinalityCheap/2
	every := int64(cardinalityEvery / time.Second)
	steps := []struct {
		series int
		at     int64
		want   int64 // the interval the report must be of
	}{
		{big, 1000, 1000},
		{big, 1002, 1000},
		{big, 1000 + every - 2, 1000},
		{big, 1000 + every, 1000 + every},
		{big, 1002 + every, 1000 + every},
		{100, 1004 + every, 1004 + every},
		{100, 1006 + every, 1006 + every},
	}
	for _, st := range steps {
		r := interval(st.series, st.at)
		if !r.IntervalEnd.Equal(time.Unix(st.want, 0)) {
			t.Fatalf("after the flush of %d series at %d the report is of %v, want %d", st.series, st.at, r.IntervalEnd.Unix(), st.want)
		}
		if r.IntervalEnd.Unix() == st.at && r.SeriesTotal != st.series {
			t.Fatalf("report of %d counts %d series, want %d", st.at, r.SeriesTotal, st.series)
		}
	}
}
