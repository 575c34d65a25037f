package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/veneur/veneur/forward/forwardrpc"
	"github.com/veneur/veneur/internal/testpki"
)

// A global serving http_address over TLS with an authority for client
// certificates takes forwards only from a local that presents one: the
// local with forward_tls_* reaches it over https and the global publishes
// what it forwarded; a client without a certificate gets 401 on /import
// while /healthcheck stays open.
func TestMutualTLSForwarding(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t)
	gfake, lfake := newFakeDD(t), newFakeDD(t)
	global := startDaemon(t, gfake, func(c config) {
		c["hostname"] = "global-veneur"
		c["http_tls_certificate"] = pki.Server.Cert
		c["http_tls_key"] = pki.Server.Key
		c["http_tls_authority_certificate"] = pki.CA
	})
	local := startDaemon(t, lfake, func(c config) {
		c["forward_address"] = "https://" + global.httpAddr
		c["forward_tls_certificate"] = pki.Client.Cert
		c["forward_tls_key"] = pki.Client.Key
		c["forward_tls_authority_certificate"] = pki.CA
	})

	// Without a client certificate: /healthcheck yes, /import no.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(pki.CA))
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if code, err := global.health(); err != nil || code != http.StatusOK {
		t.Errorf("/healthcheck over TLS: %d, %v", code, err)
	}
	resp, err := anon.Post("https://"+global.httpAddr+"/import", "application/json", strings.NewReader("[]"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/import without a client certificate: %d, want 401", resp.StatusCode)
	}

	c := newClient(t, local)
	must(t, c.Count("tls.fleet.hits", 6, []string{"veneurglobalonly"}, 1))
	flushClient(t, c)
	local.stopAndCollect(t) // its last flush forwards before it exits
	greqs := global.stopAndCollect(t)
	expectSeries(t, greqs, "tls.fleet.hits", want{Type: "rate", Value: 6 / hour, Interval: hour, Host: "global-veneur"})
}

// The same over gRPC: a global serving grpc_address with the http_tls_*
// keys takes forwards only from a local that presents a certificate its
// authority signed. The local with forward_address grpcs:// and
// forward_tls_* reaches it and the global publishes what it forwarded; a
// client without a certificate is refused before any call.
func TestMutualTLSForwardingGRPC(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t)
	gfake, lfake := newFakeDD(t), newFakeDD(t)
	var grpcAddr string
	global := startDaemon(t, gfake, func(c config) {
		c["hostname"] = "global-veneur"
		grpcAddr = freeTCPAddr(t)
		c["grpc_address"] = grpcAddr
		c["http_tls_certificate"] = pki.Server.Cert
		c["http_tls_key"] = pki.Server.Key
		c["http_tls_authority_certificate"] = pki.CA
	})
	local := startDaemon(t, lfake, func(c config) {
		c["forward_address"] = "grpcs://" + grpcAddr
		c["forward_tls_certificate"] = pki.Client.Cert
		c["forward_tls_key"] = pki.Client.Key
		c["forward_tls_authority_certificate"] = pki.CA
	})

	// Without a client certificate: no call gets through.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(pki.CA))
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = forwardrpc.NewForwardClient(conn).SendMetrics(ctx, &forwardrpc.MetricList{})
	if code := status.Code(err); code != codes.Unavailable {
		t.Errorf("a call without a client certificate: %v, want Unavailable (the handshake fails)", err)
	}

	c := newClient(t, local)
	must(t, c.Count("tls.grpc.hits", 6, []string{"veneurglobalonly"}, 1))
	must(t, c.Timing("tls.grpc.lat", 20*time.Millisecond, nil, 1))
	flushClient(t, c)
	local.stopAndCollect(t) // its last flush forwards before it exits
	greqs := global.stopAndCollect(t)
	expectSeries(t, greqs, "tls.grpc.hits", want{Type: "rate", Value: 6 / hour, Interval: hour, Host: "global-veneur"})
	expectSeries(t, greqs, "tls.grpc.lat.50percentile", want{Type: "gauge", Value: 20, Host: "global-veneur"})
}
