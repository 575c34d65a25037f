package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// maxDatagramBytes is the payload size datadog-go packs UDP datagrams to:
// every line is followed by a newline and the whole datagram, newlines
// included, stays within this many bytes.
const maxDatagramBytes = 1432

// Metric name prefixes, one per DogStatsD type. The stand-in API counts only
// series whose name starts with counterPrefix, so the histogram and timer
// ".count" series never mix into the counter sums.
const (
	seriesPrefix  = "lg."
	counterPrefix = "lg.c."
)

type metricKind int

const (
	kindCounter metricKind = iota
	kindGauge
	kindHistogram
	kindTimer
	kindSet
	numKinds
)

// codes returns the name prefix and the DogStatsD type of a kind.
func (k metricKind) codes() (prefix, typ string) {
	switch k {
	case kindCounter:
		return counterPrefix, "c"
	case kindGauge:
		return "lg.g.", "g"
	case kindHistogram:
		return "lg.h.", "h"
	case kindTimer:
		return "lg.t.", "ms"
	default:
		return "lg.s.", "s"
	}
}

// workload describes one traffic shape of the benchmark.
type workload struct {
	name     string
	desc     string
	series   int
	perDgram int           // lines per datagram
	weights  [numKinds]int // share of lines (and series) per kind
	interval time.Duration // veneur flush interval for this workload
	maxLoss  float64       // a trial passes when loss <= maxLoss (fraction)
	strict   bool          // loss must be exactly zero and flushes complete
	lo, hi   float64       // bisection bounds, lines per second
}

// mixedWeights is the 40/20/15/15/10 mix of workloads b and c.
func mixedWeights() [numKinds]int {
	return [numKinds]int{kindCounter: 8, kindGauge: 4, kindHistogram: 3, kindTimer: 3, kindSet: 2}
}

func workloadByName(name string) (workload, error) {
	switch name {
	case "a":
		return workload{
			name: "a", desc: "1 line/datagram, counters, 100 series",
			series: 100, perDgram: 1,
			weights:  [numKinds]int{kindCounter: 1},
			interval: time.Second, maxLoss: 0.01,
			lo: 20_000, hi: 2_000_000,
		}, nil
	case "b":
		return workload{
			name: "b", desc: "25 lines/datagram, mixed, 1,000 series",
			series: 1000, perDgram: 25,
			weights:  mixedWeights(),
			interval: time.Second, maxLoss: 0.01,
			lo: 100_000, hi: 12_000_000,
		}, nil
	case "c":
		return workload{
			name: "c", desc: "25 lines/datagram, mixed, 100,000 series, 2s interval",
			series: 100_000, perDgram: 25,
			weights:  mixedWeights(),
			interval: 2 * time.Second, maxLoss: 0, strict: true,
			// Below 50,000 lines/s some series would get no line in an interval.
			lo: 60_000, hi: 8_000_000,
		}, nil
	}
	return workload{}, fmt.Errorf("unknown workload %q; use a, b or c", name)
}

// seriesPerKind splits the workload's series over the kinds by weight.
func (w workload) seriesPerKind() [numKinds]int {
	total := 0
	for _, x := range w.weights {
		total += x
	}
	var n [numKinds]int
	for k, x := range w.weights {
		n[k] = w.series * x / total
	}
	return n
}

// histoOutputs is how many series veneur makes of one histogram or timer
// with the aggregates (min, max, count) and percentiles (0.5, 0.99) of the
// trial config.
const histoOutputs = 3 + 2

// expectedSeries is how many series a complete flush of this workload holds
// when every series received a line during the interval: one per counter,
// gauge and set, and aggregates+percentiles per histogram and timer.
func (w workload) expectedSeries(histoOutputs int) (total, counters int) {
	n := w.seriesPerKind()
	total = n[kindCounter] + n[kindGauge] + n[kindSet] + (n[kindHistogram]+n[kindTimer])*histoOutputs
	return total, n[kindCounter]
}

// line is one DogStatsD line without its trailing newline.
type line struct {
	b       []byte
	counter bool
}

// kindSchedule spreads the kinds over a period so that every stretch of
// lines carries the mix (smooth weighted round robin).
func kindSchedule(weights [numKinds]int) []metricKind {
	total := 0
	for _, x := range weights {
		total += x
	}
	var current [numKinds]int
	out := make([]metricKind, 0, total)
	for range total {
		best := -1
		for k := range weights {
			if weights[k] == 0 {
				continue
			}
			current[k] += weights[k]
			if best < 0 || current[k] > current[best] {
				best = k
			}
		}
		current[best] -= total
		out = append(out, metricKind(best))
	}
	return out
}

// minRingLines is the least number of lines a workload's ring holds, so that
// values vary and the sender walks through a realistic amount of memory.
const minRingLines = 100_000

// buildLines renders the ring of lines for a workload. Each kind walks its
// series in order, so every run of w.series consecutive lines touches every
// series exactly once. Values come from a fixed seed: runs are repeatable.
func buildLines(w workload) []line {
	perKind := w.seriesPerKind()
	sched := kindSchedule(w.weights)
	reps := (minRingLines + w.series - 1) / w.series
	n := reps * w.series
	rng := rand.New(rand.NewPCG(1, 2))
	var next [numKinds]int
	lines := make([]line, 0, n)
	for i := range n {
		k := sched[i%len(sched)]
		idx := next[k] % perKind[k]
		next[k]++
		lines = append(lines, line{b: appendLine(nil, k, idx, rng), counter: k == kindCounter})
	}
	return lines
}

// serviceTag returns one of a few service names for series idx.
func serviceTag(idx int) string {
	switch idx % 5 {
	case 0:
		return "api"
	case 1:
		return "web"
	case 2:
		return "db"
	case 3:
		return "queue"
	default:
		return "auth"
	}
}

// appendLine renders one line of kind k for series idx. Tags depend on idx
// only, so the number of distinct series is exactly the number of names.
func appendLine(b []byte, k metricKind, idx int, rng *rand.Rand) []byte {
	prefix, typ := k.codes()
	b = append(b, prefix...)
	b = strconv.AppendInt(b, int64(idx), 10)
	b = append(b, ':')
	switch k {
	case kindCounter:
		b = append(b, '1')
	case kindGauge:
		b = strconv.AppendFloat(b, rng.Float64()*1000, 'f', 2, 64)
	case kindHistogram:
		b = strconv.AppendFloat(b, rng.Float64()*1000, 'f', 1, 64)
	case kindTimer:
		b = strconv.AppendInt(b, int64(rng.IntN(500)), 10)
	case kindSet:
		b = append(b, 'u')
		b = strconv.AppendInt(b, int64(rng.IntN(50)), 10)
	}
	b = append(b, '|')
	b = append(b, typ...)
	b = append(b, "|#env:load,shard:"...)
	b = strconv.AppendInt(b, int64(idx%16), 10)
	b = append(b, ",svc:"...)
	b = append(b, serviceTag(idx)...)
	return b
}

// ring is a workload's datagrams laid out back to back in one buffer.
type ring struct {
	buf      []byte
	offs     []int // start of datagram i in buf; offs[len] == len(buf)
	lines    []int // lines in datagram i
	counters []int // counter lines in datagram i
}

func (r *ring) len() int { return len(r.lines) }

func (r *ring) datagram(i int) []byte { return r.buf[r.offs[i]:r.offs[i+1]] }

// packDatagrams packs lines the way datadog-go does: each line followed by a
// newline, at most maxLines lines and maxBytes bytes per datagram. A line that
// cannot fit in an empty datagram is an error.
func packDatagrams(lines []line, maxLines, maxBytes int) (*ring, error) {
	if maxLines < 1 || maxBytes < 2 {
		return nil, fmt.Errorf("packing needs at least 1 line and 2 bytes per datagram, got %d and %d", maxLines, maxBytes)
	}
	r := &ring{offs: []int{0}}
	inDgram, counters := 0, 0
	closeDgram := func() {
		r.offs = append(r.offs, len(r.buf))
		r.lines = append(r.lines, inDgram)
		r.counters = append(r.counters, counters)
		inDgram, counters = 0, 0
	}
	for i, l := range lines {
		if len(l.b)+1 > maxBytes {
			return nil, fmt.Errorf("line %d is %d bytes, more than the %d-byte datagram limit; shorten the workload's names or tags", i, len(l.b), maxBytes-1)
		}
		size := len(r.buf) - r.offs[len(r.offs)-1]
		if inDgram == maxLines || size+len(l.b)+1 > maxBytes {
			closeDgram()
		}
		r.buf = append(r.buf, l.b...)
		r.buf = append(r.buf, '\n')
		inDgram++
		if l.counter {
			counters++
		}
	}
	if inDgram > 0 {
		closeDgram()
	}
	return r, nil
}

// buildRing renders and packs a workload, checking that every datagram holds
// exactly the workload's number of lines.
func buildRing(w workload) (*ring, error) {
	r, err := packDatagrams(buildLines(w), w.perDgram, maxDatagramBytes)
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", w.name, err)
	}
	for i, n := range r.lines {
		if n != w.perDgram {
			return nil, fmt.Errorf("workload %s: datagram %d holds %d lines, want %d; shorten its lines", w.name, i, n, w.perDgram)
		}
	}
	return r, nil
}
