//go:build linux

package veneur

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// listenUDP binds one UDP socket on addr; with reusePort several sockets
// share the port and the kernel spreads datagrams across them.
func listenUDP(addr string, reusePort bool, rcvbuf int) (*net.UDPConn, int, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if reusePort {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return nil, 0, err
	}
	conn := pc.(*net.UDPConn)
	granted, err := setReadBuffer(conn, rcvbuf)
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	return conn, granted, nil
}

// setReadBuffer asks for SO_RCVBUF of n bytes and returns what the kernel
// granted. As root, SO_RCVBUFFORCE may exceed net.core.rmem_max; otherwise
// the kernel caps the request there.
func setReadBuffer(conn *net.UDPConn, n int) (int, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var granted int
	var serr error
	err = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n); serr != nil {
				return
			}
		}
		// The kernel reports twice the usable size it booked.
		var v int
		v, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		granted = v / 2
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("setting SO_RCVBUF: %w", serr)
	}
	return granted, nil
}

// recvBatch is the set of buffers one recvmmsg call fills.
type recvBatch struct {
	bufs [][]byte
	iovs []unix.Iovec
	hdrs []unix.Mmsghdr
}

func newRecvBatch(n, size int) *recvBatch {
	rb := &recvBatch{
		bufs: make([][]byte, n),
		iovs: make([]unix.Iovec, n),
		hdrs: make([]unix.Mmsghdr, n),
	}
	slab := make([]byte, n*size)
	for i := range rb.bufs {
		rb.bufs[i] = slab[i*size : (i+1)*size : (i+1)*size]
		rb.iovs[i].Base = &rb.bufs[i][0]
		rb.iovs[i].SetLen(size)
		rb.hdrs[i].Hdr.Iov = &rb.iovs[i]
		rb.hdrs[i].Hdr.SetIovlen(1)
	}
	return rb
}

// recvmmsg performs one recvmmsg call on fd. Go keeps its sockets
// non-blocking, so the call never blocks, and it is made as a raw system
// call: the scheduler hand-off of an ordinary one (which also wakes the
// runtime's monitor thread) cost more than the call itself at low rates.
func (rb *recvBatch) recvmmsg(fd uintptr) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&rb.hdrs[0])), uintptr(len(rb.hdrs)), 0, 0, 0)
	return int(n), errno
}

// readUDP reads datagrams until the socket is closed, handing each one to
// the ingester. Once stop is set and the read is woken by a deadline, it
// drains what is already queued in the socket and returns.
func readUDP(conn *net.UDPConn, in *ingester, size int, stopping func() bool) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	vlen := 32
	if size > 64<<10 {
		vlen = 8
	}
	rb := newRecvBatch(vlen, size)
	handle := func(n int) {
		for i := 0; i < n; i++ {
			h := &rb.hdrs[i]
			in.handlePacket(rb.bufs[i][:h.Len], h.Hdr.Flags&unix.MSG_TRUNC != 0)
		}
		in.flush()
	}
	for {
		var fatal error
		// One Read serves many datagrams: the callback returns false
		// (wait for readiness) once the socket is drained. A round that
		// filled fewer buffers than it offered found the queue empty, so
		// the reader parks at once instead of probing for EAGAIN; any
		// datagram that arrives later makes the poller ready again.
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, errno := rb.recvmmsg(fd)
				switch errno {
				case 0:
					handle(n)
					if n < len(rb.hdrs) {
						return false
					}
				case unix.EAGAIN:
					return false
				case unix.EINTR:
				case unix.ECONNREFUSED, unix.ENOBUFS, unix.ENOMEM:
					// Transient: count it and go on.
					in.stats.readErrors.Add(1)
				default:
					in.stats.readErrors.Add(1)
					fatal = fmt.Errorf("recvmmsg: %w", errno)
					return true
				}
			}
		})
		if fatal != nil {
			return fatal
		}
		if err == nil {
			continue
		}
		if !stopping() && !errors.Is(err, net.ErrClosed) {
			return err
		}
		// Shutting down: take what the kernel still holds.
		for {
			var cerr error
			var n int
			err := rc.Control(func(fd uintptr) {
				var errno syscall.Errno
				n, errno = rb.recvmmsg(fd)
				if errno != 0 {
					cerr = errno
				}
			})
			if err != nil || cerr != nil || n <= 0 {
				return nil
			}
			handle(n)
		}
	}
}
