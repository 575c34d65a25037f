package veneur

import (
	"testing"

	"golang.org/x/sys/unix"
)

// setNoReadTimeout makes a blocking-mode socket wait without end, so that
// only wake can end the wait.
func setNoReadTimeout(t *testing.T, s *udpSocket) {
	t.Helper()
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{}); err != nil {
		t.Fatal(err)
	}
}

// wantProcs is GOMAXPROCS after Start with the given readers: one P beyond
// the readers'.
func wantProcs(before, readers int) int { return max(before, readers+1) }
