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

	trials   int
	pass     float64 // highest passing rate, 0 when none
	fail     float64 // lowest failing rate, 0 when none
	loTested bool
	capped   bool // a passing trial was limited by the sender, not the server
}

func newBisector(lo, hi float64, maxTrials int, precision float64) *bisector {
	return &bisector{lo: lo, hi: hi, maxTrials: maxTrials, precision: precision}
}

// next returns the rate of the next trial, or false when the search is done.
func (b *bisector) next() (float64, bool) {
	if b.trials >= b.maxTrials || b.capped || b.lo <= 0 || b.hi <= b.lo {
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

// record notes a trial's outcome. senderLimited means the sender could not
// reach the rate asked for, so higher rates cannot be tested.
func (b *bisector) record(rate float64, pass, senderLimited bool) {
	b.trials++
	if rate <= b.lo {
		b.loTested = true
	}
	if pass {
		b.pass = math.Max(b.pass, rate)
		if senderLimited {
			b.capped = true
		}
		return
	}
	if b.fail == 0 || rate < b.fail {
		b.fail = rate
	}
}
