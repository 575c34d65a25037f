//go:build !linux

package veneur

import (
	"errors"
	"net"
)

// listenUDP binds one UDP socket on addr. SO_REUSEPORT is Linux-only here,
// so config validation keeps num_readers at 1 elsewhere.
func listenUDP(addr string, reusePort bool, rcvbuf int) (*net.UDPConn, int, error) {
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
	return conn, rcvbuf, nil
}

// readUDP reads one datagram at a time until the socket is closed.
func readUDP(conn *net.UDPConn, in *ingester, size int, stopping func() bool) error {
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
			in.stats.readErrors.Add(1)
			continue
		}
		in.handlePacket(buf[:n], false)
		in.flush()
	}
}
