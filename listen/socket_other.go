//go:build !linux

package listen

import (
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/veneur/veneur/internal/yield"
)

// udpSocket is one bound datagram socket; its reader waits in the
// runtime's network poller.
type udpSocket struct {
	conn sysPacketConn
	// shared says the socket was inherited: closeDoor leaves it alone.
	shared bool
	// file is the socket file of a unix datagram socket bound here.
	file *unixFile
}

// LocalAddr is the address the socket is bound to.
func (s *udpSocket) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// wake ends the reader's current wait so that it sees the stop flag.
func (s *udpSocket) wake() { s.conn.SetReadDeadline(time.Now()) }

// closeDoor removes the socket file of a unix socket bound here, so that
// no new client finds it.
func (s *udpSocket) closeDoor() {
	if !s.shared {
		s.file.remove()
	}
}

// isIdle reports whether the reader waits for datagrams: always, here.
func (s *udpSocket) isIdle() bool { return true }

// Close releases the socket.
func (s *udpSocket) Close() error {
	s.file.remove()
	return s.conn.Close()
}

// listenUDP binds one UDP socket on addr, for tests. SO_REUSEPORT is
// Linux-only here, so config validation keeps num_readers at 1 elsewhere.
func listenUDP(addr string, reusePort bool, rcvbuf int, singleP bool) (*udpSocket, int, error) {
	if reusePort {
		return nil, 0, errors.New("num_readers > 1 needs SO_REUSEPORT, which veneur supports on Linux only; set num_readers: 1")
	}
	pc, err := (*Binder)(nil).packet("udp_address", addr, kindUDP, false)
	if err != nil {
		return nil, 0, err
	}
	return newDatagramSocket(pc, rcvbuf, singleP)
}

// newDatagramSocket prepares the bound socket pc for a reader. It returns
// the receive buffer size asked for, as the granted one is not known here.
func newDatagramSocket(pc *packetConn, rcvbuf int, _ bool) (*udpSocket, int, error) {
	if rb, ok := pc.conn.(interface{ SetReadBuffer(int) error }); ok {
		if err := rb.SetReadBuffer(rcvbuf); err != nil {
			pc.conn.Close()
			pc.file.remove()
			return nil, 0, err
		}
	}
	return &udpSocket{conn: pc.conn, shared: pc.inherited, file: pc.file}, rcvbuf, nil
}

// readersKeepP is false here: readers wait in the runtime's poller and
// keep no P while they wait, so Start reserves none.
const readersKeepP = false

// readUDP reads one datagram of up to size bytes at a time until woken
// (wake's deadline) or the socket is closed. Unlike the Linux reader it
// does not drain the kernel's queue on stop. A datagram that fills the
// buffer's one extra byte was cut. Failed reads are counted in readErrs,
// and the gaps between a read that returned a datagram and the next read
// recorded in gaps.
func readUDP(sock *udpSocket, in Ingester, size int, stopping func() bool, readErrs *atomic.Uint64, gaps *readerGaps) error {
	conn := sock.conn
	buf := make([]byte, size+1)
	var lastRecv time.Time
	var work uint64 // yield.WorkMark at lastRecv
	for {
		if !lastRecv.IsZero() {
			gaps.record(time.Since(lastRecv), yield.WorkedSince(work))
		}
		n, _, err := conn.ReadFrom(buf)
		lastRecv = time.Time{}
		if err != nil {
			if stopping() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil
			}
			readErrs.Add(1)
			continue
		}
		lastRecv, work = time.Now(), yield.WorkMark()
		if n > size {
			in.Packet(buf[:size], true)
		} else {
			in.Packet(buf[:n], false)
		}
		in.Flush()
	}
}
