//go:build unix

package listen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/samplers"
)

// frame is payload after its length, as the Datadog agent's stream socket
// reads it.
func frame(payload string) string {
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(payload)))
	return string(n[:]) + payload
}

// sendUnixgram sends each datagram to the unix datagram socket at path.
func sendUnixgram(t testing.TB, path string, datagrams ...string) {
	t.Helper()
	c, err := net.Dial("unixgram", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, d := range datagrams {
		if _, err := c.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
}

func newUnixDatagram(t *testing.T, cfg UnixDatagramConfig, snk *sink, b *Binder) *UnixDatagram {
	t.Helper()
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = 1 << 20
	}
	u, err := NewUnixDatagram(cfg, snk.newIngester, Options{Log: quietLog(), Bind: b})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Datagrams reach the ingester whole, one longer than MaxDatagram cut and
// marked truncated; those queued at Stop are drained; the socket file is
// removed, after which a client's send fails rather than vanishing.
func TestUnixDatagramLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dsd.sock")
	snk := newSink(t)
	u := newUnixDatagram(t, UnixDatagramConfig{Address: path, MaxDatagram: 32}, snk, nil)
	if err := u.Start(); err != nil {
		t.Fatal(err)
	}
	if a := u.Addr(); a == nil || a.String() != path {
		t.Errorf("Addr() = %v, want %s", a, path)
	}
	client, err := net.Dial("unixgram", path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, d := range []string{"a:1|c\nb:2|g", "c:3|h\n", strings.Repeat("x", 40)} {
		if _, err := client.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "3 datagrams", func() bool { return snk.get().packets == 3 })
	// Queued when Stop begins: the drain takes them.
	const queued = 8 // under net.unix.max_dgram_qlen's default of 10
	for i := 0; i < queued; i++ {
		if _, err := client.Write([]byte(fmt.Sprintf("q%d:1|c", i))); err != nil {
			t.Fatal(err)
		}
	}
	stop(t, u)
	got := snk.get()
	if got.packets != 3+queued || len(got.lines) != 4+queued {
		t.Errorf("%d datagrams and %d lines, want %d and %d: %q", got.packets, len(got.lines), 3+queued, 4+queued, got.lines)
	}
	if want := strings.Repeat("x", 32); !slices.Contains(got.lines, want) || got.truncated != 1 {
		t.Errorf("lines %q with %d truncated, want the long one cut to 32 bytes and marked", got.lines, got.truncated)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Stop: %v, want it removed", err)
	}
	if _, err := client.Write([]byte("late:1|c")); err == nil {
		t.Error("a send after Stop succeeded; it was lost without an error")
	}
}

// An inherited socket is read and drained but never shut down, nor its
// file removed: the next reader (the next veneur) takes up where the first
// stopped, and what was sent between the two waits in the socket.
func TestInheritedSocketOutlivesListener(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "held.sock")
	held, err := net.ListenPacket("unixgram", path)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for round := 0; round < 2; round++ {
		snk := newSink(t)
		ux := newUnixDatagram(t, UnixDatagramConfig{Address: fmt.Sprintf("fd@%d", dupFD(t, held.(*net.UnixConn)))}, snk, nil)
		ud, err := NewUDP(UDPConfig{Address: fmt.Sprintf("fd@%d", dupFD(t, udp.(*net.UDPConn))), Readers: 2, ReadBuffer: 1 << 20},
			snk.newIngester, Options{Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		if err := ux.Start(); err != nil {
			t.Fatal(err)
		}
		if err := ud.Start(); err != nil {
			t.Fatal(err)
		}
		sendUnixgram(t, path, fmt.Sprintf("unix%d:1|c", round))
		sendUDP(t, udp.LocalAddr(), fmt.Sprintf("udp%d:1|c", round))
		waitFor(t, "both lines", func() bool { return len(snk.get().lines) >= 2 })
		stop(t, ux)
		stop(t, ud)
		// Between two veneurs: queued in the held sockets.
		sendUnixgram(t, path, fmt.Sprintf("between%d:1|c", round))
		sendUDP(t, udp.LocalAddr(), fmt.Sprintf("between%d:1|c", round))
		got := snk.get().lines
		slices.Sort(got)
		want := []string{fmt.Sprintf("udp%d:1|c", round), fmt.Sprintf("unix%d:1|c", round)}
		if round == 1 {
			want = append([]string{"between0:1|c", "between0:1|c"}, want...)
		}
		if !slices.Equal(got, want) {
			t.Errorf("round %d: lines %q, want %q", round, got, want)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("round %d: the inherited socket's file was removed: %v", round, err)
		}
	}
}

// A veneur started with -takeover joins the old one's UDP port; the old one
// then stops while a client sends, and every datagram lands in one of the
// two: those queued in the old socket are drained, and those the kernel
// would have given it afterwards go to the new one (closeDoor).
func TestUDPTakeoverLosesNothing(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SO_REUSEPORT is used on Linux only")
	}
	oldSnk, newSnk := newSink(t), newSink(t)
	start := func(snk *sink, addr string, takeover bool) *UDP {
		u, err := NewUDP(UDPConfig{Address: addr, Readers: 2, ReadBuffer: 4 << 20}, snk.newIngester,
			Options{Log: quietLog(), Bind: &Binder{Takeover: takeover}})
		if err != nil {
			t.Fatal(err)
		}
		if err := u.Start(); err != nil {
			t.Fatal(err)
		}
		return u
	}
	old := start(oldSnk, "127.0.0.1:0", false)
	// Many source ports, so that the kernel spreads them over all four
	// sockets.
	var clients []net.Conn
	for i := 0; i < 32; i++ {
		c, err := net.Dial("udp", old.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	received := func() int { return oldSnk.lineCount() + newSnk.lineCount() }
	const n = 30000
	var wg sync.WaitGroup
	wg.Add(1)
	sent := make(chan int, 1)
	var mu sync.Mutex
	progress := 0
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			// Keep at most 2000 in flight, so that no socket
			// buffer overflows: a loss would then be the kernel's.
			for i%100 == 0 && i-received() > 2000 {
				time.Sleep(100 * time.Microsecond)
			}
			if _, err := clients[i%len(clients)].Write([]byte("c:1|c")); err != nil {
				t.Errorf("send %d: %v", i, err)
				break
			}
			mu.Lock()
			progress = i + 1
			mu.Unlock()
		}
		sent <- n
	}()
	at := func(k int) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return progress >= k }
	}
	waitFor(t, "a third sent", at(n/3))
	nu := start(newSnk, old.Addr().String(), true)
	waitFor(t, "two thirds sent", at(2*n/3))
	stop(t, old)
	wg.Wait()
	<-sent
	waitFor(t, "every datagram", func() bool { return received() >= n })
	stop(t, nu)
	o, w := oldSnk.lineCount(), newSnk.lineCount()
	if o+w != n {
		t.Errorf("old %d + new %d = %d lines, want %d", o, w, o+w, n)
	}
	if o == 0 || w == 0 {
		t.Errorf("old %d, new %d: both should have taken part", o, w)
	}
}

func newUnixStream(t *testing.T, cfg UnixStreamConfig, snk *sink) *UnixStream {
	t.Helper()
	if cfg.MaxLength == 0 {
		cfg.MaxLength = 16
	}
	u, err := NewUnixStream(cfg, snk.newIngester, Options{Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(); err != nil {
		t.Fatal(err)
	}
	return u
}

// Each connection is read in its own framing: length-prefixed payloads
// (the first length's fourth byte is 0) or newline-terminated lines;
// metric_max_length applies to each line either way, and Stop drains.
func TestUnixStreamFramings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dsd-stream.sock")
	snk := newSink(t)
	u := newUnixStream(t, UnixStreamConfig{Address: path}, snk)
	dial := func() net.Conn {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	framed, text, slow := dial(), dial(), dial()
	// A payload of 10 bytes: its length's first byte is a newline.
	write(t, framed, frame("f1:1|c\nf2"), frame(":2|c\nf3:3|c"), frame(""), frame("f4:4|c\n"+strings.Repeat("L", 20)+":1|c\nf5:5|c\n"))
	write(t, text, "t1:1|c\nt2:2|c\n"+strings.Repeat("L", 20)+":1|c\nt3:3|c\n")
	// One byte per write: the length and the payload in pieces.
	for _, b := range []byte(frame("s1:1|c\ns2:2|c") + frame("s3:3|c")) {
		write(t, slow, string(b))
	}
	waitFor(t, "the lines", func() bool { return snk.lineCount() >= 12 })
	stop(t, u)
	got := snk.get()
	lines := slices.Clone(got.lines)
	slices.Sort(lines)
	// "f2" and ":2|c" are two lines: a payload ends its last line.
	want := []string{":2|c", "f1:1|c", "f2", "f3:3|c", "f4:4|c", "f5:5|c", "s1:1|c", "s2:2|c", "s3:3|c", "t1:1|c", "t2:2|c", "t3:3|c"}
	if !slices.Equal(lines, want) {
		t.Errorf("lines %q, want %q", lines, want)
	}
	if !slices.Equal(got.skips, []error{samplers.ErrTooLong, samplers.ErrTooLong}) {
		t.Errorf("skips %v, want two too long", got.skips)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Stop: %v, want it removed", err)
	}
	rec := &statstest.Recorder{}
	u.Report(rec)
	if got := rec.Sum("unix_stream.connections_total"); got != 3 {
		t.Errorf("unix_stream.connections_total = %d, want 3", got)
	}
}

// readUnixStream reads a framed stream cut anywhere: a payload cut inside
// a line loses that line, counted as unterminated; a read error is
// returned.
func TestReadUnixStream(t *testing.T) {
	broken := errors.New("connection reset")
	two := frame("a:1|c\nb:2|c")
	for _, c := range []struct {
		name    string
		parts   []string
		end     error
		lines   []string
		skips   []error
		wantErr error
	}{
		{"framed", []string{two}, io.EOF, []string{"a:1|c", "b:2|c"}, nil, nil},
		{"framed, one byte a read", strings.Split(two+frame("c:3|c\n"), ""), io.EOF, []string{"a:1|c", "b:2|c", "c:3|c"}, nil, nil},
		{"cut inside a payload's line", []string{two[:12]}, io.EOF, []string{"a:1|c"}, []error{ErrUnterminated}, nil},
		{"cut at a payload's line end", []string{two[:10]}, io.EOF, []string{"a:1|c"}, nil, nil},
		{"cut inside a length", []string{two + two[:2]}, io.EOF, []string{"a:1|c", "b:2|c"}, nil, nil},
		{"read error", []string{two[:12]}, broken, []string{"a:1|c"}, []error{ErrUnterminated}, broken},
		{"text", []string{"a:1|c\nb:2|c\n"}, io.EOF, []string{"a:1|c", "b:2|c"}, nil, nil},
		{"text shorter than a length", []string{"a\n"}, io.EOF, []string{"a"}, nil, nil},
		{"text unterminated", []string{"a:1|c\nb"}, io.EOF, []string{"a:1|c"}, []error{ErrUnterminated}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			snk := newSink(t)
			err := readUnixStream(&chunks{parts: slices.Clone(c.parts), err: c.end}, snk.newIngester(), 16, nil)
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
				t.Errorf("readUnixStream() = %v, want %v", err, c.wantErr)
			}
			got := snk.get()
			if !slices.Equal(got.lines, c.lines) {
				t.Errorf("lines %q, want %q", got.lines, c.lines)
			}
			if !slices.Equal(got.skips, c.skips) {
				t.Errorf("skipped %v, want %v", got.skips, c.skips)
			}
		})
	}
}
