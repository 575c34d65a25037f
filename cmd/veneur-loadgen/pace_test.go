package main

import (
	"math"
	"testing"
	"time"
)

func TestBatchSize(t *testing.T) {
	tests := []struct {
		rate     float64
		perDgram int
		want     int
	}{
		{1000, 1, 1},
		{100_000, 25, 2},
		{100_000, 1, 50},
		{10_000_000, 25, 64},
		{0, 25, 1},
	}
	for _, tc := range tests {
		if got := batchSize(tc.rate, tc.perDgram, 64); got != tc.want {
			t.Errorf("batchSize(%v, %d) = %d, want %d", tc.rate, tc.perDgram, got, tc.want)
		}
	}
}

func TestPacerNext(t *testing.T) {
	p := pacer{rate: 1_000_000, perDgram: 25, maxBatch: 64}
	if n, wait := p.next(0, 0); n != 0 || wait <= 0 {
		t.Fatalf("at start: %d datagrams, wait %v; want a wait", n, wait)
	}
	// 1ms at 1M lines/s is 1000 lines, 40 datagrams of 25.
	if n, _ := p.next(time.Millisecond, 0); n != 40 {
		t.Fatalf("after 1ms: %d datagrams, want 40", n)
	}
	// A partial datagram's worth rounds up to one.
	if n, _ := p.next(time.Millisecond, 990); n != 1 {
		t.Fatalf("10 lines due: %d datagrams, want 1", n)
	}
	// Far behind: capped at one batch.
	if n, _ := p.next(time.Second, 0); n != 64 {
		t.Fatalf("far behind: %d datagrams, want 64", n)
	}
}

// TestPacerSchedule runs the pacer on a simulated clock where each send
// takes cost and each wait takes what the pacer asked (plus oversleep), and
// checks that the lines sent track the rate.
func TestPacerSchedule(t *testing.T) {
	tests := []struct {
		rate      float64
		perDgram  int
		cost      time.Duration // per sendmmsg call
		oversleep time.Duration
	}{
		{100_000, 25, 5 * time.Microsecond, 60 * time.Microsecond},
		{2_000_000, 25, 20 * time.Microsecond, 60 * time.Microsecond},
		{100_000, 1, 5 * time.Microsecond, 1 * time.Millisecond},
		{500, 1, time.Microsecond, 0},
	}
	for _, tc := range tests {
		p := pacer{rate: tc.rate, perDgram: tc.perDgram, maxBatch: 64}
		var now time.Duration
		var sent int64
		const d = 3 * time.Second
		for steps := 0; now < d; steps++ {
			if steps > 10_000_000 {
				t.Fatalf("rate %v: simulation did not finish", tc.rate)
			}
			n, wait := p.next(now, sent)
			if n == 0 {
				now += wait + tc.oversleep
				continue
			}
			sent += int64(n * tc.perDgram)
			now += tc.cost
		}
		want := tc.rate * now.Seconds()
		// Never ahead of the schedule by more than a datagram, never behind
		// by more than one batch plus an oversleep.
		behind := float64(64*tc.perDgram) + tc.rate*tc.oversleep.Seconds()
		if got := float64(sent); got > want+float64(tc.perDgram) || got < want-behind {
			t.Errorf("rate %v: sent %v lines in %v, want %v (slack %v)", tc.rate, got, now, math.Round(want), behind)
		}
	}
}
