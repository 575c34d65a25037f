// Package yield lets long CPU work, such as a flush, share a P with the
// goroutines that must not wait long for one, such as the UDP readers
// when veneur runs with GOMAXPROCS 1.
//
// Go's scheduler preempts a goroutine that runs on only after about 10 ms,
// and a goroutine that yielded (runtime.Gosched) waits in the global run
// queue behind every goroutine that was made runnable meanwhile. Work that
// calls Slicer.Tick between small steps yields its P at most every Slice,
// so a reader waits at most about that long for the work's turn to end.
//
// A flush is the work of several goroutines: the flusher, then each sink's
// encoders, which the flusher starts as it finishes. Were each to run a
// slice of its own, a reader would wait for one slice of each of them that
// the scheduler runs before it. So Slicers share one slice: it begins at
// the first Tick after a reader's turn (Turn) or after a yield, whichever
// goroutine makes that Tick, and the first Tick of any of them that finds
// it has run for Slice yields (so does one whose own slice has: see
// Slicer), or for minSlice once the reader has waited Wait since its turn.
// A worker, whose work is what the readers hand it and which must keep up
// with them, keeps a slice of its own (Slicer.Own), which also ends after
// minSlice once the reader has waited Wait.
//
// BeginWork and EndWork mark the stretches of such work, so that a reader
// can tell its gaps during a flush from the rest (WorkMark, WorkedSince).
package yield

import (
	"runtime"
	"sync/atomic"
	"time"
)

// Slice is how long work runs between two yields. Shorter slices keep
// readers waiting less, longer ones let the work finish sooner when a
// reader holds the P for a while each time it gets it (a busy reader
// waits up to a millisecond for its next datagram).
const Slice = time.Millisecond

// Wait is how long a reader should wait for its next turn. The shared
// slice also ends once Wait has passed since the reader's last turn, after
// minSlice: the reader's own handling of its datagrams and the workers
// that process them run first, and a flush slice of a whole Slice on top
// of them would keep the reader away for longer than the sum of the
// three, when the workers are busy. minSlice keeps the flush going
// however long those take.
const (
	Wait     = 2 * time.Millisecond
	minSlice = Slice / 4
	// idleTurn is how long after its last turn a reader counts as idle
	// (waiting for datagrams in the runtime's poller, not for the P):
	// Wait then no longer shortens the slice.
	idleTurn = 20 * time.Millisecond
)

// epoch is the origin of the clock readings kept in atomics.
var epoch = time.Now()

// since returns the monotonic time since epoch, in nanoseconds.
func since() int64 { return int64(time.Since(epoch)) }

var (
	// turns counts the readers' turns (see Turn), and lastTurn is when
	// the last was (since), 0 before the first.
	turns    atomic.Uint64
	lastTurn atomic.Int64
	// shared is the slice that Slicers share: the turn it began after
	// and when it began, 0 when none has begun.
	shared struct {
		turn  atomic.Uint64
		start atomic.Int64
	}
)

// Turn notes that a goroutine that work yields to, such as a UDP reader
// sharing the work's P, had its turn: the shared slice ends, and the next
// begins at the next Tick of a Slicer, and ends early once Wait has
// passed since this turn. A reader calls it after each receive call; it
// costs a clock read and two atomic writes.
func Turn() {
	turns.Add(1)
	lastTurn.Store(since())
}

// readerWaited reports whether a reader has waited Wait since its last
// turn and is not idle (see idleTurn). Without turns (several Ps) it is
// false.
func readerWaited(now int64) bool {
	t := lastTurn.Load()
	wait := now - t
	return t != 0 && wait >= int64(Wait) && wait < int64(idleTurn)
}

// Turns is how many times Turn was called.
func Turns() uint64 { return turns.Load() }

// lastYield is when a shared Slicer last yielded (since), 0 before.
var lastYield atomic.Int64

// Pending reports whether work that shares its slice with the readers
// yielded within the last Wait: it is waiting for the P. A single-P reader
// then does not wait for datagrams holding the P (a blocking receive call),
// but looks and gives the P back at once when there are none.
func Pending() bool {
	t := lastYield.Load()
	return t != 0 && since()-t < int64(Wait)
}

// Slicer yields the P once Slice has passed since the slice began. The
// zero value is ready and shares its slice with every other Slicer that is
// not Own; a Slicer serves one goroutine.
//
// A Slicer also keeps a slice of its own, which begins at its first Tick
// and after each of its yields, and yields when either has run for Slice:
// with several Ps, the flush's goroutines run side by side and each
// yields at least that often (the shared slice, which another's yield
// begins anew, would let it run on).
type Slicer struct {
	// Own makes the Slicer keep only a slice of its own.
	Own   bool
	start int64 // when its own slice began (since), 0 before the first Tick
	ticks uint64
	// yields counts the Ticks that yielded.
	yields uint64
}

// Ticks is how many times Tick was called: how often the work looked at
// the clock, which bounds how long it can run between two yields.
func (s *Slicer) Ticks() uint64 { return s.ticks }

// Tick yields the P when the current slice has run for Slice. Between
// yields it costs a clock read (and, shared, two atomic loads).
func (s *Slicer) Tick() {
	s.ticks++
	now := since()
	if s.start == 0 {
		s.start = now
	}
	over := now-s.start >= int64(Slice)
	if s.Own {
		// A worker's slice too ends after minSlice once a reader has
		// waited Wait: two workers and the flush, each running a whole
		// Slice in turn, would keep it away for three.
		over = over || now-s.start >= int64(minSlice) && readerWaited(now)
	} else {
		if t := turns.Load(); shared.start.Load() == 0 || shared.turn.Load() != t {
			// A reader had its turn since the shared slice began: a
			// new one begins.
			shared.turn.Store(t)
			shared.start.Store(now)
		} else if ran := now - shared.start.Load(); ran >= int64(Slice) {
			over = true
		} else if ran >= int64(minSlice) {
			over = over || readerWaited(now)
		}
	}
	if !over {
		return
	}
	if !s.Own {
		lastYield.Store(now)
	}
	runtime.Gosched()
	s.yields++
	s.start = since()
	if !s.Own {
		shared.turn.Store(turns.Load())
		shared.start.Store(s.start)
	}
}

// work tracks the stretches of work that readers share their CPU with,
// such as flushes, for readers that tell their gaps during it from the
// rest: active is how many are in progress, changes counts their
// beginnings and ends.
var work struct {
	active  atomic.Int32
	changes atomic.Uint64
}

// BeginWork notes that a stretch of work, such as a flush, began; EndWork
// ends it. Stretches may overlap or nest.
func BeginWork() {
	work.changes.Add(1)
	work.active.Add(1)
}

// EndWork ends a stretch that BeginWork began.
func EndWork() {
	work.active.Add(-1)
	work.changes.Add(1)
}

// activeMark is set in a WorkMark taken while work was in progress.
const activeMark = 1 << 63

// WorkMark returns a mark for WorkedSince: a reader takes one as it
// leaves its socket.
func WorkMark() uint64 {
	m := work.changes.Load() &^ activeMark
	if work.active.Load() > 0 {
		m |= activeMark
	}
	return m
}

// WorkedSince reports whether work was in progress at any time since mark
// was taken: then, now, or in between (it began or ended).
func WorkedSince(mark uint64) bool {
	return mark&activeMark != 0 || work.active.Load() > 0 || work.changes.Load()&^activeMark != mark&^activeMark
}
