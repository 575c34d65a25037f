// Package proxy is veneur-proxy: a stateless router in front of a tier of
// global instances, for fleets whose locals forward to one address (such
// as current veneur locals, or 1.1.0's). It takes imports on /import and
// on the gRPC forwardrpc.Forward service, as a global does, and instead of
// merging them sends each series to the global that owns it in the ring
// of its interval (forward.Sharded), with the same membership keys
// (forward_addresses, etcd_*) and the same delivery (retries, spool) as a
// local that shards itself.
//
// The parts are built by the caller (veneur.NewProxy, from a config file);
// this package runs them: Start, a self-metrics report every interval,
// and Shutdown in order.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/listen"
	"github.com/veneur/veneur/plugins"
)

// Tier is the proxy's link to the tier's membership: Start begins
// watching it (etcd), Stop ends that.
type Tier interface {
	Start()
	Stop(ctx context.Context) error
}

// Config are the parts of a Proxy.
type Config struct {
	// GRPC and HTTP take imports: the gRPC server and the HTTP server
	// (with Handler's routes). Either may be nil, not both.
	GRPC, HTTP listen.Listener
	// Router re-shards what the listeners import.
	Router *forward.Sharded
	// Membership is what the router routes by, for the healthcheck.
	Membership forward.Membership
	// Tier starts and stops the membership's watch; nil for a static one.
	Tier Tier
	// Interval is how often the self-metrics are reported.
	Interval time.Duration
	Log      *logrus.Logger
	// Stats takes the self-metrics. If it has a Report method too (the
	// client that counts what it loses), each report calls it.
	Stats statsd.ClientInterface
	// Guard is deferred in every goroutine the proxy starts (the crash
	// report).
	Guard func()
}

// Proxy runs veneur-proxy's parts.
type Proxy struct {
	cfg       Config
	listeners []listen.Listener
	cancel    context.CancelFunc
	loop      sync.WaitGroup
}

// New returns a Proxy of the parts in cfg; it starts nothing.
func New(cfg Config) (*Proxy, error) {
	if cfg.Router == nil || cfg.Membership == nil || cfg.Interval <= 0 {
		return nil, errors.New("proxy: New needs a Router, a Membership and the interval")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.New()
	}
	if cfg.Stats == nil {
		cfg.Stats = &statsd.NoOpClient{}
	}
	if cfg.Guard == nil {
		cfg.Guard = func() {}
	}
	p := &Proxy{cfg: cfg}
	for _, l := range []listen.Listener{cfg.GRPC, cfg.HTTP} {
		if l != nil {
			p.listeners = append(p.listeners, l)
		}
	}
	if len(p.listeners) == 0 {
		return nil, errors.New("proxy: New needs a gRPC or an HTTP listener")
	}
	return p, nil
}

// Start starts the membership watch, the listeners and the self-metrics
// report. An error leaves nothing running.
func (p *Proxy) Start() error {
	if p.cfg.Tier != nil {
		p.cfg.Tier.Start()
	}
	for i, l := range p.listeners {
		if err := l.Start(); err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			for _, started := range p.listeners[:i] {
				started.Stop(ctx)
			}
			if p.cfg.Tier != nil {
				p.cfg.Tier.Stop(ctx)
			}
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.loop.Add(1)
	go func() {
		defer p.loop.Done()
		defer p.cfg.Guard()
		t := time.NewTicker(p.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				p.report()
			}
		}
	}()
	return nil
}

func (p *Proxy) report() {
	for _, l := range p.listeners {
		l.Report(p.cfg.Stats)
	}
	p.cfg.Router.Report(p.cfg.Stats)
	if r, ok := p.cfg.Stats.(plugins.Reporter); ok {
		// The self-metrics client's own losses.
		r.Report(p.cfg.Stats)
	}
}

// Shutdown stops taking imports (the listeners finish the requests in
// progress, briefly), delivers what the router still holds for each
// global until ctx ends, and stops watching the membership.
func (p *Proxy) Shutdown(ctx context.Context) error {
	if p.cancel != nil {
		p.cancel()
		p.loop.Wait()
	}
	var errs []error
	for _, l := range p.listeners {
		if err := l.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.cfg.Router.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("delivering what was imported: %w", err))
	}
	p.report()
	if p.cfg.Tier != nil {
		if err := p.cfg.Tier.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// HTTPAddr is the bound address of the HTTP server, or nil.
func (p *Proxy) HTTPAddr() net.Addr { return addr(p.cfg.HTTP) }

// GRPCAddr is the bound address of the gRPC server, or nil.
func (p *Proxy) GRPCAddr() net.Addr { return addr(p.cfg.GRPC) }

func addr(l listen.Listener) net.Addr {
	if l == nil {
		return nil
	}
	return l.Addr()
}

// Healthy reports whether the proxy has a global to send to in the
// interval in progress.
func Healthy(m forward.Membership, interval time.Duration, now time.Time) bool {
	ring, _ := m.RingFor(forward.Boundary(now, interval).Add(-interval))
	return ring != nil && ring.Len() > 0
}

// Handler returns veneur-proxy's HTTP routes: /import, /healthcheck
// (503 while the proxy has no global to send to), /version and
// /debug/ring. guard wraps the routes that need a client certificate.
func Handler(imp http.Handler, ring http.Handler, m forward.Membership, interval time.Duration, version string, guard func(http.Handler) http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthcheck", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !Healthy(m, interval, time.Now()) {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("no global instance to send to\n"))
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(version + "\n"))
	})
	mux.Handle("/import", imp)
	mux.Handle("GET /debug/ring", guard(ring))
	return mux
}

var _ plugins.Reporter = (*forward.Sharded)(nil)
