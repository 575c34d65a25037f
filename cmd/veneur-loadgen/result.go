package main

import (
	"fmt"
	"math"
	"strings"
)

// Server names as they appear in flags and tables.
const (
	serverBare   = "bare"
	serverVeneur = "veneur"
)

// senderLimitedBelow marks a trial whose achieved rate fell under this share
// of the rate asked for: the sender, not the server, set the pace.
const senderLimitedBelow = 0.95

// trialResult is one trial: one workload at one offered rate against one
// server process.
type trialResult struct {
	workload, server string
	target           float64 // lines per second asked of the sender
	sent             sendStats

	// received counts what arrived, in the unit of expected: counter lines
	// for veneur (the only lines whose arrival can be counted exactly), all
	// lines for the bare reader.
	received, expected int64
	loss               float64 // 1 - received/expected
	lines              float64 // lines the server took in, estimated from loss

	cpuSeconds    float64 // server user+system CPU over the trial
	otherSrv      float64 // share of the server CPU other processes used, NaN if unknown
	otherDrv      float64 // same for the driver CPU
	peakRSS       uint64  // bytes
	senderLimited bool
	flush         *flushCheck // workload c against veneur only
	err           error
	startFailed   bool // the server did not start: no later trial can fare better
	notes         []string
	pass          bool
	// unconfirmed marks a passing search trial at a rate where another of
	// the -confirm trials failed: the rate did not pass.
	unconfirmed bool
	// gaps are veneur's reader gaps over the trial, from its
	// self-metrics; nil for the bare reader.
	gaps *gapFigures
}

// finish derives loss and lines processed once received is known.
func (r *trialResult) finish(expected int64) {
	r.expected = expected
	if expected <= 0 {
		r.loss = 1
		return
	}
	got := float64(r.received) / float64(expected)
	r.loss = 1 - got
	r.lines = float64(r.sent.lines) * math.Min(1, got)
	r.senderLimited = r.sent.rate() < senderLimitedBelow*r.target
}

// judge decides whether the trial passes: no error or anomaly, loss under
// the workload's bound (exactly zero for a strict workload), no more
// arrived than was sent, and complete, timely flushes when checked.
func (r *trialResult) judge(w workload, anomaly bool) {
	if r.received > r.expected {
		r.notes = append(r.notes, fmt.Sprintf("%d more arrived than were sent", r.received-r.expected))
	}
	if r.flush != nil {
		r.notes = append(r.notes, r.flush.problems...)
	}
	lossOK := r.loss < w.maxLoss
	if w.strict {
		lossOK = r.received == r.expected
	}
	r.pass = r.err == nil && !anomaly && r.expected > 0 && r.received <= r.expected && lossOK &&
		(r.flush == nil || r.flush.ok())
}

// cpuPerMillion is server CPU seconds per million lines taken in.
func (r trialResult) cpuPerMillion() float64 {
	if r.lines <= 0 {
		return math.NaN()
	}
	return r.cpuSeconds / r.lines * 1e6
}

func (r trialResult) peakRSSMiB() float64 { return float64(r.peakRSS) / (1 << 20) }

// summary is one line of progress output.
func (r trialResult) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s %s] target %s lines/s: ", r.workload, r.server, humanRate(r.target))
	if r.err != nil {
		fmt.Fprintf(&b, "ERROR %v", r.err)
		return b.String()
	}
	fmt.Fprintf(&b, "sent %s lines/s, loss %s, CPU %.3f s/M lines, peak RSS %.1f MiB",
		humanRate(r.sent.rate()), lossString(r.loss), r.cpuPerMillion(), r.peakRSSMiB())
	if r.flush != nil {
		fmt.Fprintf(&b, ", flushes %v", r.flush)
	}
	if r.senderLimited {
		b.WriteString(", sender-limited")
	}
	if r.gaps != nil {
		fmt.Fprintf(&b, ", %v", r.gaps)
	}
	fmt.Fprintf(&b, ", other load %s", r.otherLoadString())
	if r.pass {
		b.WriteString(" -> pass")
	} else {
		b.WriteString(" -> FAIL")
	}
	for _, n := range r.notes {
		b.WriteString("; " + n)
	}
	return b.String()
}

// A failed trial during which other processes took more than noisyShare of
// the server or the driver CPU is repeated once, at most maxNoisyRepeats
// times per search: the failure may be theirs.
const (
	noisyShare      = 0.10
	maxNoisyRepeats = 2
)

// noisyFailure reports whether a failed trial should be repeated because
// other processes took the server's or the driver's CPU while it ran.
func (r trialResult) noisyFailure() bool {
	return !r.pass && !r.startFailed && (r.otherSrv > noisyShare || r.otherDrv > noisyShare)
}

// otherLoadString renders the other processes' share of the server and
// driver CPUs, e.g. "3%/40%".
func (r trialResult) otherLoadString() string { return otherLoadPair(r.otherSrv, r.otherDrv) }

// bestTrial is the passing trial with the highest achieved rate, or false;
// a trial at a rate that failed its confirmation does not count.
func bestTrial(trials []trialResult) (trialResult, bool) {
	var best trialResult
	found := false
	for _, t := range trials {
		if t.pass && !t.unconfirmed && (!found || t.sent.rate() > best.sent.rate()) {
			best, found = t, true
		}
	}
	return best, found
}

func humanRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func lossString(loss float64) string {
	if loss == 0 {
		return "0%"
	}
	return fmt.Sprintf("%.3f%%", loss*100)
}

// confirmations says how many trials passed at each rate of trials, in the
// order the rates were first tried, e.g. "at 1,000,000: 3/3 passed; at
// 3,000,000: 1/2 passed", and returns how many trials there were.
func confirmations(trials []trialResult) (string, int) {
	var rates []float64
	passed, ran := map[float64]int{}, map[float64]int{}
	for _, t := range trials {
		if ran[t.target] == 0 {
			rates = append(rates, t.target)
		}
		ran[t.target]++
		if t.pass {
			passed[t.target]++
		}
	}
	parts := make([]string, len(rates))
	for i, r := range rates {
		parts[i] = fmt.Sprintf("at %s: %d/%d passed", groupDigits(r), passed[r], ran[r])
	}
	return strings.Join(parts, "; "), len(trials)
}
