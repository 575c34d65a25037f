//go:build linux

package veneur

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const blockingReadSupported = true

// udpSocket is one bound UDP socket and the way its reader waits.
//
// In blocking mode the socket is a plain blocking descriptor outside the
// runtime's network poller: the reader waits inside recvmmsg itself, so a
// wake-up costs one system call, where the poller costs an epoll round and
// a read. The reader keeps its P (scheduler slot) while it waits, which is
// why blocking mode is used only when a P stays free for the workers, or
// with a single reader, which then yields its P after every hand-off to
// the workers and whenever the runtime asks (see readBlocking).
//
// In poller mode (more readers than Ps) readers wait in the runtime's
// poller like any Go network code.
type udpSocket struct {
	conn    *net.UDPConn // poller mode
	fd      int          // blocking mode; -1 in poller mode
	laddr   net.Addr
	timeout time.Duration // current SO_RCVTIMEO in blocking mode
}

// listenUDP binds one UDP socket on addr; with reusePort several sockets
// share the port and the kernel spreads datagrams across them. It returns
// the receive buffer size the kernel granted.
func listenUDP(addr string, reusePort bool, rcvbuf int, blocking bool) (*udpSocket, int, error) {
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
	sock := &udpSocket{conn: conn, fd: -1, laddr: conn.LocalAddr()}
	if !blocking {
		return sock, granted, nil
	}
	// Take a duplicate of the bound socket and close the runtime's copy,
	// which also removes it from the poller's epoll set: an idle thread
	// waiting in epoll must not wake for every datagram.
	if err := sock.detach(); err != nil {
		conn.Close()
		return nil, 0, err
	}
	return sock, granted, nil
}

func (s *udpSocket) detach() error {
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return err
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
		return fmt.Errorf("duplicating the UDP socket: %w", err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return fmt.Errorf("making the UDP socket blocking: %w", err)
	}
	s.fd = fd
	// The receive timeout bounds every wait, so that stop requests and
	// the runtime's preemption signals (which end a wait with EINTR only
	// when a timeout is set) always get through.
	if err := s.setTimeout(readIdleTimeout); err != nil {
		unix.Close(fd)
		s.fd = -1
		return err
	}
	s.conn.Close()
	s.conn = nil
	return nil
}

func (s *udpSocket) setTimeout(d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("setting SO_RCVTIMEO: %w", err)
	}
	s.timeout = d
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
	// On an unconnected UDP socket shutdown reports ENOTCONN but still
	// marks the socket shut for reading and wakes the waiting reader.
	// Datagrams already queued stay readable; once they are gone, reads
	// return zero-length results at once.
	unix.Shutdown(s.fd, unix.SHUT_RD)
}

// Close releases the socket. The reader must have returned.
func (s *udpSocket) Close() error {
	if s.conn != nil {
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

// recvmmsg performs one recvmmsg call on fd, as a raw system call: the
// scheduler hand-off of an ordinary one (which also keeps the runtime's
// monitor thread polling every 20µs while a reader waits) costs more than
// the call itself at low rates.
func (rb *recvBatch) recvmmsg(fd uintptr, flags int) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&rb.hdrs[0])), uintptr(len(rb.hdrs)), uintptr(flags), 0, 0)
	return int(n), errno
}

// handle processes the first n datagrams of the last call.
func (rb *recvBatch) handle(in *ingester, n int) {
	for i := 0; i < n; i++ {
		rb.handleOne(in, i)
	}
}

func (rb *recvBatch) handleOne(in *ingester, i int) {
	h := &rb.hdrs[i]
	in.handlePacket(rb.bufs[i][:h.Len], h.Hdr.Flags&unix.MSG_TRUNC != 0)
}

// Blocking readers hold the batches they fill for up to readerHold before
// handing them to the workers (full batches go at once). Each hand-off
// wakes a worker goroutine, so at steady moderate rates this cuts worker
// wake-ups from one per receive round to about one per millisecond.
const (
	readerHold = time.Millisecond
	// readIdleTimeout bounds a blocking reader's wait when it holds
	// nothing; while it holds samples the wait is cut to readerHold so
	// they reach the workers soon after traffic pauses.
	readIdleTimeout = 100 * time.Millisecond
)

// readUDP reads datagrams until stop is set and the socket woken, handing
// each one to the ingester; it then drains what the kernel still holds and
// returns.
func readUDP(sock *udpSocket, in *ingester, size int, stopping func() bool) error {
	vlen := 32
	if size > 64<<10 {
		vlen = 8
	}
	rb := newRecvBatch(vlen, size)
	if sock.conn == nil {
		return sock.readBlocking(in, rb, stopping)
	}
	return readPolled(sock.conn, in, rb, stopping)
}

// readBlocking is the blocking-mode reader loop. Each wait is a raw
// recvmmsg that keeps the P. The loop gives the P back (runtime.Gosched)
// after every hand-off to the workers and after every wait that ended
// without data, so with a single P the workers, the flusher and the
// runtime still run: the runtime's monitor preempts a P held for 10ms with
// a signal, which ends the wait with EINTR because a receive timeout is set.
func (s *udpSocket) readBlocking(in *ingester, rb *recvBatch, stopping func() bool) error {
	fd := uintptr(s.fd)
	var heldSince time.Time
	held := false
	for {
		n, errno := rb.recvmmsg(fd, unix.MSG_WAITFORONE)
		if stopping() {
			s.drain(in, rb, n, errno)
			return nil
		}
		switch errno {
		case 0:
			rb.handle(in, n)
			now := time.Now()
			if !held {
				held, heldSince = true, now
				if s.timeout != readerHold {
					s.setTimeout(readerHold)
				}
			}
			if now.Sub(heldSince) < readerHold {
				continue
			}
		case unix.EAGAIN, unix.EINTR:
			// The receive timeout expired, or a signal arrived.
			if !held && errno == unix.EAGAIN && s.timeout != readIdleTimeout {
				s.setTimeout(readIdleTimeout)
			}
		case unix.ENOBUFS, unix.ENOMEM:
			// Transient: count it and go on.
			in.stats.readErrors.Add(1)
		default:
			in.stats.readErrors.Add(1)
			in.flush()
			return fmt.Errorf("recvmmsg: %w", errno)
		}
		in.flush()
		held = false
		runtime.Gosched()
	}
}

// drain processes the round that was in progress when the stop was seen
// and then what the kernel still holds. After wake's shutdown an empty
// queue reads as zero-length results without a source address, which is
// how they differ from a client's empty datagram; the drain asks for
// source addresses and ends at the first such result. (The round already
// read when the stop was seen has no addresses, so its zero-length results
// are skipped: an empty datagram carries no lines either way.) The drain
// reads at most 4096 rounds, so a flood cannot keep it going.
func (s *udpSocket) drain(in *ingester, rb *recvBatch, n int, errno syscall.Errno) {
	defer in.flush()
	if errno == 0 {
		for i := 0; i < n; i++ {
			if rb.hdrs[i].Len > 0 {
				rb.handleOne(in, i)
			}
		}
	}
	names := make([]unix.RawSockaddrAny, len(rb.hdrs))
	defer func() {
		for i := range rb.hdrs {
			rb.hdrs[i].Hdr.Name, rb.hdrs[i].Hdr.Namelen = nil, 0
		}
	}()
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

// readPolled is the poller-mode reader loop.
func readPolled(conn *net.UDPConn, in *ingester, rb *recvBatch, stopping func() bool) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	handle := func(n int) {
		rb.handle(in, n)
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
				n, errno := rb.recvmmsg(fd, 0)
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
				n, errno = rb.recvmmsg(fd, 0)
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
