//go:build !linux

package veneur

import "time"

// wakeWithin bounds how long a test waits for a woken reader.
const wakeWithin = 5 * time.Second

// wantProcs is GOMAXPROCS after Start: unchanged, readers keep no P here.
func wantProcs(before, _ int) int { return before }
