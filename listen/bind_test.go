//go:build unix

package listen

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// A stale socket file (nothing behind it) is replaced; a live socket, of
// either type, or a file that is not a socket, is refused and left alone.
func TestUnixPathStaleReplacedLiveRefused(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	// A socket file whose process is gone: bound, then closed without
	// removing the file.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(stale); err != nil {
		t.Fatalf("the stale socket file is gone before the test: %v", err)
	}
	ln, err := (&Binder{}).stream("unix_stream_address", stale, kindUnixStream)
	if err != nil {
		t.Fatalf("binding over a stale socket file: %v", err)
	}
	defer ln.Close()

	liveStream := filepath.Join(dir, "live.sock")
	ls, err := net.Listen("unix", liveStream)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	liveDgram := filepath.Join(dir, "live-dgram.sock")
	ld, err := net.ListenPacket("unixgram", liveDgram)
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Close()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path, want string
	}{
		{liveStream, "in use"},
		{liveDgram, "in use"},
		{plain, "not a socket"},
	} {
		for _, kind := range []sockKind{kindUnixStream, kindUnixgram} {
			var err error
			if kind.stream {
				_, err = (&Binder{}).stream("unix_stream_address", c.path, kind)
			} else {
				_, err = (&Binder{}).packet("unix_datagram_address", c.path, kind, false)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("binding %s as %s: %v, want an error saying %q", filepath.Base(c.path), kind.what, err, c.want)
			}
		}
	}
	if b, err := os.ReadFile(plain); err != nil || string(b) != "keep me" {
		t.Errorf("the plain file was touched: %q, %v", b, err)
	}
	// The live sockets still answer.
	c, err := net.Dial("unix", liveStream)
	if err != nil {
		t.Fatalf("the live stream socket was taken: %v", err)
	}
	c.Close()
}

// The socket file gets unix_socket_mode from the start, whatever the
// umask, and is removed when the listener closes, but only while it is
// still the file this process created.
func TestUnixPathModeAndRemoval(t *testing.T) {
	dir := t.TempDir()
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	for _, mode := range []os.FileMode{0o600, 0o660, 0o666} {
		path := filepath.Join(dir, "m.sock")
		ln, err := (&Binder{UnixMode: mode}).stream("unix_stream_address", path, kindUnixStream)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != mode {
			t.Errorf("socket file mode %v, want a socket with %v", fi.Mode(), mode)
		}
		ln.Close()
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket file still there after Close: %v", err)
		}
	}
	// Replaced by someone else's file meanwhile: left alone.
	path := filepath.Join(dir, "r.sock")
	pc, err := (&Binder{}).packet("unix_datagram_address", path, kindUnixgram, false)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(path); fi.Mode().Perm() != DefaultUnixMode {
		t.Errorf("default mode %v, want %v", fi.Mode().Perm(), DefaultUnixMode)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := net.ListenPacket("unixgram", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	pc.conn.Close()
	pc.file.remove()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("another process's socket file was removed: %v", err)
	}
}

// A host:port another socket holds is refused, with the fix in the error,
// unless the Binder takes over; taking over joins a veneur's socket
// (SO_REUSEPORT) but not one bound without it.
func TestTakeover(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SO_REUSEPORT is used on Linux only")
	}
	first, err := (&Binder{}).packet("udp_address", "127.0.0.1:0", kindUDP, false)
	if err != nil {
		t.Fatal(err)
	}
	defer first.conn.Close()
	addr := first.conn.LocalAddr().String()
	if _, err := (&Binder{}).packet("udp_address", addr, kindUDP, false); err == nil ||
		!strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), "-takeover") {
		t.Errorf("second bind of %s: %v, want address already in use and the -takeover hint", addr, err)
	}
	second, err := (&Binder{Takeover: true}).packet("udp_address", addr, kindUDP, false)
	if err != nil {
		t.Fatalf("taking over %s: %v", addr, err)
	}
	second.conn.Close()

	ln, err := (&Binder{}).stream("tcp_address", "127.0.0.1:0", kindTCP)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := (&Binder{}).stream("tcp_address", ln.Addr().String(), kindTCP); err == nil || !strings.Contains(err.Error(), "-takeover") {
		t.Errorf("second TCP bind: %v, want the -takeover hint", err)
	}
	ln2, err := (&Binder{Takeover: true}).stream("http_address", ln.Addr().String(), kindStream)
	if err != nil {
		t.Fatalf("taking over TCP %s: %v", ln.Addr(), err)
	}
	ln2.Close()

	plain, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := (&Binder{Takeover: true}).packet("udp_address", plain.LocalAddr().String(), kindUDP, false); err == nil {
		t.Error("took over a socket bound without SO_REUSEPORT")
	}
}
