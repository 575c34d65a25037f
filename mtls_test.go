package veneur

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"

	"github.com/veneur/veneur/internal/testpki"
)

// indentPEM makes PEM text a YAML block scalar's body.
func indentPEM(pem string) string {
	return "  " + strings.ReplaceAll(strings.TrimSpace(pem), "\n", "\n  ") + "\n"
}

// A global with http_tls_* takes /import only from clients whose
// certificate its authority signed; a local with forward_tls_* reaches it
// over https. /healthcheck stays open.
func TestMutualTLSImport(t *testing.T) {
	pki, other := testpki.New(t), testpki.New(t)
	gcfg := testConfig(t, "http_tls_certificate: |\n"+indentPEM(pki.Server.Cert)+
		"http_tls_key: |\n"+indentPEM(pki.Server.Key)+
		"http_tls_authority_certificate: |\n"+indentPEM(pki.CA))
	gcfg.Hostname = "global"
	global, gout := startServer(t, gcfg)
	base := "https://" + global.HTTPAddr().String()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(pki.CA))
	client := func(p *testpki.Pair) *http.Client {
		tc := &tls.Config{RootCAs: pool}
		if p != nil {
			cert, err := tls.X509KeyPair([]byte(p.Cert), []byte(p.Key))
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	status := func(c *http.Client, method, path string) int {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader("[]"))
		resp, err := c.Do(req)
		if err != nil {
			return 0 // refused during the handshake
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(client(nil), "GET", "/healthcheck"); got != 200 {
		t.Errorf("/healthcheck without a client certificate: %d, want 200", got)
	}
	if got := status(client(nil), "POST", "/import"); got != http.StatusUnauthorized {
		t.Errorf("/import without a client certificate: %d, want 401", got)
	}
	if got := status(client(nil), "GET", "/debug/cardinality"); got != http.StatusUnauthorized {
		t.Errorf("/debug/cardinality without a client certificate: %d, want 401", got)
	}
	if got := status(client(&other.Client), "POST", "/import"); got == http.StatusAccepted {
		t.Errorf("/import with another authority's certificate: %d, want it refused", got)
	}
	if got := status(client(&pki.Client), "POST", "/import"); got != http.StatusAccepted {
		t.Errorf("/import of [] with the right certificate: %d, want 202", got)
	}
	// Plain HTTP to the TLS port is refused.
	if resp, err := http.Post("http://"+global.HTTPAddr().String()+"/import", "application/json", strings.NewReader("[]")); err == nil {
		if resp.StatusCode/100 == 2 {
			t.Errorf("plain HTTP /import answered %d", resp.StatusCode)
		}
		resp.Body.Close()
	}

	lcfg := testConfig(t, "forward_address: "+base+"\n"+
		"forward_tls_certificate: |\n"+indentPEM(pki.Client.Cert)+
		"forward_tls_key: |\n"+indentPEM(pki.Client.Key)+
		"forward_tls_authority_certificate: |\n"+indentPEM(pki.CA))
	local, _ := startServer(t, lcfg)
	sendUDP(t, local.UDPAddr(), "tls.hits:3|c|#veneurglobalonly")
	shutdown(t, local)
	shutdown(t, global)
	if got := gout.String(); !strings.Contains(got, "tls.hits rate 0.0008333333333333334 ") {
		t.Errorf("the global did not publish the forward over mutual TLS:\n%s", got)
	}
}
