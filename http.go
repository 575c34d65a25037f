package veneur

import (
	"context"
	"crypto/tls"
	"errors"
	stdlog "log"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/listen"
)

// handler returns the HTTP routes: /healthcheck, /version, /import (metrics
// forwarded by other instances), /debug/cardinality (series and drops per
// metric name), and /debug/pprof/ when enable_profiling is set. With
// http_tls_authority_certificate, everything but /healthcheck and
// /version needs a client certificate that authority signed: the debug
// routes show metric names and the process's internals.
func (s *Server) handler(imp *forward.Importer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthcheck", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(VERSION + "\n"))
	})
	guard := func(h http.Handler) http.Handler { return h }
	if s.cfg.HTTPTLSAuthorityCertificate != "" {
		guard = requireClientCert
	}
	mux.Handle("/import", imp) // checks the client certificate itself, and counts refusals
	mux.Handle("/debug/cardinality", guard(s.pool.card))
	mux.Handle("GET /debug/ring", guard(s.tier))
	if s.cfg.EnableProfiling {
		mux.Handle("/debug/pprof/", guard(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/cmdline", guard(http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("/debug/pprof/profile", guard(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", guard(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", guard(http.HandlerFunc(pprof.Trace)))
	}
	return mux
}

// requireClientCert refuses requests that came without a verified client
// certificate (the TLS listener verifies one when it is given).
func requireClientCert(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "a client certificate signed by http_tls_authority_certificate is required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Limits of the HTTP server. A client that is slower than these is cut
// off, so that none can hold a connection (or Shutdown) for long.
const (
	httpReadHeaderTimeout = 10 * time.Second
	// httpReadTimeout bounds reading a whole request, body included: an
	// /import body of 256 MiB at 10 MB/s takes 27 s.
	httpReadTimeout  = 60 * time.Second
	httpWriteTimeout = 60 * time.Second
	httpIdleTimeout  = 2 * time.Minute
	httpMaxHeader    = 64 << 10
	// httpStopGrace is how long Stop lets requests in progress finish
	// before it closes their connections.
	httpStopGrace = time.Second
)

// webServer serves the HTTP routes on http_address, over TLS when tls is
// set. It is a listener like the others, so the server starts and stops it
// with them; its self-metrics are the importer's.
type webServer struct {
	addr    string
	bind    *listen.Binder
	tls     *tls.Config
	handler http.Handler
	imp     *forward.Importer
	guard   func()
	log     *logrus.Logger
	ln      net.Listener
	srv     *http.Server
	served  chan struct{} // closed when Serve has returned
}

var _ listen.Listener = (*webServer)(nil)

func newWebServer(addr string, bind *listen.Binder, tlsConf *tls.Config, h http.Handler, imp *forward.Importer, guard func(), log *logrus.Logger) *webServer {
	return &webServer{addr: addr, bind: bind, tls: tlsConf, handler: h, imp: imp, guard: guard, log: log}
}

// Start binds http_address (host:port, a unix socket path, or an inherited
// socket: fd@N, einhorn@N, systemd:NAME) and serves it.
func (w *webServer) Start() error {
	ln, err := w.bind.Stream("http_address", w.addr)
	if err != nil {
		return err
	}
	w.ln = ln
	if w.tls != nil {
		ln = tls.NewListener(ln, w.tls)
	}
	w.srv = &http.Server{
		Handler:           w.handler,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeader,
		ErrorLog:          stdlog.New(debugWriter{w.log}, "", 0),
	}
	w.served = make(chan struct{})
	go func() {
		defer close(w.served)
		defer w.guard()
		// Serve backs off on transient accept errors (such as running out
		// of descriptors) instead of spinning.
		if err := w.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.log.WithError(err).Error("HTTP server stopped")
		}
	}()
	return nil
}

// Stop stops accepting, lets the requests in progress finish for
// httpStopGrace at most (less if ctx ends first), then closes every
// connection that is left: no client, however slow, delays the final
// flush.
func (w *webServer) Stop(ctx context.Context) error {
	if w.srv == nil {
		return nil
	}
	gctx, cancel := context.WithTimeout(ctx, httpStopGrace)
	defer cancel()
	if err := w.srv.Shutdown(gctx); err != nil {
		w.log.WithError(err).Info("HTTP requests still in progress after the grace; closing their connections")
		w.srv.Close()
	}
	<-w.served
	return nil
}

// Addr is the bound address, nil before Start.
func (w *webServer) Addr() net.Addr {
	if w.ln == nil {
		return nil
	}
	return w.ln.Addr()
}

// Report sends the importer's self-metrics.
func (w *webServer) Report(stats statsd.ClientInterface) { w.imp.Report(stats) }

// debugWriter logs what net/http reports about single connections (failed
// TLS handshakes, bad requests, accept retries) at debug level: a client's
// problem, not the server's.
type debugWriter struct{ log *logrus.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}
