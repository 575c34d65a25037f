package veneur

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"

	"github.com/zenazn/goji/bind"
)

// Handler returns the HTTP routes: /healthcheck, /version, /import (metrics
// forwarded by other instances), and /debug/pprof/ when enable_profiling
// is set.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthcheck", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(VERSION + "\n"))
	})
	mux.HandleFunc("/import", s.handleImport)
	if s.cfg.EnableProfiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// listenHTTP binds http_address: host:port, a unix socket path, fd@N (an
// inherited descriptor, as systemd passes them) or einhorn@N (a socket
// shared by einhorn across restarts).
func listenHTTP(addr string) (net.Listener, error) {
	switch {
	case strings.HasPrefix(addr, "einhorn@"):
		// Validation has checked the number; bind exits the process if
		// einhorn did not pass that socket, as einhorn expects.
		ln := bind.Socket(addr)
		bind.Ready()
		return ln, nil
	case strings.HasPrefix(addr, "fd@"):
		fd, err := strconv.Atoi(addr[3:])
		if err != nil || fd < 0 {
			return nil, fmt.Errorf("bad descriptor number; use fd@N such as fd@3")
		}
		f := os.NewFile(uintptr(fd), addr)
		defer f.Close()
		return net.FileListener(f)
	case strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "."):
		return net.Listen("unix", addr)
	}
	return net.Listen("tcp", addr)
}
