package veneur

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/listen"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/proxy"
)

// ReadProxyConfig reads the config file of veneur-proxy: the same keys as
// veneur's, of which the proxy uses http_address, grpc_address, the
// http_tls_* keys, forward_address(es), the forward_tls_* keys, etcd_*,
// interval, the import_* limits, the delivery keys (flush_*,
// shutdown_timeout), stats_address, sentry_dsn, hostname and debug.
// Setting a key the proxy does not use is an error that names it.
func ReadProxyConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w; check the path given to -f", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return Config{}, fmt.Errorf("reading config %s: %w", path, err)
	}
	c, err := ParseProxyConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ParseProxyConfig is ParseConfig for veneur-proxy.
func ParseProxyConfig(data []byte) (Config, error) {
	if len(data) > maxConfigBytes {
		return Config{}, fmt.Errorf("config is larger than %d bytes; a veneur config is a few kilobytes, check that the right file is given", maxConfigBytes)
	}
	c, err := decodeConfig(data)
	if err != nil {
		return Config{}, err
	}
	if err := c.ApplyDefaults(); err != nil {
		return Config{}, err
	}
	if err := c.validate(true); err != nil {
		return Config{}, err
	}
	return c, nil
}

// validateProxy checks what veneur-proxy needs: somewhere to take imports,
// somewhere to send them, and no key of what it does not do.
func (c Config) validateProxy(add func(error)) {
	if c.HTTPAddress == "" && c.GRPCAddress == "" {
		add(errors.New("veneur-proxy takes imports on http_address and grpc_address, and both are empty; set http_address, e.g. 0.0.0.0:8127"))
	}
	if c.ForwardAddress == "" && len(c.ForwardAddresses) == 0 && len(c.EtcdEndpoints) == 0 {
		add(errors.New("veneur-proxy has no global to send to; set forward_addresses (a list of globals) or etcd_endpoints (globals registered in etcd)"))
	}
	for _, k := range []struct{ key, value string }{
		{"udp_address", c.UdpAddress},
		{"tcp_address", c.TcpAddress},
		{"trace_address", c.TraceAddress},
		{"api_hostname", c.APIHostname},
		{"trace_api_address", c.TraceAPIAddress},
		{"influx_address", c.InfluxAddress},
		{"aws_s3_bucket", c.AwsS3Bucket},
		{"tls_certificate", c.TLSCertificate},
		{"etcd_advertise_address", c.EtcdAdvertiseAddress},
	} {
		if k.value != "" {
			add(fmt.Errorf("%s is set, but veneur-proxy only routes imports to the globals and does not use it; remove it", k.key))
		}
	}
}

// NewProxy builds veneur-proxy from its config (see ReadProxyConfig): an
// importer whose merger is the sharded forwarder, the HTTP and gRPC
// servers that feed it, and the membership it routes by. It binds
// nothing and starts no goroutine.
func NewProxy(cfg Config, opts Options) (*proxy.Proxy, error) {
	if err := cfg.validate(true); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = logrus.New()
	}
	interval, err := cfg.ParseInterval()
	if err != nil {
		return nil, err
	}
	stats := opts.Stats
	if stats == nil {
		stats = &statsd.NoOpClient{}
		if cfg.StatsAddress != "" {
			c, err := newStatsClient(cfg.StatsAddress, "veneur_proxy.", log)
			if err != nil {
				return nil, fmt.Errorf("stats_address %q: %w", cfg.StatsAddress, err)
			}
			stats = c
		}
	}
	hub, err := newSentryHub(cfg.SentryDsn, cfg.Hostname)
	if err != nil {
		return nil, err
	}
	if hub != nil {
		log.AddHook(sentryHook{hub: hub})
	}
	// As Server.guard: deferred at the top of every goroutine.
	guard := func() {
		if hub == nil {
			return
		}
		if p := recover(); p != nil {
			hub.Recover(p)
			hub.Flush(sentryFlushTimeout)
			panic(p)
		}
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: interval}
	}
	env := plugins.Env{
		Common: plugins.Common{Hostname: cfg.Hostname, Tags: cfg.Tags, Interval: interval},
		Log:    log, Stats: stats,
	}
	t, err := newTier(cfg, env)
	if err != nil {
		return nil, err
	}
	if t == nil {
		// One global: a ring of one.
		t = &tier{members: &swappableMembership{}}
		t.members.set(forward.NewStaticMembership([]string{cfg.ForwardAddress}))
	}
	member, err := forwardMember(cfg, opts, env, true)
	if err != nil {
		return nil, err
	}
	if t.sharded, err = forward.NewSharded(forward.ShardedConfig{Membership: t.members, NewMember: member, Interval: interval}, env); err != nil {
		return nil, err
	}
	age, _ := cfg.SpoolMaxAge()
	imp := forward.NewImporter(t.sharded, forward.ImporterConfig{
		Remember:          age + 2*interval,
		MaxBodyBytes:      cfg.ImportMaxBodyBytes,
		MaxConcurrency:    cfg.ImportMaxConcurrency,
		RequireClientCert: cfg.HTTPTLSAuthorityCertificate != "",
	})
	bind := &listen.Binder{Inherited: opts.Inherited, Takeover: opts.Takeover}
	var grpcL, httpL listen.Listener
	if cfg.GRPCAddress != "" {
		tlsConf, err := cfg.GRPCTLSConfig()
		if err != nil {
			return nil, err
		}
		srv, err := forward.NewGRPCServer(imp, forward.GRPCServerConfig{
			Address: cfg.GRPCAddress, Bind: bind, TLS: tlsConf, MaxStreamBytes: cfg.ImportMaxBodyBytes, Log: log, Guard: guard,
		})
		if err != nil {
			return nil, err
		}
		grpcL = srv
	}
	if cfg.HTTPAddress != "" {
		tlsConf, err := cfg.HTTPTLSConfig()
		if err != nil {
			return nil, err
		}
		check := func(h http.Handler) http.Handler { return h }
		if cfg.HTTPTLSAuthorityCertificate != "" {
			check = requireClientCert
		}
		h := proxy.Handler(imp, t, t.members, interval, VERSION, check)
		httpL = newWebServer(cfg.HTTPAddress, bind, tlsConf, h, imp, guard, log)
	}
	return proxy.New(proxy.Config{
		GRPC: grpcL, HTTP: httpL, Router: t.sharded, Membership: t.members, Tier: proxyTier{t, log, stats, guard},
		Interval: interval, Log: log, Stats: stats, Guard: guard,
	})
}

// proxyTier starts and stops the tier's etcd watch for the proxy.
type proxyTier struct {
	t     *tier
	log   *logrus.Logger
	stats statsd.ClientInterface
	guard func()
}

func (p proxyTier) Start()                         { p.t.start(p.log, p.stats, p.guard) }
func (p proxyTier) Stop(ctx context.Context) error { return p.t.stop(ctx) }
