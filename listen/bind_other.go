//go:build !linux

package listen

import (
	"os"
	"syscall"
)

// reusePortSupported is false: SO_REUSEPORT is used on Linux only, so
// -takeover has nothing to join here.
const reusePortSupported = false

// reusePortControl is nil: host:port sockets are bound plainly.
var reusePortControl func(network, address string, c syscall.RawConn) error

// restrictSocket does nothing here; the chmod after the bind sets the
// mode.
func restrictSocket(int, os.FileMode) {}

// socketListens cannot tell here; known is false.
func socketListens(int) (listening, known bool) { return false, false }
