package lograte

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The first call is due; later ones only once every has passed; of many
// goroutines asking at once, one is told it is due.
func TestDue(t *testing.T) {
	var last atomic.Int64
	if !Due(&last, time.Hour) {
		t.Fatal("the first call is not due")
	}
	if Due(&last, time.Hour) {
		t.Error("a second call within the hour is due")
	}
	last.Store(time.Now().Add(-2 * time.Hour).UnixNano())
	var wg sync.WaitGroup
	var due atomic.Int32
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if Due(&last, time.Hour) {
				due.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := due.Load(); n != 1 {
		t.Errorf("%d of 16 concurrent calls were due after the hour, want 1", n)
	}
}
