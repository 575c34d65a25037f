package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func mkLines(specs ...string) []line {
	out := make([]line, len(specs))
	for i, s := range specs {
		out[i] = line{b: []byte(s), counter: strings.HasSuffix(s, "|c")}
	}
	return out
}

func TestPackDatagrams(t *testing.T) {
	long := strings.Repeat("x", 700)
	tests := []struct {
		name               string
		lines              []line
		maxLines, maxBytes int
		wantLines          []int
		wantCounters       []int
		wantErr            bool
	}{
		{name: "one per datagram", lines: mkLines("a:1|c", "b:2|g", "c:1|c"), maxLines: 1, maxBytes: 1432,
			wantLines: []int{1, 1, 1}, wantCounters: []int{1, 0, 1}},
		{name: "line cap", lines: mkLines("a:1|c", "b:1|c", "c:1|c", "d:1|g", "e:1|c"), maxLines: 2, maxBytes: 1432,
			wantLines: []int{2, 2, 1}, wantCounters: []int{2, 1, 1}},
		// "abc\n" is 4 bytes: two fit in 9 bytes, a third would make 12.
		{name: "byte cap", lines: mkLines("abc", "abc", "abc"), maxLines: 25, maxBytes: 9,
			wantLines: []int{2, 1}, wantCounters: []int{0, 0}},
		{name: "byte cap exact", lines: mkLines("abc", "abc", "abc"), maxLines: 25, maxBytes: 8,
			wantLines: []int{2, 1}, wantCounters: []int{0, 0}},
		{name: "long lines", lines: mkLines(long, long, long), maxLines: 25, maxBytes: 1432,
			wantLines: []int{2, 1}, wantCounters: []int{0, 0}},
		{name: "line exactly fills", lines: mkLines(strings.Repeat("y", 1431)), maxLines: 25, maxBytes: 1432,
			wantLines: []int{1}, wantCounters: []int{0}},
		{name: "line too long", lines: mkLines(strings.Repeat("y", 1432)), maxLines: 25, maxBytes: 1432, wantErr: true},
		{name: "no lines", lines: nil, maxLines: 25, maxBytes: 1432},
		{name: "bad limits", lines: mkLines("a"), maxLines: 0, maxBytes: 1432, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := packDatagrams(tc.lines, tc.maxLines, tc.maxBytes)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("packDatagrams succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(r.lines) != fmt.Sprint(tc.wantLines) || fmt.Sprint(r.counters) != fmt.Sprint(tc.wantCounters) {
				t.Fatalf("lines %v counters %v, want %v %v", r.lines, r.counters, tc.wantLines, tc.wantCounters)
			}
			var all bytes.Buffer
			for i := range r.len() {
				d := r.datagram(i)
				if len(d) > tc.maxBytes {
					t.Errorf("datagram %d is %d bytes, limit %d", i, len(d), tc.maxBytes)
				}
				if d[len(d)-1] != '\n' {
					t.Errorf("datagram %d does not end in a newline", i)
				}
				if got := countLines(d); got != r.lines[i] {
					t.Errorf("datagram %d: countLines %d, recorded %d", i, got, r.lines[i])
				}
				all.Write(d)
			}
			var want bytes.Buffer
			for _, l := range tc.lines {
				want.Write(l.b)
				want.WriteByte('\n')
			}
			if !bytes.Equal(all.Bytes(), want.Bytes()) {
				t.Errorf("datagrams do not reassemble into the lines")
			}
		})
	}
}

func TestBuildRing(t *testing.T) {
	for _, name := range []string{"a", "b", "c"} {
		t.Run(name, func(t *testing.T) {
			w, err := workloadByName(name)
			if err != nil {
				t.Fatal(err)
			}
			r, err := buildRing(w)
			if err != nil {
				t.Fatal(err)
			}
			perKind := w.seriesPerKind()
			var lines, counters int
			seen := map[string]bool{}
			typeLines := map[string]int{}
			for i := range r.len() {
				d := r.datagram(i)
				if len(d) > maxDatagramBytes {
					t.Fatalf("datagram %d is %d bytes, limit %d", i, len(d), maxDatagramBytes)
				}
				if r.lines[i] != w.perDgram || countLines(d) != w.perDgram {
					t.Fatalf("datagram %d holds %d lines (counted %d), want %d", i, r.lines[i], countLines(d), w.perDgram)
				}
				c := 0
				for l := range strings.SplitSeq(strings.TrimSuffix(string(d), "\n"), "\n") {
					name, rest, ok := strings.Cut(l, ":")
					parts := strings.Split(rest, "|")
					if !ok || len(parts) != 3 || !strings.HasPrefix(parts[2], "#") {
						t.Fatalf("malformed line %q", l)
					}
					typeLines[parts[1]]++
					if parts[1] == "c" {
						c++
						if parts[0] != "1" || !strings.HasPrefix(name, counterPrefix) {
							t.Fatalf("counter line %q: want value 1 and prefix %s", l, counterPrefix)
						}
					} else if strings.HasPrefix(name, counterPrefix) {
						t.Fatalf("non-counter line %q uses the counter prefix", l)
					}
					// Every w.series consecutive lines touch each series once.
					if lines < w.series {
						key := name + "|" + parts[1] + "|" + parts[2]
						if seen[key] {
							t.Fatalf("series %s repeats within the first %d lines", key, w.series)
						}
						seen[key] = true
					}
					lines++
				}
				if c != r.counters[i] {
					t.Fatalf("datagram %d: %d counter lines, recorded %d", i, c, r.counters[i])
				}
				counters += c
			}
			if len(seen) != w.series {
				t.Fatalf("%d distinct series, want %d", len(seen), w.series)
			}
			if lines%w.series != 0 {
				t.Fatalf("ring of %d lines is not a whole number of passes over %d series", lines, w.series)
			}
			passes := lines / w.series
			want := map[string]int{"c": perKind[kindCounter], "g": perKind[kindGauge], "h": perKind[kindHistogram], "ms": perKind[kindTimer], "s": perKind[kindSet]}
			for typ, n := range want {
				if typeLines[typ] != n*passes {
					t.Errorf("%d lines of type %s, want %d", typeLines[typ], typ, n*passes)
				}
			}
			if counters != perKind[kindCounter]*passes {
				t.Errorf("%d counter lines recorded, want %d", counters, perKind[kindCounter]*passes)
			}
		})
	}
}

func TestWorkloadShapes(t *testing.T) {
	c, err := workloadByName("c")
	if err != nil {
		t.Fatal(err)
	}
	if total, counters := c.expectedSeries(histoOutputs); total != 220_000 || counters != 40_000 {
		t.Errorf("workload c expects %d series (%d counters), want 220000 (40000)", total, counters)
	}
	b, _ := workloadByName("b")
	if got := b.seriesPerKind(); got != [numKinds]int{400, 200, 150, 150, 100} {
		t.Errorf("workload b series per kind %v, want 40/20/15/15/10%% of 1000", got)
	}
	// Workload c needs every series touched in every 2s interval at its
	// lowest search rate.
	if c.lo*c.interval.Seconds() < float64(c.series) {
		t.Errorf("workload c lower bound %v lines/s leaves series untouched in a %v interval", c.lo, c.interval)
	}
	if _, err := workloadByName("d"); err == nil {
		t.Error("workload d accepted")
	}
}

func TestKindSchedule(t *testing.T) {
	sched := kindSchedule(mixedWeights())
	var n [numKinds]int
	for _, k := range sched {
		n[k]++
	}
	if n != mixedWeights() {
		t.Fatalf("schedule %v has %v lines per kind, want %v", sched, n, mixedWeights())
	}
	// Spread out: no kind other than counters twice in a row.
	for i := 1; i < len(sched); i++ {
		if sched[i] == sched[i-1] && sched[i] != kindCounter {
			t.Errorf("kind %d twice in a row at %d in %v", sched[i], i, sched)
		}
	}
}
