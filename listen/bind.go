package listen

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// sockKind is what an address key needs of a socket: its type and family,
// and how to name it in errors.
type sockKind struct {
	stream bool
	family int
	what   string
}

const (
	familyAny = iota
	familyInet
	familyUnix
)

var (
	kindUDP        = sockKind{false, familyInet, "a UDP socket"}
	kindTCP        = sockKind{true, familyInet, "a listening TCP socket"}
	kindUnixgram   = sockKind{false, familyUnix, "a unix datagram socket"}
	kindUnixStream = sockKind{true, familyUnix, "a listening unix stream socket"}
	kindStream     = sockKind{true, familyAny, "a listening TCP or unix stream socket"}
)

// DefaultUnixMode is the default unix_socket_mode: the owner and the
// group may send, no one else.
const DefaultUnixMode os.FileMode = 0o660

// Binder binds the addresses of the config keys. Every listener of a
// server shares one (Options.Bind), so that an inherited socket serves one
// key only. A nil *Binder binds with the defaults and knows fd@N as its
// only inherited form.
//
// Addresses are host:port, a unix socket path, or an inherited socket
// (see Inherited):
//
//   - host:port sockets are bound with SO_REUSEPORT (Linux), so that a
//     new veneur can join them before the old one stops: a restart that
//     loses nothing. Unless Takeover is set, a non-zero port that another
//     socket already holds is refused, so that a second veneur started
//     by mistake fails instead of silently taking half the traffic.
//   - A unix socket path that is a stale socket file (nothing accepts on
//     it) is replaced; a live one, or a file that is not a socket, is an
//     error. The new file gets UnixMode, and it is removed when the
//     listener closes, if it is still the file this process created.
type Binder struct {
	// Inherited are the sockets the process was started with; nil knows
	// fd@N only.
	Inherited *Inherited
	// Takeover lets host:port addresses join sockets another process
	// holds with SO_REUSEPORT (veneur -takeover).
	Takeover bool
	// UnixMode is unix_socket_mode, the permissions of the socket files
	// veneur creates; 0 means DefaultUnixMode.
	UnixMode os.FileMode
}

func (b *Binder) inherited() *Inherited {
	if b == nil {
		return nil
	}
	return b.Inherited
}

func (b *Binder) takeover() bool { return b != nil && b.Takeover }

func (b *Binder) unixMode() os.FileMode {
	if b == nil || b.UnixMode == 0 {
		return DefaultUnixMode
	}
	return b.UnixMode
}

// isPath says whether addr is a unix socket path in a key that also takes
// host:port: it starts with / or ., as goji/bind has it.
func isPath(addr string) bool {
	return strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, ".")
}

// Stream binds a stream address for the config key (http_address,
// grpc_address): host:port, a unix socket path starting with / or ., or an
// inherited socket. Errors name the key and the address.
func (b *Binder) Stream(key, addr string) (net.Listener, error) {
	return b.stream(key, addr, kindStream)
}

func (b *Binder) stream(key, addr string, kind sockKind) (net.Listener, error) {
	ln, err := b.bindStream(key, addr, kind)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", key, addr, err)
	}
	return ln, nil
}

func (b *Binder) bindStream(key, addr string, kind sockKind) (net.Listener, error) {
	switch {
	case IsInherited(addr):
		f, err := b.inherited().take(key, addr, kind)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return net.FileListener(f)
	case kind.family == familyUnix || (kind.family == familyAny && isPath(addr)):
		return b.listenUnix(addr)
	}
	if err := b.checkFree("tcp", addr); err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: reusePortControl}
	return lc.Listen(context.Background(), "tcp", addr)
}

// sysPacketConn is a datagram socket of the runtime's: *net.UDPConn or
// *net.UnixConn.
type sysPacketConn interface {
	net.PacketConn
	syscall.Conn
}

// packetConn is a bound datagram socket and how it came to be.
type packetConn struct {
	conn sysPacketConn
	// inherited says the socket was passed to the process: it is shared
	// with whoever passed it and must be neither shut down nor
	// reconnected.
	inherited bool
	// file is the socket file of a unix path bound here, nil otherwise.
	file *unixFile
}

// packet binds a datagram address for the config key. join says the
// address is one this listener bound a moment ago (another reader's socket
// of num_readers) and is not checked for being free.
func (b *Binder) packet(key, addr string, kind sockKind, join bool) (*packetConn, error) {
	pc, err := b.bindPacket(key, addr, kind, join)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", key, addr, err)
	}
	return pc, nil
}

func (b *Binder) bindPacket(key, addr string, kind sockKind, join bool) (*packetConn, error) {
	if IsInherited(addr) {
		f, err := b.inherited().take(key, addr, kind)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		c, err := net.FilePacketConn(f)
		if err != nil {
			return nil, err
		}
		sc, ok := c.(sysPacketConn)
		if !ok {
			c.Close()
			return nil, fmt.Errorf("descriptor of type %T is not a socket veneur can read", c)
		}
		return &packetConn{conn: sc, inherited: true}, nil
	}
	if kind.family == familyUnix {
		file, err := prepareUnixPath(addr)
		if err != nil {
			return nil, err
		}
		lc := net.ListenConfig{Control: b.restrictControl()}
		c, err := lc.ListenPacket(context.Background(), "unixgram", addr)
		if err != nil {
			return nil, err
		}
		if err := file.created(b.unixMode()); err != nil {
			c.Close()
			return nil, err
		}
		return &packetConn{conn: c.(*net.UnixConn), file: file}, nil
	}
	if !join {
		if err := b.checkFree("udp", addr); err != nil {
			return nil, err
		}
	}
	lc := net.ListenConfig{Control: reusePortControl}
	c, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return nil, err
	}
	return &packetConn{conn: c.(*net.UDPConn)}, nil
}

// checkFree refuses a host:port with a non-zero port that another socket
// holds, unless the Binder takes over. The check binds the address
// plainly, without SO_REUSEPORT: that fails if any socket holds it, and
// succeeds, for a moment, only if none does.
func (b *Binder) checkFree(network, addr string) error {
	if !reusePortSupported {
		return nil
	}
	if _, port, err := net.SplitHostPort(addr); err == nil && (port == "0" || port == "") {
		return nil
	}
	var err error
	if network == "udp" {
		var c net.PacketConn
		if c, err = net.ListenPacket(network, addr); err == nil {
			return c.Close()
		}
	} else {
		var ln net.Listener
		if ln, err = net.Listen(network, addr); err == nil {
			return ln.Close()
		}
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	if b.takeover() {
		// Join: the bind with SO_REUSEPORT succeeds if the holder
		// set it too and runs as the same user.
		return nil
	}
	return fmt.Errorf("%w: another process holds it; to replace a running veneur without loss start the new one with -takeover "+
		"before stopping the old one (docs/deployment.md), otherwise stop the other process or choose another address", err)
}

// listenUnix binds a unix stream socket at path, replacing a stale socket
// file, with the Binder's mode; closing the listener removes the file.
func (b *Binder) listenUnix(path string) (net.Listener, error) {
	file, err := prepareUnixPath(path)
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: b.restrictControl()}
	ln, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		return nil, err
	}
	ul := ln.(*net.UnixListener)
	// The file is removed by unixListener.Close, and only if it is
	// still ours.
	ul.SetUnlinkOnClose(false)
	if err := file.created(b.unixMode()); err != nil {
		ul.Close()
		return nil, err
	}
	return &unixListener{UnixListener: ul, file: file}, nil
}

// restrictControl restricts a unix socket's permissions before it is bound
// (see restrictSocket), so that its file is never more open than the mode.
func (b *Binder) restrictControl() func(network, address string, c syscall.RawConn) error {
	mode := b.unixMode()
	return func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { restrictSocket(int(fd), mode) })
	}
}

// unixListener removes its socket file when it closes.
type unixListener struct {
	*net.UnixListener
	file *unixFile
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.file.remove()
	return err
}

// unixFile is a socket file this process creates. Once created, remove
// deletes it only while it is still the same file: a newer process may
// have replaced it.
type unixFile struct {
	path string
	mu   sync.Mutex
	id   os.FileInfo
	ok   bool // id is set and the file not removed yet
}

// prepareUnixPath readies path for a new socket: nothing there is fine; a
// stale socket file (no process accepts on it) is removed; a live socket,
// or a file that is not a socket, is an error.
func prepareUnixPath(path string) (*unixFile, error) {
	if path == "" {
		return nil, errors.New("empty path; use an absolute path such as /var/run/veneur/dogstatsd.sock")
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &unixFile{path: path}, nil
	case err != nil:
		return nil, err
	case fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("%s exists and is not a socket (%v); remove it or choose another path", path, fi.Mode().Type())
	}
	// A socket file: is anything behind it? Connecting to a stale one
	// is refused; a live stream socket accepts, and a live datagram one
	// says the type is wrong. Any other answer counts as live.
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return nil, fmt.Errorf("%s is in use: a process accepts connections on it; stop it, or choose another path", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return nil, fmt.Errorf("%s is a socket in use or out of reach (%v); stop the process that holds it, or choose another path", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing the stale socket file %s: %w", path, err)
	}
	return &unixFile{path: path}, nil
}

// created sets the mode of the socket file just bound and records its
// identity for remove.
func (f *unixFile) created(mode os.FileMode) error {
	if err := os.Chmod(f.path, mode); err != nil {
		os.Remove(f.path)
		return fmt.Errorf("setting unix_socket_mode %#o on %s: %w", mode, f.path, err)
	}
	id, err := os.Lstat(f.path)
	if err != nil {
		os.Remove(f.path)
		return err
	}
	f.mu.Lock()
	f.id, f.ok = id, true
	f.mu.Unlock()
	return nil
}

// remove deletes the socket file if it is still the one this process
// created. It may be called more than once.
func (f *unixFile) remove() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ok {
		return
	}
	f.ok = false
	if id, err := os.Lstat(f.path); err == nil && os.SameFile(id, f.id) {
		os.Remove(f.path)
	}
}
