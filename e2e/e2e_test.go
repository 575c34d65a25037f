package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/ssf"
)

// waitLong bounds waits for something a 1s-interval daemon does within a few
// intervals.
const waitLong = 15 * time.Second

// hour is the interval, in seconds, of the base configuration.
const hour = 3600.0

func TestCounterWithSampleRate(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, func(c config) { c["interval"] = "10s" })
	c := newClient(t, d)
	must(t, c.Count("ctr.sampled", 1, nil, 1))
	flushClient(t, c)
	// The client drops sampled lines at random, so the sampled line is sent
	// by hand: its weight is 1/0.5, contributing 6.
	sendRaw(t, d, "ctr.sampled:3|c|@0.5")
	reqs := d.stopAndCollect(t)

	// A 10s tick may fall between the two sends; the sum over all flushes
	// is what the contract fixes, and every flush carries interval 10.
	found := findSeries(reqs, "ctr.sampled")
	if len(found) == 0 {
		t.Fatalf("no series ctr.sampled; received:%s", describe(reqs))
	}
	total := 0.0
	for _, s := range found {
		total += s.Value
		checkSeries(t, s, rate(s.Value, 10))
	}
	if !approx(total, 0.7) {
		t.Errorf("ctr.sampled: value %v summed over %d flushes, want (1+3/0.5)/10 = 0.7", total, len(found))
	}
}

func TestGaugeLastValueWins(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, nil)
	c := newClient(t, d)
	for _, v := range []float64{5, -2.5, 42, 17.25} {
		must(t, c.Gauge("gauge.last", v, []string{"k:v"}, 1))
	}
	flushClient(t, c)
	reqs := d.stopAndCollect(t)
	expectSeries(t, reqs, "gauge.last", gauge(17.25, "k:v"))
}

// histoAggregates configures every aggregate and three percentiles.
func histoAggregates(c config) {
	c["aggregates"] = []string{"min", "max", "median", "avg", "count", "sum"}
	c["percentiles"] = []float64{0.5, 0.99, 0.999}
}

// histoNames are the series one histogram or timer yields under
// histoAggregates.
func histoNames(name string) []string {
	var out []string
	for _, suffix := range []string{"min", "max", "median", "avg", "count", "sum", "50percentile", "99percentile", "99.9percentile"} {
		out = append(out, name+"."+suffix)
	}
	return out
}

// checkTopPercentile checks a high percentile of a few distinct samples.
// Quantile definitions differ in interpolation (nearest rank gives the
// maximum, linear interpolation a little less), so the value must lie within
// 2% of the range below the maximum and never above it.
func checkTopPercentile(t *testing.T, reqs []apiRequest, name string, lo, hi float64, tags ...string) {
	t.Helper()
	s := onlySeries(t, reqs, name)
	checkSeries(t, s, gauge(s.Value, tags...))
	if s.Value > hi || s.Value < hi-0.02*(hi-lo) {
		t.Errorf("%s: value %v, want within [%v, %v]", name, s.Value, hi-0.02*(hi-lo), hi)
	}
}

func TestHistogramAllAggregates(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, histoAggregates)
	c := newClient(t, d)
	for _, v := range []float64{4, 1, 5, 2, 3} {
		must(t, c.Histogram("histo.all", v, []string{"shard:1"}, 1))
	}
	flushClient(t, c)
	reqs := d.stopAndCollect(t)

	expectNames(t, reqs, histoNames("histo.all")...)
	tag := "shard:1"
	expectSeries(t, reqs, "histo.all.min", gauge(1, tag))
	expectSeries(t, reqs, "histo.all.max", gauge(5, tag))
	expectSeries(t, reqs, "histo.all.sum", gauge(15, tag))
	expectSeries(t, reqs, "histo.all.avg", gauge(3, tag))
	expectSeries(t, reqs, "histo.all.median", gauge(3, tag))
	expectSeries(t, reqs, "histo.all.count", rate(5/hour, hour, tag))
	expectSeries(t, reqs, "histo.all.50percentile", gauge(3, tag))
	checkTopPercentile(t, reqs, "histo.all.99percentile", 1, 5, tag)
	checkTopPercentile(t, reqs, "histo.all.99.9percentile", 1, 5, tag)
}

func TestTimerAllAggregates(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, histoAggregates)
	c := newClient(t, d)
	for _, ms := range []int{30, 10, 20} {
		must(t, c.Timing("timer.all", time.Duration(ms)*time.Millisecond, nil, 1))
	}
	flushClient(t, c)
	reqs := d.stopAndCollect(t)

	expectNames(t, reqs, histoNames("timer.all")...)
	expectSeries(t, reqs, "timer.all.min", gauge(10))
	expectSeries(t, reqs, "timer.all.max", gauge(30))
	expectSeries(t, reqs, "timer.all.sum", gauge(60))
	expectSeries(t, reqs, "timer.all.avg", gauge(20))
	expectSeries(t, reqs, "timer.all.median", gauge(20))
	expectSeries(t, reqs, "timer.all.count", rate(3/hour, hour))
	expectSeries(t, reqs, "timer.all.50percentile", gauge(20))
	checkTopPercentile(t, reqs, "timer.all.99percentile", 10, 30)
	checkTopPercentile(t, reqs, "timer.all.99.9percentile", 10, 30)
}

func TestHistogramSampleRateWeightsCount(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, func(c config) { c["percentiles"] = []float64{} })
	// Sampled lines by hand: the client would drop them at random.
	sendRaw(t, d, "histo.weighted:2|h|@0.25\nhisto.weighted:8|h")
	reqs := d.stopAndCollect(t)
	expectNames(t, reqs, "histo.weighted.min", "histo.weighted.max", "histo.weighted.count")
	expectSeries(t, reqs, "histo.weighted.min", gauge(2))
	expectSeries(t, reqs, "histo.weighted.max", gauge(8))
	expectSeries(t, reqs, "histo.weighted.count", rate((4+1)/hour, hour))
}

func TestDefaultAggregates(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	// aggregates is left out on purpose; percentiles stays [0.5].
	d := startDaemon(t, fake, nil)
	c := newClient(t, d)
	for _, v := range []float64{7, 3, 9} {
		must(t, c.Histogram("histo.default", v, nil, 1))
	}
	flushClient(t, c)
	reqs := d.stopAndCollect(t)
	expectNames(t, reqs, "histo.default.min", "histo.default.max", "histo.default.count", "histo.default.50percentile")
	expectSeries(t, reqs, "histo.default.min", gauge(3))
	expectSeries(t, reqs, "histo.default.max", gauge(9))
	expectSeries(t, reqs, "histo.default.count", rate(3/hour, hour))
	expectSeries(t, reqs, "histo.default.50percentile", gauge(7))
}

func TestSetCardinality(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, nil)
	c := newClient(t, d)
	for _, m := range []string{"alice", "bob", "carol", "alice", "bob", "dave", "alice"} {
		must(t, c.Set("set.users", m, []string{"team:a"}, 1))
	}
	must(t, c.Set("set.single", "only", nil, 1))
	flushClient(t, c)
	reqs := d.stopAndCollect(t)
	expectNames(t, reqs, "set.users", "set.single")
	expectSeries(t, reqs, "set.users", gauge(4, "team:a"))
	expectSeries(t, reqs, "set.single", gauge(1))
}

func TestConfigTagsAppendedAfterSortedLineTags(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	// Config tags deliberately out of order: config order must be kept.
	d := startDaemon(t, fake, func(c config) { c["tags"] = []string{"zz:cfg", "aa:cfg"} })
	c := newClient(t, d)
	line := []string{"mm:3", "bb:4", "xx:1"}
	must(t, c.Count("tags.counter", 2, line, 1))
	must(t, c.Gauge("tags.gauge", 1, line, 1))
	must(t, c.Histogram("tags.histo", 1, line, 1))
	must(t, c.Set("tags.set", "m", line, 1))
	must(t, c.Gauge("tags.none", 1, nil, 1))
	flushClient(t, c)
	reqs := d.stopAndCollect(t)
	wantTags := []string{"bb:4", "mm:3", "xx:1", "zz:cfg", "aa:cfg"}
	expectSeries(t, reqs, "tags.counter", rate(2/hour, hour, wantTags...))
	expectSeries(t, reqs, "tags.gauge", gauge(1, wantTags...))
	expectSeries(t, reqs, "tags.histo.max", gauge(1, wantTags...))
	expectSeries(t, reqs, "tags.histo.count", rate(1/hour, hour, wantTags...))
	expectSeries(t, reqs, "tags.set", gauge(1, wantTags...))
	expectSeries(t, reqs, "tags.none", gauge(1, "zz:cfg", "aa:cfg"))
}

func TestHostAndDeviceTagsOverride(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, func(c config) { c["tags"] = []string{"env:e2e"} })
	c := newClient(t, d)
	must(t, c.Gauge("over.host", 1, []string{"host:h1"}, 1))
	must(t, c.Gauge("over.device", 2, []string{"device:d1"}, 1))
	must(t, c.Gauge("over.both", 3, []string{"device:d2", "host:h2"}, 1))
	must(t, c.Count("over.mixed", 4, []string{"zz:9", "host:h3", "aa:1", "device:d3"}, 1))
	must(t, c.Histogram("over.histo", 5, []string{"host:h4", "k:v"}, 1))
	must(t, c.Gauge("over.none", 6, []string{"k:v"}, 1))
	flushClient(t, c)
	reqs := d.stopAndCollect(t)

	cases := []struct {
		name string
		want want
	}{
		{"over.host", want{Type: "gauge", Value: 1, Tags: []string{"env:e2e"}, Host: "h1"}},
		{"over.device", want{Type: "gauge", Value: 2, Tags: []string{"env:e2e"}, Host: hostName, Device: "d1"}},
		{"over.both", want{Type: "gauge", Value: 3, Tags: []string{"env:e2e"}, Host: "h2", Device: "d2"}},
		{"over.mixed", want{Type: "rate", Value: 4 / hour, Interval: hour, Tags: []string{"aa:1", "zz:9", "env:e2e"}, Host: "h3", Device: "d3"}},
		{"over.histo.max", want{Type: "gauge", Value: 5, Tags: []string{"k:v", "env:e2e"}, Host: "h4"}},
		{"over.histo.count", want{Type: "rate", Value: 1 / hour, Interval: hour, Tags: []string{"k:v", "env:e2e"}, Host: "h4"}},
		{"over.none", want{Type: "gauge", Value: 6, Tags: []string{"k:v", "env:e2e"}, Host: hostName}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectSeries(t, reqs, tc.name, tc.want)
		})
	}
}

func TestTagOrderDoesNotSplitSeries(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, nil)
	c := newClient(t, d)
	must(t, c.Count("order.c", 1, []string{"x:1", "y:2"}, 1))
	must(t, c.Count("order.c", 1, []string{"y:2", "x:1"}, 1))
	must(t, c.Gauge("order.g", 1, []string{"b:1", "a:1", "c:1"}, 1))
	must(t, c.Gauge("order.g", 2, []string{"c:1", "b:1", "a:1"}, 1))
	must(t, c.Set("order.s", "m1", []string{"q:1", "p:1"}, 1))
	must(t, c.Set("order.s", "m2", []string{"p:1", "q:1"}, 1))
	flushClient(t, c)
	reqs := d.stopAndCollect(t)
	expectNames(t, reqs, "order.c", "order.g", "order.s")
	expectSeries(t, reqs, "order.c", rate(2/hour, hour, "x:1", "y:2"))
	expectSeries(t, reqs, "order.g", gauge(2, "a:1", "b:1", "c:1"))
	expectSeries(t, reqs, "order.s", gauge(2, "p:1", "q:1"))
}

func TestMagicTagsStripped(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, func(c config) { c["percentiles"] = []float64{} })
	c := newClient(t, d)
	must(t, c.Count("magic.local", 1, []string{"veneurlocalonly", "z:1"}, 1))
	must(t, c.Count("magic.global", 2, []string{"veneurglobalonly"}, 1))
	must(t, c.Gauge("magic.gauge", 3, []string{"a:1", "veneurlocalonly"}, 1))
	must(t, c.Histogram("magic.histo", 4, []string{"veneurlocalonly"}, 1))
	must(t, c.Set("magic.set", "m", []string{"veneurglobalonly", "b:2"}, 1))
	flushClient(t, c)
	reqs := d.stopAndCollect(t)
	expectNames(t, reqs, "magic.local", "magic.global", "magic.gauge",
		"magic.histo.min", "magic.histo.max", "magic.histo.count", "magic.set")
	expectSeries(t, reqs, "magic.local", rate(1/hour, hour, "z:1"))
	expectSeries(t, reqs, "magic.global", rate(2/hour, hour))
	expectSeries(t, reqs, "magic.gauge", gauge(3, "a:1"))
	expectSeries(t, reqs, "magic.histo.min", gauge(4))
	expectSeries(t, reqs, "magic.histo.max", gauge(4))
	expectSeries(t, reqs, "magic.histo.count", rate(1/hour, hour))
	expectSeries(t, reqs, "magic.set", gauge(1, "b:2"))
}

func TestChunkedConcurrentBodies(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	// Every request waits until 4 are in flight together (at most 2s), so a
	// daemon that posted the bodies one after another is caught.
	fake.holdUntilConcurrent(4, 2*time.Second)
	d := startDaemon(t, fake, func(c config) { c["flush_max_per_body"] = 3 })
	c := newClient(t, d)
	var names []string
	for i := range 10 {
		name := fmt.Sprintf("chunk.g%02d", i)
		names = append(names, name)
		must(t, c.Gauge(name, float64(i), nil, 1))
	}
	flushClient(t, c)
	reqs := d.stopAndCollect(t)

	if len(reqs) != 4 {
		t.Errorf("got %d bodies, want 4 (10 series, flush_max_per_body 3):%s", len(reqs), describe(reqs))
	}
	total := 0
	for i, r := range reqs {
		total += len(r.Series)
		if len(r.Series) > 3 {
			t.Errorf("body %d holds %d series, want at most 3", i, len(r.Series))
		}
	}
	if total != 10 {
		t.Errorf("got %d series over all bodies, want 10", total)
	}
	expectNames(t, reqs, names...)
	for i, name := range names {
		expectSeries(t, reqs, name, gauge(float64(i)))
	}
	if got := fake.peakInFlight(); got != len(reqs) {
		t.Errorf("at most %d of the %d bodies were in flight at once, want all (bodies of one flush are POSTed concurrently)", got, len(reqs))
	}
}

func TestMetricsExpireEveryFlush(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, func(c config) { c["interval"] = "1s" })
	c := newClient(t, d)

	must(t, c.Count("expire.a", 3, nil, 1))
	must(t, c.Gauge("expire.ag", 8, nil, 1))
	flushClient(t, c)
	firstA, reqs := fake.waitForSeries(t, waitLong, "expire.a")
	checkSeries(t, onlySeries(t, reqs[firstA:firstA+1], "expire.a"), rate(3, 1))

	must(t, c.Gauge("expire.b", 1, nil, 1))
	flushClient(t, c)
	firstB, _ := fake.waitForSeries(t, waitLong, "expire.b")
	d.terminate(t, syscall.SIGTERM)
	reqs = fake.snapshot()
	if firstB <= firstA {
		t.Errorf("expire.b arrived in request %d, not after expire.a's request %d", firstB, firstA)
	}
	for i, r := range reqs[firstA+1:] {
		for _, s := range r.Series {
			if s.Metric == "expire.a" || s.Metric == "expire.ag" {
				t.Errorf("request %d after the first flush carries %s again (metrics expire every flush, no zeros): %s", firstA+1+i, s.Metric, s)
			}
		}
	}
	for _, name := range []string{"expire.a", "expire.ag", "expire.b"} {
		if n := len(findSeries(reqs, name)); n != 1 {
			t.Errorf("%s sent %d times up to exit, want once:%s", name, n, describe(reqs))
		}
	}
}

func TestGoodAndBadLinesInOneDatagram(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, nil)
	lines := []string{
		"good.c:2|c",
		"bad.nocolon",
		":1|c",
		"bad.notype:1",
		"bad.emptytype:1|",
		"bad.unknowntype:1|x",
		"bad.value:abc|c",
		"bad.nan:NaN|g",
		"bad.inf:Inf|g",
		"bad.neginf:-Inf|h",
		"bad.rate0:1|c|@0",
		"bad.rate2:1|c|@2",
		"bad.rateneg:1|c|@-0.5",
		"bad.twice.rate:1|c|@0.5|@0.5",
		"bad.twice.tags:1|c|#a:1|#b:2",
		"good.g:7.5|g|#k:v",
		"good.c:3|c",
		"good.h:4|h",
		"good.s:x|s",
	}
	sendRaw(t, d, strings.Join(lines, "\n"))
	reqs := d.stopAndCollect(t)
	expectNames(t, reqs, "good.c", "good.g", "good.h.min", "good.h.max", "good.h.count", "good.h.50percentile", "good.s")
	expectSeries(t, reqs, "good.c", rate(5/hour, hour))
	expectSeries(t, reqs, "good.g", gauge(7.5, "k:v"))
	expectSeries(t, reqs, "good.h.min", gauge(4))
	expectSeries(t, reqs, "good.h.max", gauge(4))
	expectSeries(t, reqs, "good.h.count", rate(1/hour, hour))
	expectSeries(t, reqs, "good.h.50percentile", gauge(4))
	expectSeries(t, reqs, "good.s", gauge(1))
}

func TestNewerProtocolFieldsIgnored(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, nil)
	sendRaw(t, d,
		"new.c:2|c|c:4f9a1c0e2b7d",
		"new.g:5|g|T1700000000",
		"new.h:3|h|#a:b|c:ci-1234|T1700000000|card:high",
		"new.s:m|s|e:it-false,cn-web,pu-1234|card:low",
		"new.rate:1|c|@0.5|#z:1|c:abc|card:orchestrator",
	)
	reqs := d.stopAndCollect(t)
	expectNames(t, reqs, "new.c", "new.g", "new.h.min", "new.h.max", "new.h.count", "new.h.50percentile", "new.s", "new.rate")
	expectSeries(t, reqs, "new.c", rate(2/hour, hour))
	expectSeries(t, reqs, "new.g", gauge(5))
	expectSeries(t, reqs, "new.h.max", gauge(3, "a:b"))
	expectSeries(t, reqs, "new.h.count", rate(1/hour, hour, "a:b"))
	expectSeries(t, reqs, "new.s", gauge(1))
	expectSeries(t, reqs, "new.rate", rate(2/hour, hour, "z:1"))
}

// metric_max_length applies to each line of a datagram: a longer line is
// skipped, its neighbours count. A datagram longer than max_datagram_bytes
// is cut: its complete lines before the cut count, the cut one does not.
func TestLineAndDatagramLimits(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	const maxLine, maxDatagram = 64, 128
	d := startDaemon(t, fake, func(c config) {
		c["metric_max_length"] = maxLine
		c["max_datagram_bytes"] = maxDatagram
	})
	long := "ov.long:5|c|#k:" + strings.Repeat("v", 60)
	within := "ov.one:1|c\nov.two:2|g\n" + long + "\nov.after:1|c"
	// The cut falls inside this line's tag: its prefix up to the cut
	// would itself parse as a valid counter if the daemon parsed it.
	head := "ov.a:1|c\nov.b:1|c\nov.c:1|c\nov.d:1|c\nov.e:1|c\nov.f:1|c\nov.g:1|c\nov.h:1|c\nov.i:1|c\n"
	cut := head + "ov.cut:5|c|#k:" + strings.Repeat("w", 40) + "\nov.lost:1|c"
	if len(long) <= maxLine || len(within) > maxDatagram || len(head)+len("ov.cut:5|c|#k:w") > maxDatagram || len(cut) <= maxDatagram {
		t.Fatalf("test datagrams do not fit the limits %d and %d", maxLine, maxDatagram)
	}
	sendRaw(t, d, within, cut, "ov.small:4|c")
	reqs := d.stopAndCollect(t)
	expectNames(t, reqs, "ov.one", "ov.two", "ov.after", "ov.a", "ov.b", "ov.c", "ov.d", "ov.e", "ov.f", "ov.g", "ov.h", "ov.i", "ov.small")
	expectSeries(t, reqs, "ov.one", rate(1/hour, hour))
	expectSeries(t, reqs, "ov.two", gauge(2))
	expectSeries(t, reqs, "ov.after", rate(1/hour, hour))
	expectSeries(t, reqs, "ov.small", rate(4/hour, hour))
}

func TestShutdownDrainsSocket(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("pausing the daemon relies on /proc")
	}
	fake := newFakeDD(t)
	d := startDaemon(t, fake, func(c config) { c["num_readers"] = 2 })
	// One metric per datagram. The daemon is stopped while they are sent,
	// so all of them sit in its socket buffer when SIGTERM arrives. 1000
	// small datagrams take about a fifth of the 2 MiB receive buffer.
	c := newClient(t, d, statsd.WithMaxMessagesPerPayload(1))
	d.pause(t)
	const n = 1000
	for range n {
		must(t, c.Incr("drain.c", nil, 1))
	}
	flushClient(t, c)
	reqs := d.stopAndCollect(t)
	expectSeries(t, reqs, "drain.c", rate(n/hour, hour))
}

func TestSIGINTFlushesAndExitsZero(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, nil)
	c := newClient(t, d)
	must(t, c.Gauge("sigint.g", 11, nil, 1))
	flushClient(t, c)
	d.terminate(t, syscall.SIGINT)
	expectSeries(t, fake.snapshot(), "sigint.g", gauge(11))
}

func TestNoAPIHostnamePrintsToStdout(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil, nil)
	c := newClient(t, d)
	must(t, c.Gauge("stdout.only.gauge", 12, nil, 1))
	must(t, c.Count("stdout.only.counter", 1, nil, 1))
	flushClient(t, c)
	d.terminate(t, syscall.SIGTERM)
	out := d.stdout.String()
	for _, name := range []string{"stdout.only.gauge", "stdout.only.counter"} {
		if !strings.Contains(out, name) {
			t.Errorf("stdout after SIGTERM lacks %q (api_hostname \"\" prints flushes to stdout)", name)
		}
	}
}

// runVeneur runs the binary with args to completion and returns its exit
// code and stderr.
func runVeneur(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binPath(), args...)
	var stderr, stdout syncBuffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("running veneur %q: %v", args, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("veneur %q still running after %v; killed it. stderr:\n%s", args, stopTimeout, stderr.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("veneur %q stderr:\n%s\nstdout:\n%s", args, stderr.String(), stdout.String())
		}
	})
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// writeRawConfig writes YAML text as a config file.
func writeRawConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "veneur.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatalf("writing config: %v", err)
	}
	return path
}

// validConfigYAML is a complete, valid config in YAML text.
func validConfigYAML(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf(`udp_address: %q
http_address: %q
api_hostname: "http://127.0.0.1:1"
key: %q
interval: "10s"
hostname: %q
tags: ["env:e2e"]
percentiles: [0.5, 0.99]
aggregates: [min, max, count]
num_workers: 2
num_readers: 1
metric_max_length: 4096
flush_max_per_body: 100
read_buffer_size_bytes: 1048576
stats_address: ""
forward_address: ""
`, freeUDPAddr(t), freeTCPAddr(t), apiKey, hostName)
}

// badConfigs each break one key; the daemon must name it.
func badConfigs(t *testing.T) []struct{ name, key, yaml string } {
	valid := validConfigYAML(t)
	return []struct{ name, key, yaml string }{
		{"misspelt key", "intervall", strings.Replace(valid, "interval:", "intervall:", 1)},
		{"unknown key", "udp_adress", valid + "udp_adress: \"127.0.0.1:1\"\n"},
		{"bad duration", "interval", strings.Replace(valid, `interval: "10s"`, `interval: "ten seconds"`, 1)},
		{"interval under 1s", "allow_short_interval", strings.Replace(valid, `interval: "10s"`, `interval: "200ms"`, 1)},
		{"api_hostname without key", "key is empty", strings.Replace(valid, fmt.Sprintf("key: %q\n", apiKey), "", 1)},
	}
}

func TestValidateFlag(t *testing.T) {
	t.Parallel()
	t.Run("valid config exits 0", func(t *testing.T) {
		t.Parallel()
		code, stderr := runVeneur(t, "-f", writeRawConfig(t, validConfigYAML(t)), "-validate")
		if code != 0 {
			t.Errorf("veneur -validate on a valid config: exit %d, want 0; stderr:\n%s", code, stderr)
		}
	})
	for _, bc := range badConfigs(t) {
		t.Run(bc.name+" exits 1", func(t *testing.T) {
			t.Parallel()
			code, stderr := runVeneur(t, "-f", writeRawConfig(t, bc.yaml), "-validate")
			if code != 1 {
				t.Errorf("veneur -validate: exit %d, want 1", code)
			}
			if !strings.Contains(stderr, bc.key) {
				t.Errorf("veneur -validate: stderr does not name %q:\n%s", bc.key, stderr)
			}
		})
	}
}

func TestBadConfigAtStart(t *testing.T) {
	t.Parallel()
	for _, bc := range badConfigs(t) {
		t.Run(bc.name, func(t *testing.T) {
			t.Parallel()
			code, stderr := runVeneur(t, "-f", writeRawConfig(t, bc.yaml))
			if code != 1 {
				t.Errorf("veneur with a bad config: exit %d, want 1", code)
			}
			if !strings.Contains(stderr, bc.key) {
				t.Errorf("veneur with a bad config: stderr does not name %q:\n%s", bc.key, stderr)
			}
		})
	}
}

// DogStatsD over TCP: lines split across writes count, an unterminated
// tail does not, and SIGTERM processes what an open connection has sent.
func TestTCPLines(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	var tcpAddr string
	d := startDaemon(t, fake, func(c config) {
		tcpAddr = freeTCPAddr(t)
		c["tcp_address"] = tcpAddr
	})
	conn, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatalf("dialing %s: %v", tcpAddr, err)
	}
	defer conn.Close()
	const n = 5000
	for _, part := range []string{
		strings.Repeat("tcp.c:1|c|#via:tcp\n", n),
		"tcp.g:5", "|g\n",
		"tcp.cut:1|c",
	} {
		if _, err := conn.Write([]byte(part)); err != nil {
			t.Fatalf("writing to %s: %v", tcpAddr, err)
		}
	}
	reqs := d.stopAndCollect(t)
	expectSeries(t, reqs, "tcp.c", rate(n/hour, hour, "via:tcp"))
	expectSeries(t, reqs, "tcp.g", gauge(5))
	if s := findSeries(reqs, "tcp.cut"); len(s) != 0 {
		t.Errorf("the unterminated line was flushed: %v", s)
	}
}

// A local veneur forwards to a global one, over /import (forward_address
// http://) and over gRPC (grpc://, to the global's grpc_address): the
// local publishes host-level parts, the global the fleet-wide ones,
// nothing twice, with the same values over both. Both are real binaries;
// the metrics come from datadog-go.
func TestLocalForwardsToGlobal(t *testing.T) {
	t.Parallel()
	for _, transport := range []string{"http", "grpc"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			gfake, lfake := newFakeDD(t), newFakeDD(t)
			var grpcAddr string
			global := startDaemon(t, gfake, func(c config) {
				c["hostname"] = "global-veneur"
				c["aggregates"] = []string{"min", "max", "count"}
				grpcAddr = freeTCPAddr(t)
				c["grpc_address"] = grpcAddr
			})
			forwardTo := "http://" + global.httpAddr
			if transport == "grpc" {
				forwardTo = "grpc://" + grpcAddr
			}
			local := startDaemon(t, lfake, func(c config) {
				c["forward_address"] = forwardTo
				c["aggregates"] = []string{"min", "max", "count"}
			})
			c := newClient(t, local)
			for _, v := range []float64{10, 20, 30} {
				must(t, c.Timing("fwd.lat", time.Duration(v)*time.Millisecond, []string{"svc:a"}, 1))
			}
			must(t, c.Set("fwd.users", "alice", nil, 1))
			must(t, c.Set("fwd.users", "bob", nil, 1))
			must(t, c.Count("fwd.global", 4, []string{"veneurglobalonly"}, 1))
			must(t, c.Count("fwd.local", 1, nil, 1))
			flushClient(t, c)

			lreqs := local.stopAndCollect(t) // its last flush forwards before it exits
			greqs := global.stopAndCollect(t)

			expectNames(t, lreqs, "fwd.lat.count", "fwd.lat.max", "fwd.lat.min", "fwd.local")
			expectSeries(t, lreqs, "fwd.lat.max", gauge(30, "svc:a"))
			expectNames(t, greqs, "fwd.global", "fwd.lat.50percentile", "fwd.users")
			expectSeries(t, greqs, "fwd.lat.50percentile", want{Type: "gauge", Value: 20, Tags: []string{"svc:a"}, Host: "global-veneur"})
			expectSeries(t, greqs, "fwd.users", want{Type: "gauge", Value: 2, Host: "global-veneur"})
			expectSeries(t, greqs, "fwd.global", want{Type: "rate", Value: 4 / hour, Interval: hour, Host: "global-veneur"})
		})
	}
}

// Events and service checks sent with datadog-go reach Datadog's event
// and check_run APIs with their fields, the default host and config tags.
func TestEventsAndServiceChecks(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, func(c config) { c["tags"] = []string{"env:e2e"} })
	c := newClient(t, d)
	must(t, c.Event(&statsd.Event{
		Title: "Deploy", Text: "v42 is out\nall green", Timestamp: time.Unix(1700000000, 0),
		AggregationKey: "deploys", Priority: statsd.Low, SourceTypeName: "ci", AlertType: statsd.Success,
		Tags: []string{"svc:api"},
	}))
	must(t, c.ServiceCheck(&statsd.ServiceCheck{
		Name: "db.up", Status: statsd.Critical, Timestamp: time.Unix(1700000001, 0), Hostname: "db1",
		Message: "primary down", Tags: []string{"role:primary"},
	}))
	flushClient(t, c)
	d.stopAndCollect(t)
	events, checks := fake.eventsAndChecks()
	if len(events) != 1 || len(checks) != 1 {
		t.Fatalf("%d events and %d checks, want 1 and 1: %v %v", len(events), len(checks), events, checks)
	}
	e := events[0]
	for k, want := range map[string]any{
		"title": "Deploy", "text": "v42 is out\nall green", "date_happened": 1700000000.0, "host": hostName,
		"aggregation_key": "deploys", "priority": "low", "source_type_name": "ci", "alert_type": "success",
	} {
		if e[k] != want {
			t.Errorf("event %s = %v, want %v", k, e[k], want)
		}
	}
	if fmt.Sprint(e["tags"]) != "[svc:api env:e2e]" {
		t.Errorf("event tags %v, want [svc:api env:e2e]", e["tags"])
	}
	ch := checks[0]
	for k, want := range map[string]any{
		"check": "db.up", "status": 2.0, "timestamp": 1700000001.0, "host_name": "db1", "message": "primary down",
	} {
		if ch[k] != want {
			t.Errorf("check %s = %v, want %v", k, ch[k], want)
		}
	}
	if fmt.Sprint(ch["tags"]) != "[role:primary env:e2e]" {
		t.Errorf("check tags %v, want [role:primary env:e2e]", ch["tags"])
	}
}

// SSF over UDP to the real binary: the span's metric reaches the series
// API and the span the trace agent.
func TestSSFSpan(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	traces := make(chan []byte, 4)
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		traces <- b
	}))
	defer agent.Close()
	var traceAddr string
	d := startDaemon(t, fake, func(c config) {
		traceAddr = freeUDPAddr(t)
		c["trace_address"] = traceAddr
		c["trace_api_address"] = agent.URL
	})
	span := &ssf.SSFSpan{
		TraceId: 1, Id: 2, StartTimestamp: 1700000000000000000, EndTimestamp: 1700000000000000500,
		Service: "shop", Name: "checkout",
		Metrics: []*ssf.SSFSample{{Metric: ssf.SSFSample_COUNTER, Name: "ssf.orders", Value: 2, Tags: map[string]string{"shop": "eu"}}},
	}
	b, err := proto.Marshal(span)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", traceAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	reqs := d.stopAndCollect(t)
	expectSeries(t, reqs, "ssf.orders", rate(2/hour, hour, "shop:eu"))
	select {
	case body := <-traces:
		if !strings.Contains(string(body), `"service":"shop"`) || !strings.Contains(string(body), `"name":"checkout"`) || !strings.Contains(string(body), `"duration":500`) {
			t.Errorf("trace agent got %s", body)
		}
	default:
		t.Error("no spans reached the trace agent before the daemon exited")
	}
}
