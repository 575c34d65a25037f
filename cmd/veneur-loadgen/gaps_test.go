package main

import (
	"bytes"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// veneur's gap self-metrics, as datadog-go sends them, sum over reports;
// the longest gap is kept; other lines are ignored.
func TestGapFiguresAdd(t *testing.T) {
	var g gapFigures
	for _, l := range []string{
		"veneur.listen.reader_gap_max_ns:2500000|g",
		"veneur.listen.reader_gap_total:90|c|#le:1ms",
		"veneur.listen.reader_gap_total:99|c|#le:5ms",
		"veneur.listen.reader_gap_total:100|c|#le:20ms",
		"veneur.listen.reader_gap_total:100|c|#le:100ms",
		"veneur.listen.reader_gap_total:100|c|#le:+Inf",
		"veneur.listen.reader_gap_max_ns:12000000|g|#host:x",
		"veneur.listen.reader_gap_total:5|c|#host:x,le:1ms",
		"veneur.listen.reader_gap_total:7|c|#host:x,le:20ms",
		"veneur.listen.reader_gap_total:7|c|#host:x,le:+Inf",
		"veneur.listen.reader_gap_flush_max_ns:4000000|g",
		"veneur.listen.reader_gap_flush_total:1|c|#le:1ms",
		"veneur.listen.reader_gap_flush_total:3|c|#le:5ms",
		"veneur.listen.reader_gap_flush_total:4|c|#le:20ms",
		"veneur.listen.reader_gap_flush_total:4|c|#le:100ms",
		"veneur.listen.reader_gap_flush_total:4|c|#le:+Inf",
		"veneur.packet.read_error_total:3|c",
		"garbage",
		"veneur.listen.reader_gap_total:x|c|#le:1ms",
	} {
		g.add([]byte(l))
	}
	if g.reports != 2 || g.max != 12*time.Millisecond {
		t.Errorf("%d reports, max %v; want 2 and 12ms", g.reports, g.max)
	}
	if want := [5]int64{95, 99, 107, 100, 107}; g.le != want {
		t.Errorf("cumulative counts %v, want %v", g.le, want)
	}
	// The gaps during a flush, apart.
	if g.flushMax != 4*time.Millisecond {
		t.Errorf("max during a flush %v, want 4ms", g.flushMax)
	}
	if got, want := g.flushBuckets(), [5]int64{1, 2, 1, 0, 0}; got != want {
		t.Errorf("buckets during a flush %v, want %v", got, want)
	}
	// buckets undo the cumulation.
	g.le = [5]int64{95, 99, 107, 107, 110}
	if got, want := g.buckets(), [5]int64{95, 4, 8, 0, 3}; got != want {
		t.Errorf("buckets %v, want %v", got, want)
	}
	if s := g.String(); !strings.Contains(s, "max reader gap 12ms (during a flush 4ms)") || !strings.Contains(s, "11 gaps > 5ms of 110 (during a flush 1)") {
		t.Errorf("String() = %q", s)
	}
	if s := (gapFigures{}).String(); s != "no reader gaps reported" {
		t.Errorf("String() of nothing = %q", s)
	}
}

// The stats sink keeps the gaps of what veneur sends it, several lines a
// datagram, those still queued when it closes included.
func TestStatsSink(t *testing.T) {
	s, err := newStatsSink()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp4", s.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, dg := range []string{
		"veneur.listen.reader_gap_max_ns:3000000|g\nveneur.listen.reader_gap_total:4|c|#le:1ms\nveneur.listen.reader_gap_total:5|c|#le:+Inf",
		"veneur.listen.reader_gap_max_ns:700000|g\nveneur.listen.reader_gap_total:2|c|#le:1ms\nveneur.listen.reader_gap_total:2|c|#le:+Inf\n",
	} {
		if _, err := c.Write([]byte(dg)); err != nil {
			t.Fatal(err)
		}
	}
	g := s.close()
	if g.reports != 2 || g.max != 3*time.Millisecond || g.le[0] != 6 || g.le[4] != 7 {
		t.Errorf("figures %+v; want 2 reports, max 3ms, 6 gaps <= 1ms of 7", g)
	}
}

func TestConfirmations(t *testing.T) {
	pass := func(r trialResult) trialResult { r.pass = true; return r }
	trials := []trialResult{
		pass(trialAt("veneur", 1e6, 1e6, 1, 1, 0)), pass(trialAt("veneur", 1e6, 1e6, 1, 1, 0)), pass(trialAt("veneur", 1e6, 1e6, 1, 1, 0)),
		pass(trialAt("veneur", 3e6, 3e6, 1, 1, 0)), trialAt("veneur", 3e6, 3e6, 1, 0, 0),
	}
	note, n := confirmations(trials)
	if want := "at 1,000,000: 3/3 passed; at 3,000,000: 1/2 passed"; note != want || n != 5 {
		t.Errorf("confirmations = %q, %d; want %q, 5", note, n, want)
	}
	// The pass at 3M is not confirmed: the best trial is at 1M.
	trials[3].unconfirmed, trials[4].unconfirmed = true, true
	if b, ok := bestTrial(trials); !ok || b.target != 1e6 {
		t.Errorf("best trial at %v (found %v), want 1,000,000: 3,000,000 failed its confirmation", b.target, ok)
	}
}

func TestParseRates(t *testing.T) {
	if got, err := parseRates("1000000, 3e6,1000000"); err != nil || !slices.Equal(got, []float64{1e6, 3e6}) {
		t.Errorf("parseRates = %v, %v; want [1e6 3e6]", got, err)
	}
	if got, err := parseRates("0"); err != nil || got != nil {
		t.Errorf("parseRates(0) = %v, %v; want none", got, err)
	}
	if _, err := parseRates("1e6,fast"); err == nil || !strings.Contains(err.Error(), `"fast"`) {
		t.Errorf("parseRates(1e6,fast): %v, want an error naming \"fast\"", err)
	}
	o := options{fixedRates: []float64{1e6, 0}}
	if o.firstFixedRate() != 1e6 {
		t.Errorf("firstFixedRate = %v", o.firstFixedRate())
	}
}

// The report shows each veneur trial's gaps, and the confirmations of the
// search and the fixed rates.
func TestReportGapsAndConfirmations(t *testing.T) {
	b, _ := workloadByName("b")
	pass := func(r trialResult) trialResult { r.pass = true; return r }
	withGaps := func(r trialResult, maxGap time.Duration, le [5]int64) trialResult {
		r.gaps = &gapFigures{reports: 3, max: maxGap, le: le}
		return r
	}
	wb := newWorkloadReport(b, 1e6)
	wb.search[serverVeneur] = []trialResult{
		withGaps(pass(trialAt("veneur", 1e6, 1e6, 1.2e6, 1.2e6, 0.9)), 4*time.Millisecond, [5]int64{1000, 1003, 1003, 1003, 1003}),
		withGaps(pass(trialAt("veneur", 1e6, 1e6, 1.2e6, 1.2e6, 0.9)), 3*time.Millisecond, [5]int64{900, 902, 902, 902, 902}),
		withGaps(pass(trialAt("veneur", 3e6, 3e6, 3.6e6, 3.6e6, 2)), 30*time.Millisecond, [5]int64{2000, 2001, 2002, 2005, 2005}),
		withGaps(trialAt("veneur", 3e6, 3e6, 3.6e6, 3e6, 2), 40*time.Millisecond, [5]int64{2000, 2001, 2002, 2004, 2004}),
	}
	wb.search[serverVeneur][2].unconfirmed, wb.search[serverVeneur][3].unconfirmed = true, true
	wb.fixed[serverVeneur] = []trialResult{
		withGaps(pass(trialAt("veneur", 1e6, 1e6, 1.2e6, 1.2e6, 0.9)), 2*time.Millisecond, [5]int64{10, 12, 12, 12, 12}),
		withGaps(trialAt("veneur", 1e6, 1e6, 1.2e6, 1e6, 0.9), 25*time.Millisecond, [5]int64{10, 12, 13, 14, 14}),
	}
	rep := &report{header: []string{"head"}, servers: []string{serverVeneur}, workloads: []*workloadReport{wb}}
	var out bytes.Buffer
	rep.render(&out)
	s := out.String()
	t.Log("\n" + s)
	for _, want := range []string{
		"veneur's reader gaps per trial",
		"max gap  <=1ms  1-5ms  5-20ms  20-100ms  >100ms",
		"b         search  3,000,000        0%       FAIL    30ms     2,000  1      1       3         0",
		"b         fixed   1,000,000        16.667%  FAIL    25ms     10     2      1       1         0",
		"at 1,000,000: 2/2 passed; at 3,000,000: 1/2 passed", // the search's row
		"at 1,000,000: 1/2 passed",                           // the fixed rate's
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if !strings.Contains(s, "b         veneur  1,000,000") {
		t.Errorf("the best rate is not the confirmed 1,000,000")
	}
}
