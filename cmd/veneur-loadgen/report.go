package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// workloadReport holds every trial of one workload.
type workloadReport struct {
	w      workload
	search map[string][]trialResult // bisection trials per server
	// fixed are the fixed-rate trials per server, in the order run: -confirm
	// trials at each rate of -fixed-rate.
	fixed     map[string][]trialResult
	fixedRate float64 // the first rate of -fixed-rate, that of the targets
}

func newWorkloadReport(w workload, fixedRate float64) *workloadReport {
	return &workloadReport{w: w, search: map[string][]trialResult{}, fixed: map[string][]trialResult{}, fixedRate: fixedRate}
}

// firstFixed is server's first trial at the first fixed rate, the one the
// targets judge.
func (wr *workloadReport) firstFixed(server string) (trialResult, bool) {
	ts := wr.fixed[server]
	if len(ts) == 0 {
		return trialResult{}, false
	}
	return ts[0], true
}

// report is the whole benchmark run.
type report struct {
	header    []string
	servers   []string
	workloads []*workloadReport
	// global holds the trials of the global workloads; globalHeader
	// describes them.
	global       []globalResult
	globalHeader string
}

func (r *report) render(out io.Writer) {
	for _, h := range r.header {
		fmt.Fprintln(out, h)
	}
	if len(r.workloads) > 0 {
		r.renderUDP(out)
	}
	if len(r.global) > 0 {
		r.renderGlobal(out)
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "Targets")
	for _, t := range r.targets() {
		fmt.Fprintln(out, "  "+t)
	}
}

// renderUDP writes the tables of the DogStatsD workloads.
func (r *report) renderUDP(out io.Writer) {
	fmt.Fprintln(out)
	fmt.Fprintln(out, "Highest offered rate that passed (a, b: loss under 1%; c: no loss and every flush complete and on time)")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tserver\tlines/s\tloss\tCPU s/M lines\tlines per CPU-s\tpeak RSS MiB\tother load\ttrials\tnotes")
	for _, wr := range r.workloads {
		best := map[string]trialResult{}
		for _, s := range r.servers {
			trials, ran := wr.search[s]
			if !ran {
				continue
			}
			b, ok := bestTrial(trials)
			if !ok {
				fmt.Fprintf(tw, "%s\t%s\tnone passed\t\t\t\t\t\t%d\t%s\n", wr.w.name, s, len(trials), failureNote(trials))
				continue
			}
			best[s] = b
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3f\t%s\t%.1f\t%s\t%d\t%s\n", wr.w.name, s, groupDigits(b.sent.rate()),
				lossString(b.loss), b.cpuPerMillion(), groupDigits(1e6/b.cpuPerMillion()), b.peakRSSMiB(), b.otherLoadString(), len(trials), searchNote(b, trials))
		}
		if v, ok := best[serverVeneur]; ok {
			if b, ok := best[serverBare]; ok {
				fmt.Fprintf(tw, "%s\tveneur/bare\t%.2fx\t\t%.2fx\t%.2fx\t%.2fx\t\t\t\n", wr.w.name,
					v.sent.rate()/b.sent.rate(), v.cpuPerMillion()/b.cpuPerMillion(), b.cpuPerMillion()/v.cpuPerMillion(), v.peakRSSMiB()/b.peakRSSMiB())
			}
		}
	}
	tw.Flush()

	if r.anyFixed() {
		fmt.Fprintln(out)
		fmt.Fprintln(out, "Fixed offered rate")
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "workload\tserver\toffered lines/s\tsent lines/s\tloss\tCPU s/M lines\tpeak RSS MiB\tother load\tresult\tnotes")
		for _, wr := range r.workloads {
			for _, s := range r.servers {
				for _, t := range wr.fixed[s] {
					if t.err != nil {
						fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\t\t\tERROR\t%v\n", wr.w.name, s, groupDigits(t.target), t.err)
						continue
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.3f\t%.1f\t%s\t%s\t%s\n", wr.w.name, s, groupDigits(t.target),
						groupDigits(t.sent.rate()), lossString(t.loss), t.cpuPerMillion(), t.peakRSSMiB(), t.otherLoadString(), passWord(t.pass), fixedNote(t))
				}
				if passed, n := confirmations(wr.fixed[s]); n > 1 {
					fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\t%s\n", wr.w.name, s, passed)
				}
			}
			v, vok := wr.firstFixed(serverVeneur)
			b, bok := wr.firstFixed(serverBare)
			if vok && bok && v.err == nil && b.err == nil {
				fmt.Fprintf(tw, "%s\tveneur/bare\t\t\t\t%.2fx\t%.2fx\t\t\t\n", wr.w.name, v.cpuPerMillion()/b.cpuPerMillion(), v.peakRSSMiB()/b.peakRSSMiB())
			}
		}
		tw.Flush()
	}
	r.renderGaps(out)
}

// renderGaps writes veneur's reader gaps for every trial that has them:
// the longest gap and the gaps counted per bucket over the trial, from
// veneur's self-metrics (listen.reader_gap_*).
func (r *report) renderGaps(out io.Writer) {
	var rows [][]string
	for _, wr := range r.workloads {
		add := func(kind string, trials []trialResult) {
			for _, t := range trials {
				if t.gaps == nil || t.err != nil {
					continue
				}
				row := []string{wr.w.name, kind, groupDigits(t.target), lossString(t.loss), passWord(t.pass && !t.unconfirmed),
					t.gaps.max.Round(10 * time.Microsecond).String()}
				for _, n := range t.gaps.buckets() {
					row = append(row, groupDigits(float64(n)))
				}
				fb := t.gaps.flushBuckets()
				row = append(row, t.gaps.flushMax.Round(10*time.Microsecond).String(), groupDigits(float64(fb[2]+fb[3]+fb[4])))
				rows = append(rows, append(row, t.otherLoadString()))
			}
		}
		add("search", wr.search[serverVeneur])
		add("fixed", wr.fixed[serverVeneur])
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "veneur's reader gaps per trial (time away from the socket between receive calls, from its self-metrics listen.reader_gap_*; counts of gaps by length; the last two of the gaps during a flush, from the boundary until the sinks have the batch)")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\ttrial\toffered lines/s\tloss\tresult\tmax gap\t<=1ms\t1-5ms\t5-20ms\t20-100ms\t>100ms\tmax in flush\t>5ms in flush\tother load")
	for _, row := range rows {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
}

// renderGlobal writes the table of the global workloads.
func (r *report) renderGlobal(out io.Writer) {
	fmt.Fprintln(out)
	fmt.Fprintln(out, r.globalHeader)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\ttransport\tserver\tseries merged\tseries/s\tCPU s\tseries per CPU-s\tserver CPU busy\tpeak RSS MiB\tcounters\tother load\tnotes")
	for i, g := range r.global {
		if g.tier() {
			continue // in the table of tiers
		}
		if g.err != nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\tERROR\t\t\t\t\t\t\t\t%v\n", g.workload, g.transport, g.server, g.err)
			continue
		}
		perSecond := float64(g.sent.series) / g.sent.elapsed.Seconds()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%.0f%%\t%.1f\t%s\t%s\t%s\n", g.workload, g.transport, g.server,
			groupDigits(float64(g.sent.series)), groupDigits(perSecond), g.cpuSeconds, groupDigits(g.perCPUSecond()),
			g.busyShare()*100, float64(g.peakRSS)/(1<<20), g.countersExact(), otherLoadPair(g.otherSrv, g.otherDrv), strings.Join(g.globalNotes(), "; "))
		if g.server != serverVeneur {
			continue
		}
		for _, b := range r.global[:i] {
			if b.server == serverBare && b.workload == g.workload && b.transport == g.transport && b.err == nil && g.perCPUSecond() > 0 {
				fmt.Fprintf(tw, "%s\t%s\tveneur/bare\t\t\t\t%.2fx\t\t%.2fx\t\t\t\n", g.workload, g.transport,
					g.perCPUSecond()/b.perCPUSecond(), float64(g.peakRSS)/float64(b.peakRSS))
			}
		}
	}
	tw.Flush()
	if slices.ContainsFunc(r.global, globalResult.tier) {
		r.renderTiers(out)
	}
}

// renderTiers writes the table of veneur's trials by number of globals.
func (r *report) renderTiers(out io.Writer) {
	fmt.Fprintln(out)
	fmt.Fprintln(out, "A tier of globals: the locals split every flush by the ring of the globals' forward URLs and send each global its part; every global runs on the server CPU. CPU s and series per CPU-s are those of all the globals; share is the series of the global that took the most over the mean; peak RSS is the largest global's and the sum")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\ttransport\tglobals\tseries merged\tseries/s\tCPU s\tseries per CPU-s\tvs 1 global\tshare max/mean\tpeak RSS MiB max\tpeak RSS MiB total\tcounters\tother load\tnotes")
	for _, g := range r.global {
		if g.server != serverVeneur {
			continue
		}
		if g.err != nil {
			fmt.Fprintf(tw, "%s\t%s\t%d\tERROR\t\t\t\t\t\t\t\t\t\t%v\n", g.workload, g.transport, g.globals, g.err)
			continue
		}
		vsOne := ""
		for _, one := range r.global {
			if one.server == serverVeneur && one.globals == 1 && one.workload == g.workload && one.transport == g.transport && one.err == nil && one.perCPUSecond() > 0 {
				vsOne = fmt.Sprintf("%.2fx", g.perCPUSecond()/one.perCPUSecond())
			}
		}
		perSecond := float64(g.sent.series) / g.sent.elapsed.Seconds()
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%.2f\t%s\t%s\t%.3f\t%.1f\t%.1f\t%s\t%s\t%s\n", g.workload, g.transport, g.globals,
			groupDigits(float64(g.sent.series)), groupDigits(perSecond), g.cpuSeconds, groupDigits(g.perCPUSecond()), vsOne,
			g.shareMaxMean(), float64(g.peakRSS)/(1<<20), float64(g.totalRSS)/(1<<20), g.countersExact(),
			otherLoadPair(g.otherSrv, g.otherDrv), strings.Join(g.globalNotes(), "; "))
	}
	tw.Flush()
}

// otherLoadPair renders the other processes' share of the server and
// driver CPUs, e.g. "3%/40%".
func otherLoadPair(srv, drv float64) string {
	if math.IsNaN(srv) || math.IsNaN(drv) {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%/%.0f%%", srv*100, drv*100)
}

func (r *report) anyFixed() bool {
	for _, wr := range r.workloads {
		if len(wr.fixed) > 0 {
			return true
		}
	}
	return false
}

func (r *report) workload(name string) *workloadReport {
	for _, wr := range r.workloads {
		if wr.w.name == name {
			return wr
		}
	}
	return nil
}

// targets evaluates the goals of the performance work on this run's numbers.
func (r *report) targets() []string {
	var out []string
	verdict := func(ok bool, format string, args ...any) {
		out = append(out, fmt.Sprintf("%-4s ", passWord(ok))+fmt.Sprintf(format, args...))
	}
	missing := func(what string) { out = append(out, "n/a  "+what+": not measured in this run") }

	if wr := r.workload("b"); wr != nil {
		v, vok := bestTrial(wr.search[serverVeneur])
		b, bok := bestTrial(wr.search[serverBare])
		if vok && bok {
			ratio := v.sent.rate() / b.sent.rate()
			verdict(ratio >= 0.40 && v.loss < 0.01, "(b) max rate: veneur %s lines/s is %.0f%% of the bare reader's %s (target >= 40%%, loss < 1%%: %s)",
				groupDigits(v.sent.rate()), ratio*100, groupDigits(b.sent.rate()), lossString(v.loss))
			if b.senderLimited {
				out = append(out, "     the bare reader's rate was limited by the sender, so the ratio is an upper bound")
			}
			// The bare reader's lines per CPU-second is what it would take
			// with its CPU to itself at that load; its cost per line only
			// falls at higher rates, so this ratio too is an upper bound.
			capacity := 1e6 / b.cpuPerMillion()
			out = append(out, fmt.Sprintf("     against the bare reader's %s lines per CPU-second: %.0f%%", groupDigits(capacity), v.sent.rate()/capacity*100))
		} else {
			missing("(b) max rate ratio")
		}
		if t, ok := wr.firstFixed(serverVeneur); ok && t.err == nil {
			verdict(t.cpuPerMillion() <= 1.0 && t.pass, "(b) at %s lines/s: veneur %.3f CPU s per M lines (target <= 1.0), loss %s",
				groupDigits(wr.fixedRate), t.cpuPerMillion(), lossString(t.loss))
		} else {
			missing("(b) fixed-rate CPU")
		}
	}
	if wr := r.workload("c"); wr != nil {
		check := func(label string, t trialResult) {
			fl := "not checked"
			if t.flush != nil {
				fl = t.flush.String()
			}
			ok := t.pass && t.loss == 0 && t.flush != nil && t.flush.ok() && t.peakRSSMiB() < 150 && t.cpuPerMillion() <= 4
			verdict(ok, "(c) %s: veneur loss %s, flushes %s, peak RSS %.1f MiB (< 150), %.3f CPU s per M lines (<= 4)",
				label, lossString(t.loss), fl, t.peakRSSMiB(), t.cpuPerMillion())
		}
		if v, ok := bestTrial(wr.search[serverVeneur]); ok {
			check("at its max passing rate "+groupDigits(v.sent.rate())+" lines/s", v)
		} else if trials := wr.search[serverVeneur]; len(trials) > 0 {
			verdict(false, "(c) search: no trial passed; %s", failureNote(trials))
		}
		if t, ok := wr.firstFixed(serverVeneur); ok && t.err == nil {
			check("at "+groupDigits(wr.fixedRate)+" lines/s", t)
		}
	}
	if wr := r.workload("a"); wr != nil {
		cmp := func(label string, v, b trialResult) {
			ratio := v.cpuPerMillion() / b.cpuPerMillion()
			verdict(ratio <= 1.3, "(a) %s: veneur %.3f vs bare %.3f CPU s per M lines = %.2fx (target <= 1.3x)", label, v.cpuPerMillion(), b.cpuPerMillion(), ratio)
		}
		v, vok := wr.firstFixed(serverVeneur)
		b, bok := wr.firstFixed(serverBare)
		if vok && bok && v.err == nil && b.err == nil {
			cmp("at "+groupDigits(wr.fixedRate)+" lines/s", v, b)
		}
		compared := vok && bok && v.err == nil && b.err == nil
		vb, vok := bestTrial(wr.search[serverVeneur])
		bb, bok := bestTrial(wr.search[serverBare])
		if vok && bok {
			cmp("at each server's max rate", vb, bb)
			compared = true
		}
		if !compared {
			missing("(a) CPU ratio")
		}
	}
	for _, g := range r.global {
		if g.workload != "d" || !isGRPC(g.transport) || g.server != serverVeneur || g.tier() || g.err != nil {
			continue
		}
		label := "gRPC"
		if g.transport == transportGRPCv14 {
			label = "gRPC without batch ids (as v14 sends)"
		}
		verdict(g.perCPUSecond() >= 1e6, "(d) %s: the global merged %s small digests per CPU-second (aim >= 1,000,000)",
			label, groupDigits(g.perCPUSecond()))
		for _, b := range r.global {
			if b.workload == "d" && b.transport == g.transport && b.server == serverBare && b.err == nil {
				out = append(out, fmt.Sprintf("     a bare gRPC receiver, which only receives them, took %s per CPU-second", groupDigits(b.perCPUSecond())))
			}
		}
	}
	for _, g := range r.global {
		if g.server != serverVeneur || g.err != nil || g.countersPublished < 0 {
			continue
		}
		if g.tier() {
			verdict(g.countersPublished == g.sent.counters, "(%s) %s, %d globals: together they published every global counter increment they accepted: %s",
				g.workload, g.transport, g.globals, g.countersExact())
			continue
		}
		verdict(g.countersPublished == g.sent.counters, "(%s) %s: the global published every global counter increment it accepted: %s",
			g.workload, g.transport, g.countersExact())
	}
	if len(out) == 0 {
		out = append(out, "none of the targeted workloads ran")
	}
	return out
}

func passWord(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// searchNote explains how far the search got for the best trial.
func searchNote(best trialResult, trials []trialResult) string {
	var notes []string
	if best.senderLimited {
		notes = append(notes, "sender-limited: the server may go faster")
	}
	lowestFail := math.Inf(1)
	for _, t := range trials {
		if !t.pass && t.target > best.target {
			lowestFail = math.Min(lowestFail, t.target)
		}
	}
	if !math.IsInf(lowestFail, 1) {
		notes = append(notes, "failed at "+groupDigits(lowestFail))
	} else if !best.senderLimited {
		notes = append(notes, "no higher rate failed")
	}
	if best.flush != nil {
		notes = append(notes, "flushes "+best.flush.completeness())
	}
	if note, n := confirmations(trials); n > 1 && len(trials) > len(distinctTargets(trials)) {
		notes = append(notes, note)
	}
	return strings.Join(notes, "; ")
}

// distinctTargets are the rates trials ran at.
func distinctTargets(trials []trialResult) map[float64]bool {
	m := map[float64]bool{}
	for _, t := range trials {
		m[t.target] = true
	}
	return m
}

func failureNote(trials []trialResult) string {
	if len(trials) == 0 {
		return ""
	}
	low := trials[0]
	for _, t := range trials {
		if t.target < low.target {
			low = t
		}
	}
	if low.err != nil {
		return fmt.Sprintf("at %s: %v", groupDigits(low.target), low.err)
	}
	note := fmt.Sprintf("at %s: loss %s", groupDigits(low.target), lossString(low.loss))
	if len(low.notes) > 0 {
		note += "; " + strings.Join(low.notes, "; ")
	}
	return note
}

func fixedNote(t trialResult) string {
	var notes []string
	if t.senderLimited {
		notes = append(notes, "sender-limited")
	}
	if t.flush != nil {
		notes = append(notes, "flushes "+t.flush.String())
	}
	notes = append(notes, t.notes...)
	return strings.Join(notes, "; ")
}

// groupDigits renders a rate as an integer with thousands separators.
func groupDigits(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
