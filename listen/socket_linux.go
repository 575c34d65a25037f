//go:build linux

package listen

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpSocket is one bound UDP socket. Its reader waits inside recvmmsg
// itself while datagrams flow, so a wake-up costs one system call where the
// runtime's poller costs an epoll round and a read. These waits are raw
// system calls that keep the reader's P (scheduler slot): with an ordinary
// system call the runtime's monitor would take the P away after 20µs of
// each wait and, doing so again and again, wake every 20µs. They are
// bounded by a 1 ms receive timeout, after which the reader hands over what
// it holds and yields.
//
// Once readerQuiet waits in a row time out with nothing held, the reader is
// idle, and how it then waits depends on the mode:
//
//   - With several Ps (the usual case) the socket is a duplicate kept out of
//     the poller's epoll set (else an idle thread waiting in epoll would
//     wake for every datagram), and an idle reader waits with an ordinary
//     system call, which lets the runtime take the P back.
//     reserveReaderProcs keeps one P beyond the readers' for the workers,
//     the flusher and the HTTP server (unless GOMAXPROCS is set in the
//     environment).
//   - With a single P (GOMAXPROCS 1, e.g. a process pinned to one CPU) no
//     other P exists to wake, and an extra one would only add thread
//     hand-offs on that CPU. The socket stays in the poller, and an idle
//     reader waits there like any Go network code. While it is busy, the
//     1 ms bound and the yields leave the P to everything else.
type udpSocket struct {
	fd    int
	laddr net.Addr
	// conn is the runtime's socket in single-P mode, nil otherwise.
	conn *net.UDPConn
	// idle mirrors the reader's state, for tests.
	idle atomic.Bool
}

// isIdle reports whether the socket's reader last went idle (see udpSocket).
func (s *udpSocket) isIdle() bool { return s.idle.Load() }

// listenUDP binds one UDP socket on addr; with reusePort several sockets
// share the port and the kernel spreads datagrams across them. It returns
// the receive buffer size the kernel granted.
func listenUDP(addr string, reusePort bool, rcvbuf int, singleP bool) (*udpSocket, int, error) {
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
	var sock *udpSocket
	if singleP {
		sock, err = keepInPoller(conn)
	} else {
		sock, err = detach(conn)
		conn.Close()
	}
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	return sock, granted, nil
}

// keepInPoller makes conn's socket blocking for the busy waits, with the
// 1 ms receive timeout for good; the runtime still polls it for the idle
// waits, which read with MSG_DONTWAIT. veneur never reads through conn.
func keepInPoller(conn *net.UDPConn) (*udpSocket, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &udpSocket{fd: -1, laddr: conn.LocalAddr(), conn: conn}
	var serr error
	err = rc.Control(func(f uintptr) {
		s.fd = int(f)
		if serr = unix.SetNonblock(s.fd, false); serr == nil {
			serr = s.setTimeout(readerHold)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, fmt.Errorf("preparing the UDP socket: %w", err)
	}
	return s, nil
}

// detach returns a blocking duplicate of conn's socket. Closing conn then
// removes the runtime's copy from the poller's epoll set.
func detach(conn *net.UDPConn) (*udpSocket, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var serr error
	err = rc.Control(func(f uintptr) {
		fd, serr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, fmt.Errorf("duplicating the UDP socket: %w", err)
	}
	s := &udpSocket{fd: fd, laddr: conn.LocalAddr()}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("making the UDP socket blocking: %w", err)
	}
	if err := s.setTimeout(readIdleTimeout); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return s, nil
}

func (s *udpSocket) setTimeout(d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("setting SO_RCVTIMEO: %w", err)
	}
	return nil
}

// LocalAddr is the address the socket is bound to.
func (s *udpSocket) LocalAddr() net.Addr { return s.laddr }

// wake ends the reader's current wait; the reader then sees the stop flag,
// drains what the kernel holds and returns.
func (s *udpSocket) wake() {
	// On an unconnected UDP socket shutdown reports ENOTCONN but still
	// marks the socket shut for reading and wakes the waiting reader.
	// Datagrams already queued stay readable; once they are gone, reads
	// return zero-length results at once.
	unix.Shutdown(s.fd, unix.SHUT_RD)
}

// Close releases the socket. The reader must have returned.
func (s *udpSocket) Close() error {
	if s.conn != nil {
		s.fd = -1
		return s.conn.Close()
	}
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
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

// recvmmsg performs one recvmmsg call on fd as a raw system call, which
// keeps the P (see udpSocket).
func (rb *recvBatch) recvmmsg(fd uintptr, flags int) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&rb.hdrs[0])), uintptr(len(rb.hdrs)), uintptr(flags), 0, 0)
	return int(n), errno
}

// recvmmsgReleasing is recvmmsg as an ordinary system call, during which
// the runtime may give the P to other goroutines.
func (rb *recvBatch) recvmmsgReleasing(fd uintptr, flags int) (int, syscall.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&rb.hdrs[0])), uintptr(len(rb.hdrs)), uintptr(flags), 0, 0)
	return int(n), errno
}

// handle processes the first n datagrams of the last call.
func (rb *recvBatch) handle(in Ingester, n int) {
	for i := 0; i < n; i++ {
		rb.handleOne(in, i)
	}
}

func (rb *recvBatch) handleOne(in Ingester, i int) {
	h := &rb.hdrs[i]
	in.Packet(rb.bufs[i][:h.Len], h.Hdr.Flags&unix.MSG_TRUNC != 0)
}

// A reader holds what its ingester gathers for up to readerHold before it
// calls Flush, which hands it to the workers (the ingester sends full
// batches at once). Each hand-off wakes a worker goroutine, so at steady
// moderate rates this cuts worker wake-ups from one per receive round to
// about one per millisecond.
const (
	readerHold = time.Millisecond
	// readerQuiet is how many empty busy waits (of readerHold each) make a
	// reader idle.
	readerQuiet = 50
	// readIdleTimeout bounds an idle reader's wait, a safety net behind
	// wake for noticing the stop flag.
	readIdleTimeout = 10 * time.Second
)

// readersKeepP says that a busy reader keeps its P while it waits, so
// Start reserves one P per reader (see reserveReaderProcs).
const readersKeepP = true

// readUDP reads datagrams of up to size bytes until stopping says so and
// the socket is woken, handing them to the ingester; it then drains what
// the kernel still holds and returns. Failed reads are counted in readErrs.
func readUDP(sock *udpSocket, in Ingester, size int, stopping func() bool, readErrs *atomic.Uint64) error {
	vlen := 32
	if size > 64<<10 {
		vlen = 8
	}
	rb := newRecvBatch(vlen, size)
	fd := uintptr(sock.fd)
	var heldSince time.Time
	held, idle := false, true
	quiet := 0 // consecutive busy waits that timed out holding nothing
	for {
		var n int
		var errno syscall.Errno
		switch {
		case !idle:
			n, errno = rb.recvmmsg(fd, unix.MSG_WAITFORONE)
		case sock.conn != nil:
			n, errno = sock.pollWait(rb, stopping)
		default:
			n, errno = rb.recvmmsgReleasing(fd, unix.MSG_WAITFORONE)
		}
		if stopping() {
			sock.drain(in, rb, n, errno)
			return nil
		}
		switch errno {
		case 0:
			if idle {
				idle = false
				sock.idle.Store(false)
				if sock.conn == nil {
					sock.setTimeout(readerHold)
				}
			}
			quiet = 0
			rb.handle(in, n)
			now := time.Now()
			if !held {
				held, heldSince = true, now
			}
			if now.Sub(heldSince) < readerHold {
				continue
			}
		case unix.EAGAIN:
			// The receive timeout expired: hand over what is held. A
			// reader that held nothing for readerQuiet waits in a row is
			// idle: going idle and back costs a wake-up of the runtime's
			// monitor, so a light but steady stream stays busy.
			if !held && !idle {
				if quiet++; quiet >= readerQuiet {
					idle, quiet = true, 0
					sock.idle.Store(true)
					if sock.conn == nil {
						sock.setTimeout(readIdleTimeout)
					}
				}
			}
		case unix.EINTR:
		case unix.ENOBUFS, unix.ENOMEM:
			// Transient: count it and go on.
			readErrs.Add(1)
		default:
			readErrs.Add(1)
			in.Flush()
			return fmt.Errorf("recvmmsg: %w", errno)
		}
		in.Flush()
		held = false
		// Yield, so that the worker just woken runs on this P at once
		// rather than after another thread has come to take it.
		runtime.Gosched()
	}
}

// pollWait is an idle wait in single-P mode: the reader parks in the
// runtime's poller until the socket is readable, then reads without
// blocking. wake's shutdown makes the socket readable, but a non-blocking
// read of its empty queue still says EAGAIN, so the wait also ends when
// stopping. A failed wait reads as EINTR (the loop just goes on).
func (s *udpSocket) pollWait(rb *recvBatch, stopping func() bool) (n int, errno syscall.Errno) {
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return 0, unix.EINTR
	}
	err = rc.Read(func(fd uintptr) bool {
		n, errno = rb.recvmmsg(fd, unix.MSG_DONTWAIT)
		return errno != unix.EAGAIN || stopping()
	})
	if err != nil {
		return 0, unix.EINTR
	}
	return n, errno
}

// drain processes the round that was in progress when the stop was seen
// and then what the kernel still holds. After wake's shutdown an empty
// queue reads as zero-length results without a source address, which is
// how they differ from a client's empty datagram; the drain asks for
// source addresses and ends at the first such result. (The round already
// read when the stop was seen has no addresses, so its zero-length results
// are skipped: an empty datagram carries no lines either way.) The drain
// reads at most 4096 rounds, so a flood cannot keep it going.
func (s *udpSocket) drain(in Ingester, rb *recvBatch, n int, errno syscall.Errno) {
	defer in.Flush()
	if errno == 0 {
		for i := 0; i < n; i++ {
			if rb.hdrs[i].Len > 0 {
				rb.handleOne(in, i)
			}
		}
	}
	names := make([]unix.RawSockaddrAny, len(rb.hdrs))
	for round := 0; round < 1<<12; round++ {
		for i := range rb.hdrs {
			rb.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&names[i]))
			rb.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrAny
		}
		n, errno := rb.recvmmsg(uintptr(s.fd), unix.MSG_DONTWAIT)
		if errno != 0 {
			return
		}
		for i := 0; i < n; i++ {
			h := &rb.hdrs[i]
			if h.Len == 0 && h.Hdr.Namelen == 0 {
				return
			}
			rb.handleOne(in, i)
		}
		if n < len(rb.hdrs) {
			return
		}
	}
}
