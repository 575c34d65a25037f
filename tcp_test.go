package veneur

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/veneur/veneur/samplers"
)

func tcpConfig(t *testing.T, extra string) Config {
	t.Helper()
	cfg := testConfig(t, "metric_max_length: 64\n"+extra)
	cfg.TcpAddress = "127.0.0.1:0"
	return cfg
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

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

func parseErrs(s *Server, err error) uint64 { return s.ingest.parseErrs[causeIndex(err)].Load() }

func TestTCPLines(t *testing.T) {
	s, out := startServer(t, tcpConfig(t, ""))
	c := dialTCP(t, s.TCPAddr())
	write(t, c,
		"a:1|c\nb:2|c\n",
		"c:3", "|c\nbad\n", // a line split over two writes
		strings.Repeat("x", 65)+":1|c\n",         // over metric_max_length
		strings.Repeat("y", 70_000), "\ne:5|c\n", // longer than the read buffer
		"d:1|c", // unterminated when the stream ends
	)
	c.Close()
	// a, b, c, bad, the two long ones, e and d.
	waitFor(t, "8 lines", func() bool { return s.ingest.lines.Load() >= 8 })
	if n := parseErrs(s, errUnterminated); n != 1 {
		t.Errorf("%d unterminated lines counted, want 1", n)
	}
	if n := parseErrs(s, samplers.ErrTooLong); n != 2 {
		t.Errorf("%d too long lines counted, want 2", n)
	}
	if n := parseErrs(s, samplers.ErrNoColon); n != 1 {
		t.Errorf("%d lines without a colon counted, want 1", n)
	}
	if n := s.ingest.tcpConns.Load(); n != 1 {
		t.Errorf("%d connections counted, want 1", n)
	}
	shutdown(t, s)
	got := out.String()
	for _, want := range []string{" a rate", " b rate", " c rate", " e rate"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, " d rate") || strings.Contains(got, "xxx") || strings.Contains(got, "yyy") {
		t.Errorf("an unterminated or too long line was flushed:\n%s", got)
	}
}

// Shutdown processes what open connections have sent before it returns.
func TestTCPShutdownDrains(t *testing.T) {
	s, out := startServer(t, tcpConfig(t, ""))
	c := dialTCP(t, s.TCPAddr())
	defer c.Close()
	write(t, c, strings.Repeat("q:1|c\n", 36000))
	shutdown(t, s)
	if got := out.String(); !strings.Contains(got, "q rate 10 ") {
		t.Errorf("want all 36000 lines (rate 10 over 1h):\n%s", got)
	}
}

// testPKI is an authority, a server certificate for 127.0.0.1 and client
// certificates, all as PEM.
type testPKI struct {
	caCert, serverCert, serverKey, clientCert, clientKey string
	pool                                                 *x509.CertPool
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
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage, ips ...net.IP) (string, string) {
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
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pemText("CERTIFICATE", der), pemText("EC PRIVATE KEY", kder)
	}
	p := testPKI{caCert: pemText("CERTIFICATE", caDER), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.serverCert, p.serverKey = issue(2, x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	p.clientCert, p.clientKey = issue(3, x509.ExtKeyUsageClientAuth)
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

func pemText(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func TestTLS(t *testing.T) {
	pki := newTestPKI(t)
	other := newTestPKI(t) // an authority the server does not trust
	cfg := tcpConfig(t, "")
	cfg.TLSCertificate, cfg.TLSKey, cfg.TLSAuthorityCertificate = pki.serverCert, pki.serverKey, pki.caCert
	s, out := startServer(t, cfg)

	send := func(clientCert, clientKey string, line string) {
		t.Helper()
		tc := &tls.Config{RootCAs: pki.pool}
		if clientCert != "" {
			pair, err := tls.X509KeyPair([]byte(clientCert), []byte(clientKey))
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		c, err := tls.Dial("tcp", s.TCPAddr().String(), tc)
		if err != nil {
			return // refused during the handshake
		}
		defer c.Close()
		c.Write([]byte(line))
		c.CloseWrite()
		// Read until the server closes: it does once it has read the
		// stream, or at once when it refused the client's certificate.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1))
	}
	send(pki.clientCert, pki.clientKey, "good:1|c\n")
	waitFor(t, "the good line", func() bool { return s.ingest.lines.Load() >= 1 })
	send("", "", "nocert:1|c\n")
	send(other.clientCert, other.clientKey, "untrusted:1|c\n")
	plain := dialTCP(t, s.TCPAddr())
	write(t, plain, "plain:1|c\n")
	plain.Close()
	waitFor(t, "3 failed handshakes", func() bool { return s.ingest.tcpErrs[tcpErrHandshake].Load() >= 3 })
	shutdown(t, s)
	got := out.String()
	if !strings.Contains(got, " good rate") {
		t.Errorf("the authenticated client's line is missing:\n%s", got)
	}
	for _, bad := range []string{"nocert", "untrusted", "plain"} {
		if strings.Contains(got, bad) {
			t.Errorf("the line of a refused %s client was flushed:\n%s", bad, got)
		}
	}
}

func TestTLSConfigErrors(t *testing.T) {
	pki := newTestPKI(t)
	for _, c := range []struct {
		cert, key, ca, want string
	}{
		{"not pem", pki.serverKey, "", "tls_certificate and tls_key"},
		{pki.serverCert, pki.clientKey, "", "tls_certificate and tls_key"}, // not its key
		{pki.serverCert, pki.serverKey, "not pem", "tls_authority_certificate"},
	} {
		cfg := tcpConfig(t, "")
		cfg.TLSCertificate, cfg.TLSKey, cfg.TLSAuthorityCertificate = c.cert, c.key, c.ca
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate() = %v, want an error naming %s", err, c.want)
		}
	}
	cfg := tcpConfig(t, "")
	cfg.TLSCertificate, cfg.TLSKey, cfg.TLSAuthorityCertificate = pki.serverCert, pki.serverKey, pki.caCert
	if err := cfg.Validate(); err != nil {
		t.Errorf("a valid TLS config: %v", err)
	}
}
