package veneur

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/listen"
)

// handler returns the HTTP routes: /healthcheck, /version, /import (metrics
// forwarded by other instances), and /debug/pprof/ when enable_profiling
// is set.
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
	mux.Handle("/import", imp)
	if s.cfg.EnableProfiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// webServer serves the HTTP routes on http_address. It is a listener like
// the others, so the server starts and stops it with them; its
// self-metrics are the importer's.
type webServer struct {
	addr    string
	handler http.Handler
	imp     *forward.Importer
	guard   func()
	log     *logrus.Logger
	ln      net.Listener
	srv     *http.Server
}

var _ listen.Listener = (*webServer)(nil)

func newWebServer(addr string, h http.Handler, imp *forward.Importer, guard func(), log *logrus.Logger) *webServer {
	return &webServer{addr: addr, handler: h, imp: imp, guard: guard, log: log}
}

// Start binds http_address (host:port, a unix socket path, fd@N or
// einhorn@N) and serves it.
func (w *webServer) Start() error {
	ln, err := listen.Stream(w.addr)
	if err != nil {
		return fmt.Errorf("http_address %w", err)
	}
	w.ln = ln
	w.srv = &http.Server{Handler: w.handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer w.guard()
		if err := w.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.log.WithError(err).Error("HTTP server stopped")
		}
	}()
	return nil
}

// Stop stops accepting and waits for the requests in progress, or ctx.
func (w *webServer) Stop(ctx context.Context) error {
	if w.srv == nil {
		return nil
	}
	return w.srv.Shutdown(ctx)
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
