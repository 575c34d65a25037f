//go:build !linux

package veneur

import "testing"

func setNoReadTimeout(t *testing.T, _ *udpSocket) { t.Skip("blocking reads are Linux-only") }

// wantProcs is GOMAXPROCS after Start: unchanged, readers keep no P here.
func wantProcs(before, _ int) int { return before }
