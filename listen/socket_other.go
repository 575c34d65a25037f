//go:build !linux

package listen

import (
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// udpSocket is one bound UDP socket; its reader waits in the runtime's
// network poller.
type udpSocket struct {
	conn *net.UDPConn
}

// LocalAddr is the address the socket is bound to.
func (s *udpSocket) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// wake ends the reader's current wait so that it sees the stop flag.
func (s *udpSocket) wake() { s.conn.SetReadDeadline(time.Now()) }

// isIdle reports whether the reader waits for datagrams: always, here.
func (s *udpSocket) isIdle() bool { return true }

// Close releases the socket.
func (s *udpSocket) Close() error { return s.conn.Close() }

// listenUDP binds one UDP socket on addr. SO_REUSEPORT is Linux-only here,
// so config validation keeps num_readers at 1 elsewhere. It returns the
// receive buffer size asked for, as the granted one is not known here.
func listenUDP(addr string, reusePort bool, rcvbuf int, _ bool) (*udpSocket, int, error) {
	if reusePort {
		return nil, 0, errors.New("num_readers > 1 needs SO_REUSEPORT, which veneur supports on Linux only; set num_readers: 1")
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, 0, err
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, 0, err
	}
	if err := conn.SetReadBuffer(rcvbuf); err != nil {
		conn.Close()
		return nil, 0, err
	}
	return &udpSocket{conn: conn}, rcvbuf, nil
}

// readersKeepP is false here: readers wait in the runtime's poller and
// keep no P while they wait, so Start reserves none.
const readersKeepP = false

// readUDP reads one datagram of up to size bytes at a time until woken
// (wake's deadline) or the socket is closed. Unlike the Linux reader it
// does not drain the kernel's queue on stop. Failed reads are counted in
// readErrs.
func readUDP(sock *udpSocket, in Ingester, size int, stopping func() bool, readErrs *atomic.Uint64) error {
	conn := sock.conn
	buf := make([]byte, size)
	for {
		n, _, err := conn.ReadFromUDP(buf)
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
		in.Packet(buf[:n], false)
		in.Flush()
	}
}
