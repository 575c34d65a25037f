package listen

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/internal/testpki"
	"github.com/veneur/veneur/samplers"
)

func startTCP(t *testing.T, cfg TCPConfig, snk *sink) *TCP {
	t.Helper()
	l := newTCP(t, cfg, snk, quietLog())
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	return l
}

// newTCP is startTCP without the Start, for tests that change the
// listener or watch its log.
func newTCP(t *testing.T, cfg TCPConfig, snk *sink, log *logrus.Logger) *TCP {
	t.Helper()
	cfg.Address = "127.0.0.1:0"
	if cfg.MaxLength == 0 {
		cfg.MaxLength = 64
	}
	l, err := NewTCP(cfg, snk.newIngester, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func dialTCP(t *testing.T, addr net.Addr) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func write(t *testing.T, c net.Conn, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTCPLines(t *testing.T) {
	snk := newSink(t)
	l := startTCP(t, TCPConfig{MaxLength: 64}, snk)
	c := dialTCP(t, l.Addr())
	write(t, c,
		"a:1|c\nb:2|c\n",
		"c:3", "|c\nbad\n", // a line split over two writes
		strings.Repeat("x", 65)+":1|c\n",         // over MaxLength
		strings.Repeat("y", 70_000), "\ne:5|c\n", // longer than the read buffer
		"d:1|c", // unterminated when the stream ends
	)
	c.Close()
	waitFor(t, "3 skipped lines", func() bool { return len(snk.get().skips) >= 3 })
	stop(t, l)
	got := snk.get()
	if want := []string{"a:1|c", "b:2|c", "c:3|c", "bad", "e:5|c"}; !slices.Equal(got.lines, want) {
		t.Errorf("lines %q, want %q", got.lines, want)
	}
	if want := []error{samplers.ErrTooLong, samplers.ErrTooLong, ErrUnterminated}; !slices.Equal(got.skips, want) {
		t.Errorf("skipped %v, want %v", got.skips, want)
	}
	if got.packets != 0 {
		t.Errorf("%d packets from a stream", got.packets)
	}
	rec := &statstest.Recorder{}
	l.Report(rec)
	if n := rec.Sum("tcp.connections_total"); n != 1 {
		t.Errorf("tcp.connections_total = %d, want 1", n)
	}
	if n := rec.Sum("tcp.error_total"); n != 0 {
		t.Errorf("tcp.error_total = %d, want 0", n)
	}
	// Report sends the counts since the last Report.
	rec2 := &statstest.Recorder{}
	l.Report(rec2)
	if names := rec2.Names(); len(names) != 0 {
		t.Errorf("a second Report sent %v again", names)
	}
}

// Stop processes what open connections have sent before it returns, and
// the connections that were still waiting to be accepted.
func TestTCPStopDrains(t *testing.T) {
	snk := newSink(t)
	l := startTCP(t, TCPConfig{}, snk)
	c := dialTCP(t, l.Addr())
	defer c.Close()
	const n = 36000
	write(t, c, strings.Repeat("q:1|c\n", n))
	late := dialTCP(t, l.Addr())
	defer late.Close()
	write(t, late, "late:1|c\n")
	stop(t, l)
	got := snk.get()
	if len(got.lines) != n+1 {
		t.Errorf("%d lines handed over, want %d", len(got.lines), n+1)
	}
	if !slices.Contains(got.lines, "late:1|c") {
		t.Error("the line of the connection accepted last is missing")
	}
	// The drain closed the listener.
	if c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts after Stop")
	}
}

// chunks is a reader that returns its parts one per Read, then err.
type chunks struct {
	parts []string
	err   error
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.parts) == 0 {
		return 0, c.err
	}
	n := copy(p, c.parts[0])
	if n < len(c.parts[0]) {
		c.parts[0] = c.parts[0][n:]
	} else {
		c.parts = c.parts[1:]
	}
	return n, nil
}

func TestReadLines(t *testing.T) {
	tooLong, unterminated := samplers.ErrTooLong, ErrUnterminated
	broken := errors.New("connection reset")
	for _, c := range []struct {
		name    string
		parts   []string
		end     error
		lines   []string
		skips   []error
		wantErr error
	}{
		{"lines", []string{"a\nb\n"}, io.EOF, []string{"a", "b"}, nil, nil},
		{"empty lines skipped", []string{"\n\na\n\n"}, io.EOF, []string{"a"}, nil, nil},
		{"split line", []string{"ab", "c\nd", "\n"}, io.EOF, []string{"abc", "d"}, nil, nil},
		{"exactly the maximum", []string{"12345678\n"}, io.EOF, []string{"12345678"}, nil, nil},
		{"one byte over", []string{"123456789\nok\n"}, io.EOF, []string{"ok"}, []error{tooLong}, nil},
		{"too long over reads", []string{"1234567", "89012345", "6789\nok\n"}, io.EOF, []string{"ok"}, []error{tooLong}, nil},
		{"unterminated", []string{"a\nb"}, io.EOF, []string{"a"}, []error{unterminated}, nil},
		{"too long and unterminated", []string{"12345678901234567890"}, io.EOF, nil, []error{tooLong}, nil},
		{"closed", []string{"a\n"}, net.ErrClosed, []string{"a"}, nil, nil},
		{"read error", []string{"a\nb"}, broken, []string{"a"}, []error{unterminated}, broken},
	} {
		t.Run(c.name, func(t *testing.T) {
			snk := newSink(t)
			reads := 0
			err := readLines(&chunks{parts: slices.Clone(c.parts), err: c.end}, snk.newIngester(), 8, func() { reads++ })
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
				t.Errorf("readLines() = %v, want %v", err, c.wantErr)
			}
			got := snk.get()
			if !slices.Equal(got.lines, c.lines) {
				t.Errorf("lines %q, want %q", got.lines, c.lines)
			}
			if !slices.Equal(got.skips, c.skips) {
				t.Errorf("skipped %v, want %v", got.skips, c.skips)
			}
			if reads == 0 {
				t.Error("beforeRead never ran")
			}
		})
	}
}

// testPKI is an authority, a server certificate for 127.0.0.1 and a client
// certificate.
type testPKI struct {
	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	pems := testpki.New(t)
	pair := func(p testpki.Pair) tls.Certificate {
		c, err := tls.X509KeyPair([]byte(p.Cert), []byte(p.Key))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	p := testPKI{pool: x509.NewCertPool(), server: pair(pems.Server), client: pair(pems.Client)}
	p.pool.AppendCertsFromPEM([]byte(pems.CA))
	return p
}

// serverTLS is the listener's TLS config as the root builds it from
// tls_certificate, tls_key and tls_authority_certificate: client
// certificates required and checked when an authority is given.
func serverTLS(pki testPKI, withCA bool) *tls.Config {
	tc := &tls.Config{Certificates: []tls.Certificate{pki.server}, MinVersion: tls.VersionTLS12}
	if withCA {
		tc.ClientCAs = pki.pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc
}

// sendTLS sends line over TLS with the client certificate cert (none when
// nil), then reads until the server closes: it does once it has read the
// stream, or at once when it refused the client.
func sendTLS(t *testing.T, addr net.Addr, pki testPKI, cert *tls.Certificate, line string) {
	t.Helper()
	tc := &tls.Config{RootCAs: pki.pool}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.Dial("tcp", addr.String(), tc)
	if err != nil {
		return // refused during the handshake
	}
	defer c.Close()
	c.Write([]byte(line))
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.Read(make([]byte, 1))
}

func TestTLS(t *testing.T) {
	pki := newTestPKI(t)
	other := newTestPKI(t) // an authority the server does not trust
	type client struct {
		name string
		cert *tls.Certificate // nil: none; plain: not TLS at all
		tls  bool
	}
	good := client{"good", &pki.client, true}
	nocert := client{"nocert", nil, true}
	untrusted := client{"untrusted", &other.client, true}
	plain := client{"plain", nil, false}
	for _, c := range []struct {
		name     string
		withCA   bool
		clients  []client
		accepted []string // the clients whose lines arrive
	}{
		{"client certificates required", true, []client{good, nocert, untrusted, plain}, []string{"good"}},
		{"server certificate only", false, []client{good, nocert, plain}, []string{"good", "nocert"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			snk := newSink(t)
			l := startTCP(t, TCPConfig{TLS: serverTLS(pki, c.withCA)}, snk)
			for _, cl := range c.clients {
				if cl.tls {
					sendTLS(t, l.Addr(), pki, cl.cert, cl.name+":1|c\n")
					continue
				}
				p := dialTCP(t, l.Addr())
				write(t, p, cl.name+":1|c\n")
				p.Close()
			}
			rec := &statstest.Recorder{}
			failed := int64(len(c.clients) - len(c.accepted))
			waitFor(t, "the failed handshakes", func() bool {
				l.Report(rec)
				return rec.Sum("tcp.error_total", "cause:tls_handshake") >= failed
			})
			waitFor(t, "the accepted lines", func() bool { return len(snk.get().lines) >= len(c.accepted) })
			stop(t, l)
			l.Report(rec)
			var want []string
			for _, a := range c.accepted {
				want = append(want, a+":1|c")
			}
			if got := snk.get().lines; !slices.Equal(got, want) {
				t.Errorf("lines %q, want %q", got, want)
			}
			if n := rec.Sum("tcp.error_total", "cause:tls_handshake"); n != failed {
				t.Errorf("%d failed handshakes counted, want %d", n, failed)
			}
			if n := rec.Sum("tcp.error_total"); n != failed {
				t.Errorf("tcp.error_total = %d, want %d, all tls_handshake", n, failed)
			}
			if n := rec.Sum("tcp.connections_total"); n != int64(len(c.clients)) {
				t.Errorf("tcp.connections_total = %d, want %d", n, len(c.clients))
			}
		})
	}
}

// A read that fails other than by the drain's deadline is counted under
// read.
func TestTCPReadErrorCounted(t *testing.T) {
	snk := newSink(t)
	l := startTCP(t, TCPConfig{}, snk)
	c := dialTCP(t, l.Addr())
	write(t, c, "a:1|c\n")
	waitFor(t, "the line", func() bool { return len(snk.get().lines) == 1 })
	// Closing with unread data pending would be a reset on some systems;
	// a zero linger makes it one everywhere.
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
	rec := &statstest.Recorder{}
	waitFor(t, "the read error", func() bool {
		l.Report(rec)
		return rec.Sum("tcp.error_total", "cause:read") >= 1
	})
	stop(t, l)
	l.Report(rec)
	if n := rec.Sum("tcp.error_total"); n != 1 {
		t.Errorf("tcp.error_total = %d, want 1", n)
	}
}

// expectClosed reads from c until the server closes it (EOF, or a reset),
// failing the test if the server sends anything or keeps c open for 5
// seconds.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	switch {
	case n > 0:
		t.Errorf("the server sent %d bytes", n)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatal("the server kept the connection open")
	case err == nil:
		t.Fatal("a read of nothing and no error")
	}
}

// openGauge is the last tcp.open_connections that l reported to rec, after
// a new Report.
func openGauge(t *testing.T, l *TCP, rec *statstest.Recorder) float64 {
	t.Helper()
	l.Report(rec)
	v, ok := rec.GaugeValue("tcp.open_connections")
	if !ok {
		t.Fatal("Report sent no tcp.open_connections")
	}
	return v
}

// warnings are the messages logged at warning level or above.
func warnings(hook *logtest.Hook) []string {
	var w []string
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel {
			w = append(w, e.Message)
		}
	}
	return w
}

func TestTCPLimitDefaults(t *testing.T) {
	l := newTCP(t, TCPConfig{}, newSink(t), quietLog())
	if l.maxConns != DefaultTCPMaxConnections || l.idle != DefaultTCPIdleTimeout || l.handshakeTimeout != tcpHandshakeTimeout {
		t.Errorf("limits %d, %v, %v; want the defaults %d, %v, %v",
			l.maxConns, l.idle, l.handshakeTimeout, DefaultTCPMaxConnections, DefaultTCPIdleTimeout, tcpHandshakeTimeout)
	}
	l = newTCP(t, TCPConfig{MaxConnections: 7, IdleTimeout: time.Minute}, newSink(t), quietLog())
	if l.maxConns != 7 || l.idle != time.Minute {
		t.Errorf("limits %d, %v; want 7, 1m0s as configured", l.maxConns, l.idle)
	}
	for _, cfg := range []TCPConfig{{MaxConnections: -1}, {IdleTimeout: -time.Second}} {
		cfg.Address, cfg.MaxLength = "127.0.0.1:0", 64
		if _, err := NewTCP(cfg, newSink(t).newIngester, Options{}); err == nil {
			t.Errorf("NewTCP(%+v) took a negative limit", cfg)
		}
	}
}

// Past MaxConnections a new connection is closed at once and counted,
// with a warning naming the setting; the open ones go on, and once one
// closes a new one is taken again.
func TestTCPMaxConnections(t *testing.T) {
	snk := newSink(t)
	log, hook := logtest.NewNullLogger()
	l := newTCP(t, TCPConfig{MaxConnections: 3}, snk, log)
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for i := range 3 {
		c := dialTCP(t, l.Addr())
		defer c.Close()
		write(t, c, fmt.Sprintf("first%d:1|c\n", i))
		conns = append(conns, c)
	}
	// Every line arrived, so all 3 connections are being served.
	waitFor(t, "the first lines", func() bool { return len(snk.get().lines) == 3 })

	over := dialTCP(t, l.Addr())
	defer over.Close()
	expectClosed(t, over)
	rec := &statstest.Recorder{}
	waitFor(t, "the refused connection counted", func() bool {
		l.Report(rec)
		return rec.Sum("tcp.error_total", "cause:max_connections") >= 1
	})
	if v := openGauge(t, l, rec); v != 3 {
		t.Errorf("tcp.open_connections = %v, want 3", v)
	}
	w := warnings(hook)
	if len(w) != 1 || !strings.Contains(w[0], "3 connections") || !strings.Contains(w[0], "tcp_max_connections") {
		t.Errorf("warnings %q, want one naming the limit, 3, and tcp_max_connections", w)
	}

	// The open connections are unaffected.
	for i, c := range conns {
		write(t, c, fmt.Sprintf("second%d:1|c\n", i))
	}
	waitFor(t, "the second lines", func() bool { return len(snk.get().lines) == 6 })

	// Once one closes, a new connection is taken.
	conns[0].Close()
	waitFor(t, "the closed connection gone", func() bool { return openGauge(t, l, rec) == 2 })
	late := dialTCP(t, l.Addr())
	defer late.Close()
	write(t, late, "late:1|c\n")
	waitFor(t, "the new connection's line", func() bool { return slices.Contains(snk.get().lines, "late:1|c") })
	if v := openGauge(t, l, rec); v != 3 {
		t.Errorf("tcp.open_connections = %v, want 3", v)
	}

	stop(t, l)
	if v := openGauge(t, l, rec); v != 0 {
		t.Errorf("tcp.open_connections = %v after Stop, want 0", v)
	}
	if n := rec.Sum("tcp.error_total"); n != 1 {
		t.Errorf("tcp.error_total = %d, want 1, for the refused connection", n)
	}
	if n := rec.Sum("tcp.connections_total"); n != 4 {
		t.Errorf("tcp.connections_total = %d, want 4, the refused one not included", n)
	}
}

// A connection that sends nothing for IdleTimeout is closed and counted,
// without a log; one that keeps sending stays open however long it lasts.
func TestTCPIdleTimeout(t *testing.T) {
	// Long enough that the active connection, which writes every idle/10,
	// never looks idle to the server on a busy machine.
	const idle = 400 * time.Millisecond
	snk := newSink(t)
	log, hook := logtest.NewNullLogger()
	l := newTCP(t, TCPConfig{IdleTimeout: idle}, snk, log)
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}

	// active sends a line every idle/10 until stopSending closes.
	active := dialTCP(t, l.Addr())
	defer active.Close()
	stopSending := make(chan struct{})
	sendErr := make(chan error, 1)
	go func() {
		tick := time.NewTicker(idle / 10)
		defer tick.Stop()
		for {
			select {
			case <-stopSending:
				sendErr <- nil
				return
			case <-tick.C:
				if _, err := active.Write([]byte("active:1|c\n")); err != nil {
					sendErr <- err
					return
				}
			}
		}
	}()
	activeLines := func() int {
		n := 0
		for _, line := range snk.get().lines {
			if line == "active:1|c" {
				n++
			}
		}
		return n
	}

	began := time.Now() // before the server's last read of quiet
	quiet := dialTCP(t, l.Addr())
	defer quiet.Close()
	write(t, quiet, "quiet:1|c\n")
	expectClosed(t, quiet)
	if d := time.Since(began); d < idle {
		t.Errorf("the quiet connection was closed after %v, before the idle timeout %v", d, idle)
	}

	// Wait for lines of active spanning 3 idle timeouts past this point.
	want := activeLines() + 30
	waitFor(t, "the active connection's lines", func() bool { return activeLines() >= want })
	rec := &statstest.Recorder{}
	if v := openGauge(t, l, rec); v != 1 {
		t.Errorf("tcp.open_connections = %v, want 1, the active connection", v)
	}
	close(stopSending)
	if err := <-sendErr; err != nil {
		t.Errorf("the active connection failed: %v", err)
	}
	active.Close()
	stop(t, l)
	l.Report(rec)
	if n := rec.Sum("tcp.error_total", "cause:idle_timeout"); n != 1 {
		t.Errorf("%d idle connections counted, want 1", n)
	}
	if n := rec.Sum("tcp.error_total"); n != 1 {
		t.Errorf("tcp.error_total = %d, want 1, the idle connection", n)
	}
	if w := warnings(hook); len(w) != 0 {
		t.Errorf("warnings %q, want none for an idle connection", w)
	}
}

// A TLS client that connects and sends nothing is closed once the
// handshake deadline passes, and counted under tls_handshake; one that
// completes its handshake and then sends nothing is closed by the idle
// timeout, and counted under idle_timeout.
func TestTLSHandshakeTimeout(t *testing.T) {
	pki := newTestPKI(t)
	snk := newSink(t)
	// An idle timeout longer than the handshake's shows which of the
	// two closed the silent client.
	l := newTCP(t, TCPConfig{TLS: serverTLS(pki, false), IdleTimeout: time.Minute}, snk, quietLog())
	l.handshakeTimeout = 100 * time.Millisecond
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	c := dialTCP(t, l.Addr())
	defer c.Close()
	expectClosed(t, c)
	stop(t, l)
	rec := &statstest.Recorder{}
	l.Report(rec)
	if n := rec.Sum("tcp.error_total", "cause:tls_handshake"); n != 1 {
		t.Errorf("%d failed handshakes counted, want 1", n)
	}
	if n := rec.Sum("tcp.error_total"); n != 1 {
		t.Errorf("tcp.error_total = %d, want 1, the handshake", n)
	}

	l = newTCP(t, TCPConfig{TLS: serverTLS(pki, false), IdleTimeout: 100 * time.Millisecond}, snk, quietLog())
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	tc, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pki.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	write(t, tc, "tls:1|c\n")
	expectClosed(t, tc)
	stop(t, l)
	rec = &statstest.Recorder{}
	l.Report(rec)
	if n := rec.Sum("tcp.error_total", "cause:idle_timeout"); n != 1 {
		t.Errorf("%d idle TLS connections counted, want 1", n)
	}
	if n := rec.Sum("tcp.error_total"); n != 1 {
		t.Errorf("tcp.error_total = %d, want 1, the idle connection", n)
	}
}

// Stop cuts quiet connections with the drain's short deadlines, not the
// idle timeout, and does not count them as idle.
func TestTCPStopCutsIdleConnections(t *testing.T) {
	snk := newSink(t)
	l := startTCP(t, TCPConfig{IdleTimeout: time.Hour}, snk)
	const n = 20
	for i := range n {
		c := dialTCP(t, l.Addr())
		defer c.Close()
		write(t, c, fmt.Sprintf("c%d:1|c\n", i))
	}
	waitFor(t, "every line", func() bool { return len(snk.get().lines) == n })
	ctx, cancel := context.WithTimeout(context.Background(), tcpDrainMax+3*time.Second)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		t.Fatalf("Stop waited for the idle timeout: %v", err)
	}
	rec := &statstest.Recorder{}
	if v := openGauge(t, l, rec); v != 0 {
		t.Errorf("tcp.open_connections = %v after Stop, want 0", v)
	}
	if n := rec.Sum("tcp.error_total"); n != 0 {
		t.Errorf("tcp.error_total = %d, want 0: drained connections are no errors", n)
	}
}
