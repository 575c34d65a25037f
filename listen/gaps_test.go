package listen

import (
	"strings"
	"testing"
	"time"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/internal/yield"
)

// Gaps count in the first bucket whose bound they do not exceed, the
// counts sent are cumulative, the gauge is the longest gap, and a report
// resets them all.
func TestReaderGapBuckets(t *testing.T) {
	var g readerGaps
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 3 * time.Millisecond, 50 * time.Millisecond, 2 * time.Second} {
		g.record(d, d >= 50*time.Millisecond)
	}
	var r gapReport
	r.take(&g)
	rec := &statstest.Recorder{}
	r.send(rec)
	for _, c := range []struct {
		le   string
		want int64
	}{{"le:1ms", 2}, {"le:5ms", 3}, {"le:20ms", 3}, {"le:100ms", 4}, {"le:+Inf", 5}} {
		if n := rec.Sum("listen.reader_gap_total", c.le); n != c.want {
			t.Errorf("listen.reader_gap_total{%s} = %d, want %d", c.le, n, c.want)
		}
	}
	if v, ok := rec.GaugeValue("listen.reader_gap_max_ns"); !ok || v != float64(2*time.Second) {
		t.Errorf("listen.reader_gap_max_ns = %v (sent %v), want %v", v, ok, float64(2*time.Second))
	}
	// The two longest were during a flush.
	for _, c := range []struct {
		le   string
		want int64
	}{{"le:1ms", 0}, {"le:5ms", 0}, {"le:20ms", 0}, {"le:100ms", 1}, {"le:+Inf", 2}} {
		if n := rec.Sum("listen.reader_gap_flush_total", c.le); n != c.want {
			t.Errorf("listen.reader_gap_flush_total{%s} = %d, want %d", c.le, n, c.want)
		}
	}
	if v, ok := rec.GaugeValue("listen.reader_gap_flush_max_ns"); !ok || v != float64(2*time.Second) {
		t.Errorf("listen.reader_gap_flush_max_ns = %v (sent %v), want %v", v, ok, float64(2*time.Second))
	}
	var again gapReport
	again.take(&g)
	rec = &statstest.Recorder{}
	again.send(rec)
	if names := rec.Names(); len(names) != 0 {
		t.Errorf("a second report sent %v, want nothing: the gaps were reset", names)
	}
	if _, ok := rec.GaugeValue("listen.reader_gap_max_ns"); ok {
		t.Error("a second report sent listen.reader_gap_max_ns, want nothing")
	}

	// Without gaps during a flush, none are sent as such.
	var quiet readerGaps
	quiet.record(3*time.Millisecond, false)
	var q gapReport
	q.take(&quiet)
	rec = &statstest.Recorder{}
	q.send(rec)
	if _, ok := rec.GaugeValue("listen.reader_gap_flush_max_ns"); ok {
		t.Error("listen.reader_gap_flush_max_ns sent without a gap during a flush")
	}
	if n := rec.Sum("listen.reader_gap_flush_total"); n != 0 {
		t.Errorf("listen.reader_gap_flush_total = %d without a gap during a flush", n)
	}
}

// slowIngester sleeps in Packet for datagrams that start with "slow", as
// a reader held off by a long ingest.
type slowIngester struct {
	Ingester
	d time.Duration
}

func (s slowIngester) Packet(p []byte, truncated bool) {
	if strings.HasPrefix(string(p), "slow") {
		time.Sleep(s.d)
	}
	s.Ingester.Packet(p, truncated)
}

// The UDP listener's Report sends the gap a slow ingest made, and the
// next Report counts only the gaps recorded since.
func TestUDPReportsReaderGaps(t *testing.T) {
	for _, mode := range readModes {
		t.Run(mode.name, func(t *testing.T) {
			snk := newSink(t)
			const slow = 30 * time.Millisecond
			u, err := NewUDP(UDPConfig{Address: "127.0.0.1:0", Readers: 1, ReadBuffer: 1 << 20},
				func() Ingester { return slowIngester{snk.newIngester(), slow} }, Options{Log: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			u.singleP = mode.singleP
			if err := u.Start(); err != nil {
				t.Fatal(err)
			}
			defer stop(t, u)
			gaps := (*u.gaps.Load())[0]
			recorded := func() uint64 {
				var n uint64
				for i := range gaps.all.counts {
					n += gaps.all.counts[i].Load()
				}
				return n
			}

			// The slow datagram's gap falls during a flush.
			yield.BeginWork()
			sendUDP(t, u.Addr(), "slow:1|c")
			waitFor(t, "the gap after the slow datagram", func() bool { return recorded() >= 1 })
			yield.EndWork()
			rec := &statstest.Recorder{}
			u.Report(rec)
			if n := rec.Sum("listen.reader_gap_flush_total", "le:+Inf"); n != 1 {
				t.Errorf("listen.reader_gap_flush_total{le:+Inf} = %d after a gap during a flush, want 1", n)
			}
			if v, _ := rec.GaugeValue("listen.reader_gap_flush_max_ns"); v < float64(slow) {
				t.Errorf("listen.reader_gap_flush_max_ns = %v, want at least %v", v, float64(slow))
			}
			if n := rec.Sum("listen.reader_gap_total", "le:+Inf"); n != 1 {
				t.Errorf("listen.reader_gap_total{le:+Inf} = %d after one datagram, want 1", n)
			}
			if n := rec.Sum("listen.reader_gap_total", "le:20ms"); n != 0 {
				t.Errorf("listen.reader_gap_total{le:20ms} = %d, want 0: the only gap took at least %v", n, slow)
			}
			if v, _ := rec.GaugeValue("listen.reader_gap_max_ns"); v < float64(slow) {
				t.Errorf("listen.reader_gap_max_ns = %v, want at least %v", v, float64(slow))
			}

			rec = &statstest.Recorder{}
			u.Report(rec)
			if n := rec.Sum("listen.reader_gap_total"); n != 0 {
				t.Errorf("listen.reader_gap_total = %d with no datagram since the last report, want 0", n)
			}
			if _, ok := rec.GaugeValue("listen.reader_gap_max_ns"); ok {
				t.Error("listen.reader_gap_max_ns sent with no datagram since the last report")
			}

			sendUDP(t, u.Addr(), "fast:1|c")
			waitFor(t, "the gap after the next datagram", func() bool { return recorded() >= 1 })
			rec = &statstest.Recorder{}
			u.Report(rec)
			if n := rec.Sum("listen.reader_gap_total", "le:+Inf"); n != 1 {
				t.Errorf("listen.reader_gap_total{le:+Inf} = %d after one more datagram, want 1 (the counts reset)", n)
			}
			if n := rec.Sum("listen.reader_gap_flush_total"); n != 0 {
				t.Errorf("listen.reader_gap_flush_total = %d for a gap outside flushes, want 0", n)
			}
			if v, ok := rec.GaugeValue("listen.reader_gap_max_ns"); !ok || v <= 0 {
				t.Errorf("listen.reader_gap_max_ns = %v (sent %v), want the new datagram's gap", v, ok)
			}
		})
	}
}
