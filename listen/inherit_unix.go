//go:build unix

package listen

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

func setCloseOnExec(fd int) { unix.CloseOnExec(fd) }

// socketInfo says what the socket fd is: its type, its family, its bound
// address, and whether it listens (known on Linux only).
type socketInfo struct {
	typ       int // unix.SOCK_STREAM, SOCK_DGRAM, ...
	family    int // unix.AF_UNIX, AF_INET, AF_INET6, ...
	addr      string
	listening bool
	// listenKnown says listening was read from the socket.
	listenKnown bool
}

func inspectSocket(fd int) (socketInfo, error) {
	var si socketInfo
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		if errors.Is(err, unix.EBADF) {
			return si, errors.New("not open; check which descriptors the parent passes")
		}
		if errors.Is(err, unix.ENOTSOCK) {
			return si, errors.New("not a socket; check which descriptors the parent passes")
		}
		return si, fmt.Errorf("reading its type: %w", err)
	}
	si.typ = typ
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return si, fmt.Errorf("reading its address: %w", err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		si.family = unix.AF_INET
		si.addr = net.JoinHostPort(net.IP(a.Addr[:]).String(), fmt.Sprint(a.Port))
	case *unix.SockaddrInet6:
		si.family = unix.AF_INET6
		si.addr = net.JoinHostPort(net.IP(a.Addr[:]).String(), fmt.Sprint(a.Port))
	case *unix.SockaddrUnix:
		si.family = unix.AF_UNIX
		si.addr = a.Name
		if si.addr == "" {
			si.addr = "(unnamed)"
		}
	default:
		si.family = -1
		si.addr = "(other family)"
	}
	si.listening, si.listenKnown = socketListens(fd)
	return si, nil
}

// String describes the socket as a user would name it.
func (si socketInfo) String() string {
	kind := "other"
	switch {
	case si.family == unix.AF_UNIX && si.typ == unix.SOCK_DGRAM:
		kind = "unix datagram"
	case si.family == unix.AF_UNIX && si.typ == unix.SOCK_STREAM:
		kind = "unix stream"
	case si.typ == unix.SOCK_DGRAM:
		kind = "UDP"
	case si.typ == unix.SOCK_STREAM:
		kind = "TCP"
	}
	if si.typ == unix.SOCK_STREAM && si.listenKnown && !si.listening {
		kind += " (not listening)"
	}
	return kind + " " + si.addr
}

func describeSocket(fd int) string {
	si, err := inspectSocket(fd)
	if err != nil {
		return err.Error()
	}
	return si.String()
}

// checkSocket checks that fd is a socket of kind want.
func checkSocket(fd int, want sockKind) error {
	si, err := inspectSocket(fd)
	if err != nil {
		return err
	}
	typ := unix.SOCK_DGRAM
	if want.stream {
		typ = unix.SOCK_STREAM
	}
	ok := si.typ == typ
	switch want.family {
	case familyUnix:
		ok = ok && si.family == unix.AF_UNIX
	case familyInet:
		ok = ok && (si.family == unix.AF_INET || si.family == unix.AF_INET6)
	}
	if want.stream && si.listenKnown && !si.listening {
		ok = false
	}
	if !ok {
		return fmt.Errorf("a %s socket, not %s", si, want.what)
	}
	return nil
}
