package veneur

import (
	"runtime"
	"testing"
)

// wakeWithin bounds how long a test waits for a woken reader: shorter than
// the idle wait's receive timeout, so that only wake can end the wait in
// time.
const wakeWithin = readIdleTimeout / 2

// wantProcs is GOMAXPROCS after Start with the given readers: one P beyond
// the readers'.
func wantProcs(before, readers int) int { return max(before, readers+1) }

func TestReserveReaderProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	if b, a := reserveReaderProcs(1); b != 2 || a != 2 {
		t.Errorf("1 reader with GOMAXPROCS 2: %d -> %d, want unchanged", b, a)
	}
	if b, a := reserveReaderProcs(3); b != 2 || a != 4 || runtime.GOMAXPROCS(0) != 4 {
		t.Errorf("3 readers with GOMAXPROCS 2: %d -> %d (now %d), want 2 -> 4", b, a, runtime.GOMAXPROCS(0))
	}
}
