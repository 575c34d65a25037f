//go:build linux

package listen

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// sendmmsg sends the messages of hdrs on fd.
func sendmmsg(fd int, hdrs []unix.Mmsghdr) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
	if errno != 0 {
		return int(n), errno
	}
	return int(n), nil
}
