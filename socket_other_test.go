//go:build !linux

package veneur

import "testing"

func setNoReadTimeout(t *testing.T, _ *udpSocket) { t.Skip("blocking reads are Linux-only") }
