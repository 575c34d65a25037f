package main

import "time"

// sendStats is what one paced sending run achieved.
type sendStats struct {
	datagrams, lines, counters int64
	elapsed                    time.Duration
	errors                     int64 // sends the kernel refused (ENOBUFS, ECONNREFUSED)
}

// rate is the achieved rate in lines per second.
func (s sendStats) rate() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.lines) / s.elapsed.Seconds()
}

// pacer decides, from the time elapsed since the start of a run, how many
// datagrams may go out next: a token bucket filled at rate lines per second
// that never lets a batch exceed maxBatch datagrams.
type pacer struct {
	rate     float64 // lines per second
	perDgram int
	maxBatch int
}

// batchSize is the number of datagrams per sendmmsg call at this rate: large
// enough to amortise the call, small enough that a batch is due about every
// half millisecond, so that the traffic is not needlessly bursty.
func batchSize(rate float64, perDgram, maxBatch int) int {
	n := int(rate / float64(perDgram) / 2000)
	return max(1, min(n, maxBatch))
}

// next returns how many datagrams may be sent now, having sent sentLines,
// or, when none may, how long to wait before asking again.
func (p pacer) next(elapsed time.Duration, sentLines int64) (int, time.Duration) {
	due := int64(p.rate * elapsed.Seconds())
	if due <= sentLines {
		batch := batchSize(p.rate, p.perDgram, p.maxBatch)
		need := sentLines + int64(batch*p.perDgram) - due
		return 0, time.Duration(float64(need) / p.rate * float64(time.Second))
	}
	n := (due - sentLines + int64(p.perDgram) - 1) / int64(p.perDgram)
	return int(min(n, int64(p.maxBatch))), 0
}
