//go:build unix

package listen

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// env is a fake environment for InheritedFromEnv.
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// The systemd variables count only for the process LISTEN_PID names;
// names pad with "unknown"; einhorn's count only under its master.
func TestInheritedFromEnv(t *testing.T) {
	h := InheritedFromEnv(env("LISTEN_PID", "42", "LISTEN_FDS", "3", "LISTEN_FDNAMES", "dogstatsd:dogstatsd"), 42, 1)
	if !h.systemdOK || len(h.systemd) != 3 {
		t.Fatalf("systemd ok %v with %d descriptors, want 3", h.systemdOK, len(h.systemd))
	}
	for i, want := range []namedFD{{3, "dogstatsd"}, {4, "dogstatsd"}, {5, "unknown"}} {
		if h.systemd[i] != want {
			t.Errorf("descriptor %d = %+v, want %+v", i, h.systemd[i], want)
		}
	}

	other := InheritedFromEnv(env("LISTEN_PID", "41", "LISTEN_FDS", "1"), 42, 1)
	if other.systemdOK {
		t.Error("took sockets LISTEN_PID meant for another process")
	}
	if _, err := other.take("udp_address", "systemd:x", kindUDP); err == nil || !strings.Contains(err.Error(), "LISTEN_PID") {
		t.Errorf("take with another process's LISTEN_PID: %v, want an error naming LISTEN_PID", err)
	}
	none := InheritedFromEnv(env(), 42, 1)
	if _, err := none.take("udp_address", "systemd:x", kindUDP); err == nil || !strings.Contains(err.Error(), "socket activation") {
		t.Errorf("take without systemd: %v, want an error about socket activation", err)
	}
	if _, err := none.take("udp_address", "einhorn@0", kindUDP); err == nil || !strings.Contains(err.Error(), "einhorn") {
		t.Errorf("take without einhorn: %v, want an error about einhorn", err)
	}

	e := InheritedFromEnv(env("EINHORN_MASTER_PID", "7", "EINHORN_FD_COUNT", "2", "EINHORN_FD_0", "9", "EINHORN_FD_1", "12", "EINHORN_SOCK_PATH", "/x"), 42, 7)
	if !e.einhornOK || fmt.Sprint(e.einhorn) != "[9 12]" || e.ackPath != "/x" {
		t.Errorf("einhorn ok %v fds %v ack %q, want true [9 12] /x", e.einhornOK, e.einhorn, e.ackPath)
	}
	if _, err := e.einhornFD(2); err == nil || !strings.Contains(err.Error(), "einhorn@1") {
		t.Errorf("einhorn@2 of 2: %v, want an error naming the last, einhorn@1", err)
	}
	if bad := InheritedFromEnv(env("EINHORN_MASTER_PID", "7", "EINHORN_FD_COUNT", "1", "EINHORN_FD_0", "x"), 42, 7); bad.einhornOK {
		t.Error("took an EINHORN_FD_0 that is not a number")
	}
}

// dupFD returns a new descriptor on the socket of c, as a parent would
// pass it; the caller's take closes it.
func dupFD(t *testing.T, c interface{ File() (*os.File, error) }) int {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	// f's descriptor is a duplicate already; keep it open past f.
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// passed is a set of sockets as systemd passes them, for the tests of
// systemd:NAME.
func passed(t *testing.T) (*Inherited, map[string]int) {
	t.Helper()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	http, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer http.Close()
	fds := map[string]int{
		"udp":   dupFD(t, udp.(*net.UDPConn)),
		"tcp":   dupFD(t, tcp.(*net.TCPListener)),
		"http":  dupFD(t, http.(*net.TCPListener)),
		"spare": dupFD(t, http.(*net.TCPListener)),
	}
	t.Cleanup(func() { unix.Close(fds["spare"]) })
	h := &Inherited{systemdOK: true, taken: map[int]string{}, systemd: []namedFD{
		{fds["udp"], "dogstatsd"}, {fds["tcp"], "dogstatsd"}, {fds["http"], "http"},
	}}
	return h, fds
}

// systemd:NAME takes the socket of that name of the kind the key needs:
// one name may stand for a UDP and a TCP socket. Each socket serves one
// key; one passed and not taken is reported.
func TestSystemdSockets(t *testing.T) {
	h, fds := passed(t)
	b := &Binder{Inherited: h}
	pc, err := b.packet("udp_address", "systemd:dogstatsd", kindUDP, false)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.conn.Close()
	if !pc.inherited {
		t.Error("a systemd socket not marked inherited")
	}
	ln, err := b.stream("tcp_address", "systemd:dogstatsd", kindTCP)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := h.Unused(); len(got) != 1 || !strings.Contains(got[0], "systemd:http") {
		t.Errorf("Unused() = %q, want the http socket only", got)
	}
	// The UDP socket received through the package's own binding works.
	sendUDP(t, pc.conn.LocalAddr(), "x:1|c")
	buf := make([]byte, 64)
	pc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, _, err := pc.conn.ReadFrom(buf); err != nil || string(buf[:n]) != "x:1|c" {
		t.Errorf("read %q, %v from the inherited socket", buf[:n], err)
	}

	for _, c := range []struct {
		name, key, addr string
		kind            sockKind
		want            string
	}{
		{"wrong kind", "unix_stream_address", "systemd:http", kindUnixStream, `named "http" that is a listening unix stream socket`},
		{"taken", "grpc_address", "systemd:http", kindStream, ""},
		{"again", "http_address", "systemd:http", kindStream, "already serves grpc_address"},
		{"again by number", "http_address", fmt.Sprintf("fd@%d", fds["http"]), kindStream, "already serves grpc_address"},
		{"no such name", "udp_address", "systemd:statsd", kindUDP, `no socket named "statsd" that is a UDP socket`},
		{"fd wrong kind", "udp_address", fmt.Sprintf("fd@%d", fds["spare"]), kindUDP, "not a UDP socket"},
		{"fd not open", "udp_address", "fd@999", kindUDP, "not open"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var err error
			if c.kind.stream {
				var ln net.Listener
				if ln, err = b.stream(c.key, c.addr, c.kind); err == nil {
					ln.Close()
				}
			} else {
				var pc *packetConn
				if pc, err = b.packet(c.key, c.addr, c.kind, false); err == nil {
					pc.conn.Close()
				}
			}
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("%s %s: %v", c.key, c.addr, err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), c.key)):
				t.Errorf("%s %s: %v, want an error naming the key and saying %q", c.key, c.addr, err, c.want)
			}
		})
	}
}

// Two sockets of one name and kind are ambiguous.
func TestSystemdAmbiguous(t *testing.T) {
	h, _ := passed(t)
	for i := range h.systemd {
		h.systemd[i].name = "veneur"
	}
	_, err := (&Binder{Inherited: h}).stream("tcp_address", "systemd:veneur", kindTCP)
	if err == nil || !strings.Contains(err.Error(), "2 sockets named") || !strings.Contains(err.Error(), "FileDescriptorName") {
		t.Errorf("two TCP sockets of one name: %v, want an error saying to name each", err)
	}
}

// Ready acknowledges to einhorn, once a key took an einhorn socket, in the
// form einhorn reads: one JSON document per line.
func TestEinhornReady(t *testing.T) {
	dir := t.TempDir()
	ctl, err := net.Listen("unix", filepath.Join(dir, "einhorn.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	fd := dupFD(t, tcp.(*net.TCPListener))
	h := InheritedFromEnv(env("EINHORN_MASTER_PID", "7", "EINHORN_FD_COUNT", "1", "EINHORN_FD_0", fmt.Sprint(fd),
		"EINHORN_SOCK_PATH", filepath.Join(dir, "einhorn.sock")), os.Getpid(), 7)
	if err := h.Ready(); err != nil {
		t.Fatal(err) // nothing taken: nothing to say
	}
	ln, err := (&Binder{Inherited: h}).Stream("http_address", "einhorn@0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ctl.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		got <- line
	}()
	if err := h.Ready(); err != nil {
		t.Fatal(err)
	}
	if msg, want := <-got, fmt.Sprintf("{\"command\":\"worker:ack\",\"pid\":%d}\n", os.Getpid()); msg != want {
		t.Errorf("einhorn was told %q, want %q", msg, want)
	}
}
