package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Bare reader protocol on stdin/stdout: after binding, the reader prints
// "ready PORT RCVBUF" (RCVBUF as granted by the kernel). Each "stats" line on
// stdin is answered with "stats LINES DATAGRAMS BYTES TRUNCATED". End of
// stdin stops the reader, so it cannot outlive the driver.

const (
	bareBatch    = 64   // datagrams per recvmmsg call
	bareSlotSize = 4096 // bytes per datagram buffer, as metric_max_length
)

// runBare is the bare reader: a recvmmsg loop that only counts lines, the
// ceiling any DogStatsD server can reach on this machine.
func runBare(rcvbuf int, stdin io.Reader, stdout io.Writer) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bare reader socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
		return fmt.Errorf("bare reader SO_RCVBUF %d: %w", rcvbuf, err)
	}
	// A receive timeout lets the loop notice the stop request.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000}); err != nil {
		return fmt.Errorf("bare reader SO_RCVTIMEO: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fmt.Errorf("bare reader bind 127.0.0.1:0: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("bare reader getsockname: %w", err)
	}
	granted, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		return fmt.Errorf("bare reader reading SO_RCVBUF: %w", err)
	}
	out := bufio.NewWriter(stdout)
	fmt.Fprintf(out, "ready %d %d\n", sa.(*unix.SockaddrInet4).Port, granted)
	if err := out.Flush(); err != nil {
		return fmt.Errorf("bare reader writing to the driver: %w", err)
	}

	var lines, dgrams, nbytes, truncated atomic.Uint64
	var stop atomic.Bool
	go func() {
		defer stop.Store(true)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) != "stats" {
				continue
			}
			fmt.Fprintf(out, "stats %d %d %d %d\n", lines.Load(), dgrams.Load(), nbytes.Load(), truncated.Load())
			if out.Flush() != nil {
				return
			}
		}
	}()

	buf := make([]byte, bareBatch*bareSlotSize)
	iovs := make([]unix.Iovec, bareBatch)
	msgs := make([]unix.Mmsghdr, bareBatch)
	for i := range msgs {
		iovs[i].Base = &buf[i*bareSlotSize]
		iovs[i].SetLen(bareSlotSize)
		msgs[i].Hdr.Iov = &iovs[i]
		msgs[i].Hdr.SetIovlen(1)
	}
	// The loop blocks in recvmmsg as a C reader would: a raw system call
	// on a locked thread, without the scheduler hand-off of a Go system
	// call, which costs about as much again at low rates. The thread then
	// keeps its P while blocked, so a second P serves the stats goroutine.
	runtime.GOMAXPROCS(2)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for !stop.Load() {
		n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), bareBatch, unix.MSG_WAITFORONE, 0, 0)
		if errno != 0 {
			if errno == unix.EAGAIN || errno == unix.EINTR {
				continue
			}
			return fmt.Errorf("bare reader recvmmsg: %w", errno)
		}
		var l, b, t uint64
		for i := range int(n) {
			size := int(msgs[i].Len)
			if msgs[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
				t++
				size = bareSlotSize
			}
			b += uint64(size)
			l += uint64(countLines(buf[i*bareSlotSize : i*bareSlotSize+size]))
		}
		lines.Add(l)
		dgrams.Add(uint64(n))
		nbytes.Add(b)
		truncated.Add(t)
	}
	return nil
}

// bareMain runs the bare reader mode and returns the process exit code.
func bareMain(rcvbuf int) int {
	if err := runBare(rcvbuf, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
