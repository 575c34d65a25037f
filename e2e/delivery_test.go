package e2e

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// accepted counts, per series name, the requests that carried it and that
// the stand-in answered with 2xx.
func accepted(reqs []apiRequest) map[string]int {
	out := map[string]int{}
	for _, r := range reqs {
		if r.Status/100 != 2 {
			continue
		}
		for _, s := range r.Series {
			out[s.Metric]++
		}
	}
	return out
}

// attempts lists, in order, the requests that carried name.
func attempts(reqs []apiRequest, name string) []apiRequest {
	var out []apiRequest
	for _, r := range reqs {
		for _, s := range r.Series {
			if s.Metric == name {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// When the API fails for a while, each flush made meanwhile is delivered
// once it recovers: exactly once, in order; a body it refuses with 400 is
// dropped, not retried.
func TestAPIFailuresAreRetried(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		fail func(f *fakeDD)
		// failed is how many failed attempts carry the first gauge.
		failed int
		// dropped: the first gauge is never accepted.
		dropped bool
		log     *regexp.Regexp
	}{
		{"500 three times", func(f *fakeDD) { f.failNext(3, http.StatusInternalServerError, "") }, 3, false, regexp.MustCompile(`retrying in`)},
		{"429 with Retry-After", func(f *fakeDD) { f.failNext(2, http.StatusTooManyRequests, "1") }, 2, false, regexp.MustCompile(`retrying in 1s`)},
		{"hang", func(f *fakeDD) { f.hangNext(2) }, 2, false, regexp.MustCompile(`retrying in`)},
		{"400", func(f *fakeDD) { f.failNext(1, http.StatusBadRequest, "") }, 1, true, regexp.MustCompile(`dropped \(rejected_4xx\)`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake := newFakeDD(t)
			tc.fail(fake)
			d := startDaemon(t, fake, func(c config) { c["interval"] = "1s" })
			c := newClient(t, d)
			errMark, outMark := d.outputLen()
			// Three gauges, each in a flush of its own: the next one is
			// sent once the API has seen the one before.
			names := []string{"retry.g0", "retry.g1", "retry.g2"}
			for i, name := range names {
				must(t, c.Gauge(name, float64(i+1), nil, 1))
				flushClient(t, c)
				fake.waitForSeries(t, waitLong, name)
			}
			d.waitOutput(t, waitLong, errMark, outMark, tc.log)
			fake.waitFor(t, waitLong, "every gauge but a refused one accepted", func(reqs []apiRequest) bool {
				got := accepted(reqs)
				return got["retry.g1"] > 0 && got["retry.g2"] > 0 && (tc.dropped || got["retry.g0"] > 0)
			})
			reqs := d.stopAndCollect(t)
			got := accepted(reqs)
			for i, name := range names {
				want := 1
				if i == 0 && tc.dropped {
					want = 0
				}
				if got[name] != want {
					t.Errorf("%s accepted %d times, want %d", name, got[name], want)
				}
			}
			first := attempts(reqs, "retry.g0")
			if len(first)-got["retry.g0"] != tc.failed {
				t.Errorf("retry.g0 failed %d times, want %d:\n%s", len(first)-got["retry.g0"], tc.failed, describe(reqs))
			}
			// Order: no attempt of g1 before g0 was settled.
			if a := attempts(reqs, "retry.g1"); len(a) > 0 && a[0].At.Before(first[len(first)-1].At) {
				t.Errorf("retry.g1 was sent before retry.g0's last attempt:\n%s", describe(reqs))
			}
			if tc.name == "429 with Retry-After" {
				for i := 1; i < len(first); i++ {
					if gap := first[i].At.Sub(first[i-1].At); gap < 900*time.Millisecond {
						t.Errorf("attempt %d came %v after the one before, within the Retry-After of 1s", i+1, gap)
					}
				}
			}
		})
	}
}

// UDP lines sent while the API is down are all counted once it is back:
// a retry never blocks ingestion.
func TestOutageLosesNoLines(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	fake.setStatus(http.StatusServiceUnavailable)
	d := startDaemon(t, fake, func(c config) { c["interval"] = "1s" })
	c := newClient(t, d)
	const rounds, perRound = 3, 200
	for r := range rounds {
		for range perRound {
			must(t, c.Incr("outage.count", nil, 1))
		}
		flushClient(t, c)
		// Each round in a flush of its own, while the API fails.
		fake.waitFor(t, waitLong, fmt.Sprintf("round %d reaching the API", r), func(reqs []apiRequest) bool {
			return len(attempts(reqs, "outage.count")) > r
		})
	}
	if code, err := d.health(); err != nil || code != http.StatusOK {
		t.Errorf("/healthcheck during the outage: status %d, error %v; want 200", code, err)
	}
	fake.setStatus(http.StatusAccepted)
	reqs := d.stopAndCollect(t)
	var total float64
	for _, r := range reqs {
		if r.Status/100 != 2 {
			continue
		}
		for _, s := range r.Series {
			if s.Metric == "outage.count" {
				total += s.Value * s.Interval
			}
		}
	}
	if total != rounds*perRound {
		t.Errorf("outage.count summed to %v after the outage, want %d:\n%s", total, rounds*perRound, describe(reqs))
	}
}

// An interval larger than what the API takes in one interval is delivered
// whole, in bodies of flush_max_per_body series, at 50 ms per body.
func TestSlowAPIGetsWholeFlush(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	fake.setDelay(50 * time.Millisecond)
	d := startDaemon(t, fake, func(c config) {
		c["flush_max_per_body"] = 500
		c["flush_max_concurrency"] = 2
	})
	const n = 20_000
	var datagrams []string
	for i := 0; i < n; i += 25 {
		var b []byte
		for j := i; j < i+25 && j < n; j++ {
			b = fmt.Appendf(b, "slow.s%d:1|c\n", j)
		}
		datagrams = append(datagrams, string(b))
	}
	for i := 0; i < len(datagrams); i += 100 {
		sendRaw(t, d, datagrams[i:min(i+100, len(datagrams))]...)
	}
	reqs := d.stopAndCollect(t)
	got := accepted(reqs)
	if len(got) != n {
		t.Errorf("%d distinct series accepted, want %d (in %d requests)", len(got), n, len(reqs))
	}
	for name, k := range got {
		if k != 1 {
			t.Errorf("%s accepted %d times", name, k)
		}
	}
}

// sumRate adds up value × interval of the accepted series called name: the
// count a rate series stands for.
func sumRate(reqs []apiRequest, name string) float64 {
	var total float64
	for _, r := range reqs {
		if r.Status/100 != 2 {
			continue
		}
		for _, s := range r.Series {
			if s.Metric == name {
				total += s.Value * s.Interval
			}
		}
	}
	return total
}

// A global that is down for three intervals and then back gets what the
// local forwarded meanwhile: global counters sum exactly, and the set and
// the percentiles of those intervals are published.
func TestGlobalDownThenBack(t *testing.T) {
	t.Parallel()
	gfake, lfake := newFakeDD(t), newFakeDD(t)
	gaddr := freeTCPAddr(t)
	globalCfg := func(c config) {
		c["http_address"] = gaddr
		c["hostname"] = "global-veneur"
		c["interval"] = "1s"
	}
	global := startDaemon(t, gfake, globalCfg)
	local := startDaemon(t, lfake, func(c config) {
		c["forward_address"] = "http://" + gaddr
		c["interval"] = "1s"
	})
	c := newClient(t, local)
	must(t, c.Count("down.hits", 10, []string{"veneurglobalonly"}, 1))
	flushClient(t, c)
	gfake.waitFor(t, waitLong, "the first forward published", func(reqs []apiRequest) bool {
		return sumRate(reqs, "down.hits") == 10
	})
	global.terminate(t, syscall.SIGTERM)

	// Three intervals with the global down, one second apart so that
	// each lands in a flush of its own.
	for i := range 3 {
		must(t, c.Count("down.hits", 10, []string{"veneurglobalonly"}, 1))
		must(t, c.Set("down.users", fmt.Sprintf("user%d", i), nil, 1))
		must(t, c.Timing("down.lat", time.Duration(10*(i+1))*time.Millisecond, nil, 1))
		flushClient(t, c)
		time.Sleep(time.Second)
	}

	startDaemon(t, gfake, globalCfg) // back, on the same address
	reqs := gfake.waitFor(t, waitLong, "the forwards of the outage published", func(reqs []apiRequest) bool {
		return sumRate(reqs, "down.hits") >= 40 && len(findSeries(reqs, "down.users")) > 0 && len(findSeries(reqs, "down.lat.50percentile")) > 0
	})
	local.stopAndCollect(t)
	if got := sumRate(reqs, "down.hits"); got != 40 {
		t.Errorf("down.hits summed to %v across the outage, want exactly 40", got)
	}
	// The members are distinct, so however the spooled intervals fell
	// into the global's intervals, their counts add up to 3.
	users := 0.0
	for _, s := range findSeries(reqs, "down.users") {
		users += s.Value
	}
	if users != 3 {
		t.Errorf("down.users adds up to %v, want the 3 members sent during the outage", users)
	}
	for _, s := range findSeries(reqs, "down.lat.50percentile") {
		if s.Value < 10 || s.Value > 30 {
			t.Errorf("down.lat.50percentile = %v, want one of the outage's samples (10–30 ms)", s.Value)
		}
	}
}

// A client that sends an /import body a byte at a time does not hold up
// SIGTERM: the daemon closes its connection after a short grace, makes its
// final flush and exits 0 (terminate fails the test otherwise, well before
// the server's 60 s read timeout would end the request).
func TestSlowImportClientDoesNotDelayShutdown(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	d := startDaemon(t, fake, nil)
	conns := make([]net.Conn, 5)
	for i := range conns {
		c, err := net.Dial("tcp", d.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := fmt.Fprintf(c, "POST /import HTTP/1.1\r\nHost: veneur\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n["); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	sendRaw(t, d, "slow.client.gauge:7|g")
	reqs := d.stopAndCollect(t)
	expectSeries(t, reqs, "slow.client.gauge", gauge(7))
}
