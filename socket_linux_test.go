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
