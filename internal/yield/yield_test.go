package yield

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// tickRuns reports whether a goroutine made runnable just before s.Tick
// ran before Tick returned: with one P, only a yield lets it.
func tickRuns(s *Slicer) bool {
	var ran atomic.Bool
	done := make(chan struct{})
	go func() {
		ran.Store(true)
		close(done)
	}()
	s.Tick()
	got := ran.Load()
	<-done
	return got
}

// A Tick once a slice has run yields the P; a Tick within the slice, and
// the first Tick, which starts the slice, do not.
func TestSlicerYieldsAfterASlice(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var s Slicer
	if tickRuns(&s) {
		t.Error("the first Tick yielded")
	}
	if s.start.IsZero() {
		t.Fatal("the first Tick did not start a slice")
	}
	if tickRuns(&s) {
		t.Error("a Tick within the slice yielded")
	}
	s.start = time.Now().Add(-Slice)
	if !tickRuns(&s) {
		t.Error("a Tick after a whole slice did not yield")
	}
	if time.Since(s.start) >= Slice {
		t.Error("the yield did not start a new slice")
	}
}

// Ticks counts every Tick, those that yield and those that do not.
func TestSlicerTicks(t *testing.T) {
	var s Slicer
	for i := 0; i < 3; i++ {
		s.Tick()
	}
	s.start = time.Now().Add(-Slice)
	s.Tick()
	if got := s.Ticks(); got != 4 {
		t.Errorf("Ticks() = %d after 4 Ticks, want 4", got)
	}
}
