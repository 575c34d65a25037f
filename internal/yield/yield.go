// Package yield lets long CPU work, such as a flush, share a P with the
// goroutines that must not wait long for one, such as the UDP readers
// when veneur runs with GOMAXPROCS 1.
//
// Go's scheduler preempts a goroutine that runs on only after about 10 ms,
// and a goroutine that yielded (runtime.Gosched) waits in the global run
// queue behind every goroutine that was made runnable meanwhile. Work that
// calls Slicer.Tick between small steps yields its P at most every Slice,
// so a reader waits at most about that long for the work's turn to end.
package yield

import (
	"runtime"
	"time"
)

// Slice is how long work runs between two yields. Shorter slices keep
// readers waiting less, longer ones let the work finish sooner when a
// reader holds the P for a while each time it gets it (a busy reader
// waits up to a millisecond for its next datagram).
const Slice = time.Millisecond

// Slicer yields the P once Slice has passed since it last did (or since
// its first Tick). The zero value is ready; a Slicer serves one goroutine.
type Slicer struct {
	start time.Time
	ticks uint64
}

// Ticks is how many times Tick was called: how often the work looked at
// the clock, which bounds how long it can run between two yields.
func (s *Slicer) Ticks() uint64 { return s.ticks }

// Tick yields the P when the current slice has run for Slice. Between
// yields it costs a clock read.
func (s *Slicer) Tick() {
	s.ticks++
	now := time.Now()
	if s.start.IsZero() {
		s.start = now
		return
	}
	if now.Sub(s.start) >= Slice {
		runtime.Gosched()
		s.start = time.Now()
	}
}
