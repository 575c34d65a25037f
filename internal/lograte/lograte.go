// Package lograte rate-limits warnings that goroutines may log at once.
package lograte

import (
	"sync/atomic"
	"time"
)

// Due says whether a warning rate-limited by last (the unix nanoseconds of
// its last logging, zero at first) may be logged now, and if so records
// now in last: true at most once every every, and to one caller only when
// several ask at once.
func Due(last *atomic.Int64, every time.Duration) bool {
	now := time.Now().UnixNano()
	prev := last.Load()
	return now-prev >= int64(every) && last.CompareAndSwap(prev, now)
}
