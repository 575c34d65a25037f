package main

import "math"

// bisector searches, in a bounded number of trials, for the highest offered
// rate that passes. It halves the gap between the highest passing and the
// lowest failing rate in log space, since rates span orders of magnitude.
// The lower bound is assumed to pass until tested; if no trial has passed
// when one trial is left, that trial goes to the lower bound so that the
// search reports a result whenever the lower bound passes.
type bisector struct {
	lo, hi    float64 // search bounds, lines per second
	maxTrials int
	precision float64 // stop once failing/passing <= 1+precision

	trials        int
	pass          float64 // highest passing rate, 0 when none
	fail          float64 // lowest failing rate, 0 when none
	loTested      bool
	limitedPasses int // passing trials the sender could not drive at the rate asked
}

// limitedPassesToStop is how many passing trials limited by the sender end
// the search: one may be a sender starved by a passing neighbour on its CPU,
// a second means the sender is at its ceiling.
const limitedPassesToStop = 2

func newBisector(lo, hi float64, maxTrials int, precision float64) *bisector {
	return &bisector{lo: lo, hi: hi, maxTrials: maxTrials, precision: precision}
}

// next returns the rate of the next trial, or false when the search is done.
func (b *bisector) next() (float64, bool) {
	if b.trials >= b.maxTrials || b.limitedPasses >= limitedPassesToStop || b.lo <= 0 || b.hi <= b.lo {
		return 0, false
	}
	low, high := b.lo, b.hi
	if b.pass > 0 {
		low = b.pass
	}
	if b.fail > 0 {
		high = b.fail
	}
	if b.pass == 0 {
		if b.loTested {
			return 0, false // the lower bound itself failed
		}
		if b.trials == b.maxTrials-1 || high <= b.lo*(1+b.precision) {
			return b.lo, true
		}
	}
	if high <= low*(1+b.precision) {
		return 0, false
	}
	return math.Sqrt(low * high), true
}

// record notes the outcome of a trial asked to run at rate that achieved
// the rate achieved. A pass below the rate asked proves only the achieved
// rate; a fail counts at the rate asked, to keep the search bounded.
func (b *bisector) record(rate, achieved float64, pass bool) {
	b.trials++
	if rate <= b.lo {
		b.loTested = true
	}
	if pass {
		proven := rate
		if achieved < senderLimitedBelow*rate {
			b.limitedPasses++
			proven = achieved
		}
		b.pass = math.Max(b.pass, proven)
		return
	}
	if b.fail == 0 || rate < b.fail {
		b.fail = rate
	}
}
