package veneur

import (
	"os"
	"testing"
)

// TestMain runs the test binary as the UDP sender of
// BenchmarkFlushReaderGap when that benchmark starts it so (see
// runGapSender), and runs the tests otherwise.
func TestMain(m *testing.M) {
	if addr := os.Getenv(gapSenderEnv); addr != "" {
		os.Exit(runGapSender(addr))
	}
	os.Exit(m.Run())
}
