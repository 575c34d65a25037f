//go:build linux

package listen

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/veneur/veneur/internal/yield"
)

// udpSocket is one bound datagram socket: UDP, or unix datagram. Its
// reader waits inside recvmmsg itself while datagrams flow, so a wake-up
// costs one system call where the runtime's poller costs an epoll round
// and a read. These waits are raw system calls that keep the reader's P
// (scheduler slot): with an ordinary system call the runtime's monitor
// would take the P away after 20µs of each wait and, doing so again and
// again, wake every 20µs. They are bounded by a 1 ms receive timeout, after
// which the reader hands over what it holds and yields.
//
// Once readerQuiet waits in a row time out with nothing held, the reader is
// idle, and how it then waits depends on the mode:
//
//   - With several Ps (the usual case) the socket is a duplicate kept out of
//     the poller's epoll set (else an idle thread waiting in epoll would
//     wake for every datagram), and an idle reader waits in poll(2) on the
//     socket and on an eventfd that wake writes, an ordinary system call
//     that lets the runtime take the P back.
//     reserveReaderProcs keeps one P beyond the readers' for the workers,
//     the flusher and the HTTP server (unless GOMAXPROCS is set in the
//     environment).
//   - With a single P (GOMAXPROCS 1, e.g. a process pinned to one CPU) no
//     other P exists to wake, and an extra one would only add thread
//     hand-offs on that CPU. The socket stays in the poller, and an idle
//     reader waits there like any Go network code; wake ends that wait
//     with a read deadline. While it is busy, the 1 ms bound and the
//     yields leave the P to everything else.
//
// wake never shuts the socket down: an inherited socket is shared with the
// process that passed it and with the next veneur, which must go on
// reading it.
type udpSocket struct {
	fd    int
	laddr net.Addr
	// conn is the runtime's socket in single-P mode, nil otherwise.
	conn interface {
		syscall.Conn
		SetReadDeadline(time.Time) error
		Close() error
	}
	// wakeFD is the eventfd wake writes and an idle reader polls, -1 in
	// single-P mode.
	wakeFD int
	// shared says the socket was inherited: closeDoor leaves it alone.
	shared bool
	// file is the socket file of a unix datagram socket bound here.
	file *unixFile
	// idle mirrors the reader's state, for tests.
	idle atomic.Bool
}

// isIdle reports whether the socket's reader last went idle (see udpSocket).
func (s *udpSocket) isIdle() bool { return s.idle.Load() }

// listenUDP binds one UDP socket on addr, for tests; with reusePort
// several sockets share the port and the kernel spreads datagrams across
// them. It returns the receive buffer size the kernel granted.
func listenUDP(addr string, reusePort bool, rcvbuf int, singleP bool) (*udpSocket, int, error) {
	pc, err := (&Binder{Takeover: reusePort}).packet("udp_address", addr, kindUDP, reusePort)
	if err != nil {
		return nil, 0, err
	}
	return newDatagramSocket(pc, rcvbuf, singleP)
}

// newDatagramSocket prepares the bound socket pc for a reader: it asks for
// a receive buffer of rcvbuf bytes and returns the size the kernel
// granted.
func newDatagramSocket(pc *packetConn, rcvbuf int, singleP bool) (*udpSocket, int, error) {
	conn := pc.conn
	granted, err := setReadBuffer(conn, rcvbuf)
	if err != nil {
		conn.Close()
		pc.file.remove()
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
		pc.file.remove()
		return nil, 0, err
	}
	sock.shared, sock.file = pc.inherited, pc.file
	return sock, granted, nil
}

// keepInPoller makes conn's socket blocking for the busy waits, with the
// 1 ms receive timeout for good; the runtime still polls it for the idle
// waits, which read with MSG_DONTWAIT. veneur never reads through conn.
func keepInPoller(conn sysPacketConn) (*udpSocket, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &udpSocket{fd: -1, laddr: conn.LocalAddr(), conn: conn, wakeFD: -1}
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
		return nil, fmt.Errorf("preparing the socket: %w", err)
	}
	return s, nil
}

// detach returns a blocking duplicate of conn's socket, with its eventfd.
// Closing conn then removes the runtime's copy from the poller's epoll
// set.
func detach(conn sysPacketConn) (*udpSocket, error) {
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
		return nil, fmt.Errorf("duplicating the socket: %w", err)
	}
	s := &udpSocket{fd: fd, laddr: conn.LocalAddr(), wakeFD: -1}
	if err := unix.SetNonblock(fd, false); err != nil {
		s.Close()
		return nil, fmt.Errorf("making the socket blocking: %w", err)
	}
	if err := s.setTimeout(readerHold); err != nil {
		s.Close()
		return nil, err
	}
	if s.wakeFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		s.wakeFD = -1
		s.Close()
		return nil, fmt.Errorf("creating the reader's eventfd: %w", err)
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
	if s.conn != nil {
		s.conn.SetReadDeadline(time.Now())
		return
	}
	var one [8]byte // the eventfd counter: a uint64 in the host's order
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(s.wakeFD, one[:])
}

// closeDoor stops a socket this process bound from taking new datagrams,
// while those already queued stay readable for the drain:
//
//   - a UDP socket is connected to its own address, so that it takes
//     datagrams from that address only, which nothing sends from. A
//     connected socket also leaves its SO_REUSEPORT group's choice: the
//     kernel sends the datagrams it would have taken to the other
//     sockets of the group, such as those of a veneur started with
//     -takeover, instead of dropping them when this one closes.
//   - a unix datagram socket's file is removed (no new client finds it)
//     and the socket is shut for reading (clients' sends fail with EPIPE
//     rather than vanish).
//
// An inherited socket is left as it is: it is shared with the process that
// passed it and with the next veneur. The drain then reads until the queue
// is empty, and what arrives later stays queued for the next reader.
func (s *udpSocket) closeDoor() {
	if s.shared {
		return
	}
	if s.file != nil {
		s.file.remove()
		unix.Shutdown(s.fd, unix.SHUT_RD)
		return
	}
	sa, err := unix.Getsockname(s.fd)
	if err != nil {
		return
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		if a.Addr == [4]byte{} {
			a.Addr = [4]byte{127, 0, 0, 1}
		}
	case *unix.SockaddrInet6:
		if a.Addr == [16]byte{} {
			a.Addr = [16]byte{15: 1}
		}
	default:
		return
	}
	unix.Connect(s.fd, sa)
}

// Close releases the socket. The reader must have returned.
func (s *udpSocket) Close() error {
	if s.wakeFD >= 0 {
		unix.Close(s.wakeFD)
		s.wakeFD = -1
	}
	s.file.remove()
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
func setReadBuffer(conn sysPacketConn, n int) (int, error) {
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

// newRecvBatch returns n buffers of size bytes, cut from one slab. The
// slab is virtual memory until datagrams touch it: the kernel copies a
// datagram into the first pages of its buffer, so a reader of 1,432-byte
// datagrams keeps one page of each 64 KiB buffer resident. Buffers start
// an odd number of cache lines apart, so that the starts of the batch's
// datagrams do not all fall into one cache set, as they would at a stride
// of 64 KiB.
func newRecvBatch(n, size int) *recvBatch {
	rb := &recvBatch{
		bufs: make([][]byte, n),
		iovs: make([]unix.Iovec, n),
		hdrs: make([]unix.Mmsghdr, n),
	}
	stride := (size + 63) &^ 63
	if (stride/64)%2 == 0 {
		stride += 64
	}
	slab := make([]byte, n*stride)
	for i := range rb.bufs {
		rb.bufs[i] = slab[i*stride : i*stride+size : i*stride+size]
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
	// drainRounds bounds the receive rounds of a stopped reader's drain,
	// so that a flood into an inherited socket (which keeps taking
	// datagrams) cannot keep it going: 4096 rounds of up to 32 datagrams.
	drainRounds = 1 << 12
)

// readersKeepP says that a busy reader keeps its P while it waits, so
// Start reserves one P per reader (see reserveReaderProcs).
const readersKeepP = true

// readUDP reads datagrams of up to size bytes until stopping says so and
// the socket is woken, handing them to the ingester; it then drains what
// the kernel still holds and returns. Failed reads are counted in readErrs,
// and the gaps between receive rounds recorded in gaps: one reading of the
// clock at the end of a receive call that returned datagrams and one at
// the start of the next.
func readUDP(sock *udpSocket, in Ingester, size int, stopping func() bool, readErrs *atomic.Uint64, gaps *readerGaps) error {
	vlen := 32
	if size > 64<<10 {
		vlen = 8
	}
	rb := newRecvBatch(vlen, size)
	fd := uintptr(sock.fd)
	var heldSince time.Time
	held, idle := false, true
	quiet := 0 // consecutive busy waits that timed out holding nothing
	// lastRecv is when the last receive call returned datagrams, zero
	// after one that returned none.
	var lastRecv time.Time
	var work uint64 // yield.WorkMark at lastRecv
	// A single-P reader shares its P with the flush: each return from a
	// receive call is a turn, which ends the slice the flush's goroutines
	// share (see package yield), so that the reader waits for one slice
	// of the flush between two rounds, not one per flush goroutine, and
	// a shorter one when its own handling and the workers took long. With
	// several Ps the reader has a P of its own, and the flush's slices
	// are for the workers that share the other.
	singleP := sock.conn != nil
	for {
		if !lastRecv.IsZero() {
			gaps.record(time.Since(lastRecv), yield.WorkedSince(work))
		}
		var n int
		var errno syscall.Errno
		probe := false
		switch {
		case !idle && singleP && yield.Pending():
			// A flush waits for the P: look without waiting, and give
			// the P back at once when nothing came (below), rather
			// than hold it idle in a blocking receive.
			probe = true
			probes.Add(1)
			n, errno = rb.recvmmsg(fd, unix.MSG_DONTWAIT)
		case !idle:
			n, errno = rb.recvmmsg(fd, unix.MSG_WAITFORONE)
		case singleP:
			n, errno = sock.pollWait(rb, stopping)
		default:
			n, errno = sock.idleWait(rb)
		}
		if singleP {
			yield.Turn()
		}
		if stopping() {
			sock.drain(in, rb, n, errno)
			return nil
		}
		lastRecv = time.Time{}
		switch errno {
		case 0:
			now := time.Now()
			if n > 0 {
				lastRecv, work = now, yield.WorkMark()
			}
			if idle {
				idle = false
				sock.idle.Store(false)
			}
			quiet = 0
			rb.handle(in, n)
			if !held {
				held, heldSince = true, now
			}
			if now.Sub(heldSince) < readerHold {
				continue
			}
		case unix.EAGAIN:
			if probe && held && time.Since(heldSince) < readerHold {
				// Nothing yet, and a flush waits: let it run a slice,
				// and keep what is held for the next datagrams, as a
				// blocking receive would.
				runtime.Gosched()
				continue
			}
			// The receive timeout expired: hand over what is held. A
			// reader that held nothing for readerQuiet waits in a row is
			// idle: going idle and back costs a wake-up of the runtime's
			// monitor, so a light but steady stream stays busy.
			if !held && !idle && !probe {
				if quiet++; quiet >= readerQuiet {
					idle, quiet = true, 0
					sock.idle.Store(true)
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

// probes counts the receive calls single-P readers made without waiting
// because a flush was waiting for the P (yield.Pending).
var probes atomic.Uint64

// idleWait is an idle wait with several Ps: poll(2), an ordinary system
// call, on the socket and the eventfd wake writes, for at most
// readIdleTimeout; then a read that does not block. A wait that ends
// without datagrams reads as EAGAIN (timed out or woken: the loop checks
// the stop flag either way).
func (s *udpSocket) idleWait(rb *recvBatch) (int, syscall.Errno) {
	fds := [2]unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}, {Fd: int32(s.wakeFD), Events: unix.POLLIN}}
	n, err := unix.Poll(fds[:], int(readIdleTimeout/time.Millisecond))
	switch {
	case err == unix.EINTR:
		return 0, unix.EINTR
	case err != nil:
		return 0, err.(syscall.Errno)
	case n == 0 || fds[0].Revents == 0:
		return 0, unix.EAGAIN
	}
	return rb.recvmmsg(uintptr(s.fd), unix.MSG_DONTWAIT)
}

// pollWait is an idle wait in single-P mode: the reader parks in the
// runtime's poller until the socket is readable, then reads without
// blocking. wake's read deadline ends the wait (as EINTR, and the loop
// checks the stop flag); it also ends when stopping, should the deadline
// have been set before the wait began.
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
// and then what the kernel still holds, until a read finds the queue
// empty (closeDoor has stopped new datagrams, unless the socket is
// inherited), for at most drainRounds rounds. The round in progress skips
// empty datagrams: a unix socket shut for reading can return one that no
// client sent, and an empty datagram carries no lines either way.
func (s *udpSocket) drain(in Ingester, rb *recvBatch, n int, errno syscall.Errno) {
	defer in.Flush()
	if errno == 0 {
		for i := 0; i < n; i++ {
			if rb.hdrs[i].Len > 0 {
				rb.handleOne(in, i)
			}
		}
	}
	rounds := 0
	for settle := 0; ; settle++ {
		for ; rounds < drainRounds; rounds++ {
			n, errno := rb.recvmmsg(uintptr(s.fd), unix.MSG_DONTWAIT)
			if errno == unix.EINTR {
				continue
			}
			if errno != 0 || n <= 0 {
				break
			}
			rb.handle(in, n)
			if n < len(rb.hdrs) {
				// A short round: the queue was empty at its end.
				break
			}
		}
		// A datagram the kernel routed to this socket just before its
		// door closed may still be on its way into the queue (on a
		// busy host, for milliseconds): the queue must stay empty for
		// drainSettle before the socket closes. A shared socket's door
		// stays open, so there is nothing to wait for.
		if s.shared || rounds >= drainRounds || settle >= drainSettles {
			return
		}
		fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
		if k, err := unix.Poll(fds, int(drainSettle/time.Millisecond)); err != nil && err != unix.EINTR || k == 0 {
			return
		}
	}
}

// The wait of drain for datagrams still on their way: at most
// drainSettles waits of drainSettle, each after the queue emptied.
const (
	drainSettle  = 5 * time.Millisecond
	drainSettles = 20
)

// reusePortSupported says host:port sockets are bound with SO_REUSEPORT.
const reusePortSupported = true

// reusePortControl sets SO_REUSEPORT on a socket before it is bound.
func reusePortControl(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setting SO_REUSEPORT: %w", serr)
	}
	return nil
}

// restrictSocket gives an unbound unix socket the permissions its file
// is to have: Linux creates the file with the socket's own mode, less
// the umask, so the file is never more open than mode, even before the
// chmod that follows the bind.
func restrictSocket(fd int, mode os.FileMode) {
	unix.Fchmod(fd, uint32(mode.Perm()))
}

// socketListens reports whether the stream socket fd listens; known is
// true.
func socketListens(fd int) (listening, known bool) {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return v == 1, err == nil
}
