package listen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/samplers"
)

func startTCP(t *testing.T, cfg TCPConfig, snk *sink) *TCP {
	t.Helper()
	cfg.Address = "127.0.0.1:0"
	if cfg.MaxLength == 0 {
		cfg.MaxLength = 64
	}
	l, err := NewTCP(cfg, snk.newIngester, Options{Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(); err != nil {
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
	caKey, caTmpl := newKey(t), &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test authority"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, usage x509.ExtKeyUsage, ips ...net.IP) tls.Certificate {
		k := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	p := testPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.server = issue(2, x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	p.client = issue(3, x509.ExtKeyUsageClientAuth)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
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
