package main

import (
	"math"
	"testing"
)

// search runs a bisector against a server that passes up to threshold and
// returns the rates tried and the best passing one.
func search(b *bisector, threshold, senderMax float64) (tried []float64, best float64) {
	for range 100 { // far above any maxTrials; the bisector must stop itself
		rate, ok := b.next()
		if !ok {
			return tried, best
		}
		tried = append(tried, rate)
		achieved := math.Min(rate, senderMax)
		pass := achieved <= threshold
		if pass {
			best = math.Max(best, achieved)
		}
		b.record(rate, achieved, pass)
	}
	panic("bisector did not stop")
}

func TestBisectorFindsThreshold(t *testing.T) {
	const lo, hi, prec = 100e3, 12e6, 0.05
	for _, threshold := range []float64{150e3, 400e3, 1e6, 2.5e6, 5e6, 9e6} {
		b := newBisector(lo, hi, 12, prec)
		tried, best := search(b, threshold, math.Inf(1))
		if best > threshold || best < threshold/(1+prec) {
			t.Errorf("threshold %v: best %v after %v, want within %.0f%% below", threshold, best, tried, prec*100)
		}
	}
}

func TestBisectorTrialBound(t *testing.T) {
	for maxTrials := 1; maxTrials <= 8; maxTrials++ {
		b := newBisector(100e3, 12e6, maxTrials, 0.001)
		tried, _ := search(b, 3e6, math.Inf(1))
		if len(tried) > maxTrials {
			t.Errorf("maxTrials %d: ran %d trials", maxTrials, len(tried))
		}
		for _, r := range tried {
			if r < 100e3 || r > 12e6 {
				t.Errorf("trial at %v outside the bounds", r)
			}
		}
	}
	// Six trials over a 120x range still narrow to about 10%.
	b := newBisector(100e3, 12e6, 6, 0.05)
	_, best := search(b, 3e6, math.Inf(1))
	if best < 3e6/1.1 {
		t.Errorf("six trials found %v for a 3e6 threshold", best)
	}
}

func TestBisectorAllFail(t *testing.T) {
	b := newBisector(100e3, 12e6, 6, 0.05)
	tried, best := search(b, 0, math.Inf(1))
	if best != 0 || len(tried) != 6 || tried[len(tried)-1] != 100e3 {
		t.Fatalf("tried %v best %v: want 6 trials, the last at the lower bound, none passing", tried, best)
	}
	// A lower bound that already failed is not tried again.
	b = newBisector(100e3, 12e6, 6, 0.05)
	b.record(100e3, 100e3, false)
	if r, ok := b.next(); ok {
		t.Fatalf("next trial at %v after the lower bound failed", r)
	}
}

func TestBisectorLowThreshold(t *testing.T) {
	// Just above the lower bound: the search closes in on it, then stops.
	b := newBisector(100e3, 12e6, 20, 0.05)
	tried, best := search(b, 101e3, math.Inf(1))
	if best != 100e3 {
		t.Fatalf("tried %v best %v, want the lower bound to pass", tried, best)
	}
}

func TestBisectorAllPass(t *testing.T) {
	b := newBisector(100e3, 12e6, 12, 0.05)
	tried, best := search(b, math.Inf(1), math.Inf(1))
	if best < 12e6/1.05 || best > 12e6 {
		t.Fatalf("tried %v best %v, want close under the upper bound", tried, best)
	}
}

func TestBisectorSenderLimited(t *testing.T) {
	b := newBisector(100e3, 12e6, 12, 0.05)
	tried, best := search(b, math.Inf(1), 2e6)
	if best != 2e6 {
		t.Fatalf("tried %v best %v, want the sender's 2e6", tried, best)
	}
	// Two passing trials limited by the sender end the search.
	limited := 0
	for _, r := range tried {
		if r > 2e6/senderLimitedBelow {
			limited++
		}
	}
	if limited != limitedPassesToStop || tried[len(tried)-1] < 2e6 {
		t.Fatalf("tried %v: want the search to stop after %d sender-limited passes", tried, limitedPassesToStop)
	}
}

func TestBisectorStarvedSender(t *testing.T) {
	// The first trial is starved to a tenth of its rate and passes; the
	// search must go on above it rather than stop there.
	b := newBisector(100e3, 12e6, 6, 0.05)
	first, _ := b.next()
	b.record(first, first/10, true)
	tried, best := search(b, 3e6, math.Inf(1))
	if best < 3e6/1.2 {
		t.Fatalf("after a starved first trial at %v: tried %v, best %v; want near 3e6", first, tried, best)
	}
}

func TestBisectorBadBounds(t *testing.T) {
	for _, bs := range []*bisector{newBisector(0, 1e6, 6, 0.05), newBisector(1e6, 1e6, 6, 0.05), newBisector(1e6, 1e3, 6, 0.05), newBisector(1e3, 1e6, 0, 0.05)} {
		if r, ok := bs.next(); ok {
			t.Errorf("bisector %+v proposed %v", bs, r)
		}
	}
}
