package yield

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// tickRuns reports whether s.Tick yielded. (Whether a goroutine made
// runnable just before ran before Tick returned would tell too, with one
// P, but not always: every 61st round the scheduler looks at its global
// queue first, where the yielding goroutine went.)
func tickRuns(s *Slicer) bool {
	before := s.yields
	s.Tick()
	return s.yields > before
}

// resetShared forgets the shared slice, as if no Slicer had ticked.
func resetShared() {
	shared.start.Store(0)
	shared.turn.Store(0)
}

// age makes the shared slice look as if it began a whole Slice ago.
func age() { shared.start.Add(-int64(Slice)) }

// An Own Slicer yields once its own slice has run; a Tick within the
// slice, and the first Tick, which starts the slice, do not. Neither the
// shared slice nor a reader's turn changes that.
func TestOwnSlicerYieldsAfterASlice(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	lastTurn.Store(0) // no reader has waited (see TestOwnSliceEndsWhenTheReaderWaited)
	s := Slicer{Own: true}
	if tickRuns(&s) {
		t.Error("the first Tick yielded")
	}
	if s.start == 0 {
		t.Fatal("the first Tick did not start a slice")
	}
	resetShared()
	new(Slicer).Tick()
	age()
	if tickRuns(&s) {
		t.Error("a Tick within its own slice yielded because the shared slice ran out")
	}
	s.start -= int64(Slice)
	Turn()
	if !tickRuns(&s) {
		t.Error("a Tick after a whole slice did not yield")
	}
	if since()-s.start >= int64(Slice) {
		t.Error("the yield did not start a new slice")
	}
}

// Slicers that are not Own share one slice: a Slicer's first Tick yields
// when the slice that another began has run out, since the reader waits
// for the work of both; a reader's turn begins a new slice.
func TestSharedSlice(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	resetShared()
	var a, b Slicer
	if tickRuns(&a) {
		t.Error("the first Tick of all yielded")
	}
	if tickRuns(&b) {
		t.Error("a Tick of another Slicer within the shared slice yielded")
	}
	age()
	if !tickRuns(&b) {
		t.Error("the first Tick of a Slicer did not yield once the slice another began had run out")
	}
	if since()-shared.start.Load() >= int64(Slice) {
		t.Error("the yield did not start a new slice")
	}
	age()
	Turn()
	if tickRuns(&a) {
		t.Error("a Tick after a reader's turn yielded: the turn did not begin a new slice")
	}
	if tickRuns(&b) {
		t.Error("a Tick in the slice the turn began yielded")
	}
	age()
	if !tickRuns(&a) {
		t.Error("a Tick did not yield once the slice the turn began had run out")
	}
	// Side by side on several Ps, another's yield begins the shared
	// slice anew: each yields once its own slice has run all the same.
	b.start -= int64(Slice)
	if !tickRuns(&b) {
		t.Error("a Tick did not yield once its own slice had run, the shared one being new")
	}
	// The same when the shared slice has run past minSlice and the
	// reader has not waited: its own slice decides.
	Turn()
	new(Slicer).Tick() // begins the shared slice after the turn
	shared.start.Add(-int64(minSlice))
	b.start -= int64(Slice)
	if !tickRuns(&b) {
		t.Error("a Tick did not yield once its own slice had run, the shared one past minSlice")
	}
}

// Ticks counts every Tick, those that yield and those that do not.
func TestSlicerTicks(t *testing.T) {
	for _, own := range []bool{false, true} {
		s := Slicer{Own: own}
		for i := 0; i < 3; i++ {
			s.Tick()
		}
		s.start -= int64(Slice)
		age()
		s.Tick()
		if got := s.Ticks(); got != 4 {
			t.Errorf("Own %v: Ticks() = %d after 4 Ticks, want 4", own, got)
		}
	}
}

// Turns counts the turns.
func TestTurns(t *testing.T) {
	n := Turns()
	Turn()
	Turn()
	if got := Turns() - n; got != 2 {
		t.Errorf("Turns() grew by %d after 2 Turns, want 2", got)
	}
}

// Once a reader has waited Wait since its turn, the shared slice ends as
// soon as it has run minSlice; before minSlice it goes on (the flush must
// progress however long the reader and the workers took), and a reader
// that has not turned for idleTurn is idle, not waiting for the P.
func TestSharedSliceEndsWhenTheReaderWaited(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	// ran is how long the shared slice has run, wait how long since the
	// reader's turn; those that must stay under a bound are set a second
	// under it, so that the test's own delays on a loaded host cannot
	// carry them over.
	for _, c := range []struct {
		name      string
		ran, wait time.Duration
		yields    bool
	}{
		{"reader waited long, slice ran minSlice", minSlice, Wait, true},
		{"reader waited long, slice just began", minSlice - time.Second, Wait, false},
		{"reader waited little", minSlice, Wait - time.Second, false},
		{"reader idle", minSlice, idleTurn, false},
		{"slice ran out, reader just turned", Slice, -time.Second, true},
	} {
		resetShared()
		var s Slicer
		Turn()
		s.Tick() // begins the shared slice after the turn
		now := since()
		shared.start.Store(now - int64(c.ran))
		lastTurn.Store(now - int64(c.wait))
		if got := tickRuns(&s); got != c.yields {
			t.Errorf("%s: Tick yielded %v, want %v", c.name, got, c.yields)
		}
	}
}

// An Own Slicer's slice also ends after minSlice once the reader has
// waited Wait since its turn, unless the reader is idle or there are no
// turns (several Ps).
func TestOwnSliceEndsWhenTheReaderWaited(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for _, c := range []struct {
		name      string
		ran, wait time.Duration
		noTurns   bool
		yields    bool
	}{
		{"reader waited long, slice ran minSlice", minSlice, Wait, false, true},
		{"reader waited long, slice just began", minSlice - time.Second, Wait, false, false},
		{"reader waited little", minSlice, Wait - time.Second, false, false},
		{"reader idle", minSlice, idleTurn, false, false},
		{"no turns", minSlice, Wait, true, false},
		{"slice ran out, reader just turned", Slice, -time.Second, false, true},
	} {
		s := Slicer{Own: true}
		s.Tick() // begins its slice
		now := since()
		s.start = now - int64(c.ran)
		lastTurn.Store(now - int64(c.wait))
		if c.noTurns {
			lastTurn.Store(0)
		}
		if got := tickRuns(&s); got != c.yields {
			t.Errorf("%s: Tick yielded %v, want %v", c.name, got, c.yields)
		}
	}
}

// BenchmarkTurn is what a single-P reader pays per receive call.
func BenchmarkTurn(b *testing.B) {
	for i := 0; i < b.N; i++ {
		Turn()
	}
}

// BenchmarkTick is one look at the clock that does not yield, for an Own
// Slicer (a worker's) and a shared one (the flush's).
func BenchmarkTick(b *testing.B) {
	for _, own := range []bool{true, false} {
		b.Run(fmt.Sprintf("own=%v", own), func(b *testing.B) {
			s := Slicer{Own: own}
			for i := 0; i < b.N; i++ {
				s.Tick()
				s.start = since() // keep the slices from running out
				shared.start.Store(s.start)
			}
		})
	}
}

// A shared Slicer's yield makes Pending true until Wait has passed; an Own
// Slicer's does not.
func TestPending(t *testing.T) {
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	notPending := func() bool { return !Pending() }
	waitUntil("no pending work", notPending)
	own := Slicer{Own: true}
	for start := time.Now(); time.Since(start) < 2*Slice; {
		own.Tick()
	}
	if Pending() {
		t.Fatal("an Own Slicer's yields made work pending")
	}
	var shared Slicer
	before := shared.Ticks()
	for !Pending() {
		shared.Tick()
		if shared.Ticks()-before > 1<<30 {
			t.Fatal("a shared Slicer never yielded")
		}
	}
	waitUntil("the pending work to be forgotten", notPending)
}

// WorkedSince is true for a mark taken during work, for work that is in
// progress, and for work that began and ended after the mark; false when
// none was.
func TestWorkedSince(t *testing.T) {
	m := WorkMark()
	if WorkedSince(m) {
		t.Fatal("work seen where none was")
	}
	BeginWork()
	if !WorkedSince(m) {
		t.Error("work in progress not seen")
	}
	during := WorkMark()
	EndWork()
	if !WorkedSince(during) {
		t.Error("a mark taken during work did not see it")
	}
	m = WorkMark()
	if WorkedSince(m) {
		t.Error("work seen after it ended")
	}
	BeginWork()
	BeginWork() // overlapping stretches
	EndWork()
	if !WorkedSince(m) {
		t.Error("overlapping work not seen")
	}
	EndWork()
	if !WorkedSince(m) {
		t.Error("work that began and ended since the mark not seen")
	}
	if WorkedSince(WorkMark()) {
		t.Error("work seen after every stretch ended")
	}
}
