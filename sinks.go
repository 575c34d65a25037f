package veneur

import (
	"context"
	"net/http"
	"net/url"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/plugins/datadog"
	"github.com/veneur/veneur/plugins/influxdb"
	"github.com/veneur/veneur/plugins/s3"
	"github.com/veneur/veneur/plugins/stdout"
)

// sinkBuilder builds one sink from the config, or returns nil when the
// config does not ask for it. The sink validates its own keys.
type sinkBuilder func(cfg Config, opts Options, env plugins.Env) (plugins.Sink, error)

// delivery is how every HTTP sink retries and spools: flush_spool_bytes,
// flush_spool_max_age and flush_max_concurrency.
func delivery(cfg Config) plugins.DeliveryConfig {
	age, _ := cfg.SpoolMaxAge() // Validate has checked it
	return plugins.DeliveryConfig{MaxBytes: cfg.FlushSpoolBytes, MaxAge: age, Concurrency: cfg.FlushMaxConcurrency}
}

// sinkBuilders are the sinks veneur publishes to. Adding a sink is a
// package under plugins/ and one line here.
var sinkBuilders = []sinkBuilder{
	datadogSink,
	stdoutSink,
	traceSink,
	influxSink,
	s3Sink,
	forwardSink,
}

func buildSinks(cfg Config, opts Options, env plugins.Env) ([]plugins.Sink, error) {
	var sinks []plugins.Sink
	for _, build := range sinkBuilders {
		s, err := build(cfg, opts, env)
		if err != nil {
			return nil, err
		}
		if s != nil {
			sinks = append(sinks, s)
		}
	}
	return sinks, nil
}

// datadogSink publishes series, events and service checks to api_hostname.
func datadogSink(cfg Config, opts Options, env plugins.Env) (plugins.Sink, error) {
	if cfg.APIHostname == "" {
		return nil, nil
	}
	return datadog.New(datadog.Config{
		APIHostname: cfg.APIHostname, APIKey: cfg.Key, MaxPerBody: cfg.FlushMaxPerBody, Client: opts.HTTPClient,
		Delivery: delivery(cfg),
	}, env)
}

// stdoutSink prints every flush when there is no api_hostname, so that a
// development instance shows what it would send.
func stdoutSink(cfg Config, opts Options, env plugins.Env) (plugins.Sink, error) {
	if cfg.APIHostname != "" {
		return nil, nil
	}
	return stdout.New(opts.Stdout, env), nil
}

// traceSink sends SSF spans to the trace agent at trace_api_address.
func traceSink(cfg Config, opts Options, env plugins.Env) (plugins.Sink, error) {
	if cfg.TraceAPIAddress == "" {
		return nil, nil
	}
	return datadog.NewTraces(datadog.TraceConfig{Address: cfg.TraceAPIAddress, Client: opts.HTTPClient, Delivery: delivery(cfg)}, env)
}

func influxSink(cfg Config, opts Options, env plugins.Env) (plugins.Sink, error) {
	if cfg.InfluxAddress == "" {
		return nil, nil
	}
	return influxdb.New(influxdb.Config{
		Address: cfg.InfluxAddress, Database: cfg.InfluxDBName, Consistency: cfg.InfluxConsistency, Client: opts.HTTPClient,
		Delivery: delivery(cfg),
	}, env)
}

func s3Sink(cfg Config, opts Options, env plugins.Env) (plugins.Sink, error) {
	if cfg.AwsS3Bucket == "" {
		return nil, nil
	}
	return s3.New(context.Background(), s3.Config{
		Bucket: cfg.AwsS3Bucket, Region: cfg.AwsRegion,
		AccessKeyID: cfg.AwsAccessKeyID, SecretAccessKey: cfg.AwsSecretAccessKey, Timeout: env.Interval,
	}, env)
}

// forwardSink forwards the global parts of every flush to forward_address
// (one global). A tier of several globals (forward_addresses, etcd) is the
// sharded forwarder the tier builds, with a forwardMember per global.
func forwardSink(cfg Config, opts Options, env plugins.Env) (plugins.Sink, error) {
	if cfg.ForwardAddress == "" {
		return nil, nil
	}
	member, err := forwardMember(cfg, opts, env, false)
	if err != nil {
		return nil, err
	}
	return member(cfg.ForwardAddress)
}

// forwardMember returns what builds the sink that forwards to one global
// at a forward URL: gRPC for grpc(s)://, /import for http(s)://, with the
// forward_tls_* settings.
//
// With tier set (a member of several), each global's delivery
// self-metrics are tagged destination:forward-<host:port>, so that the
// gauges of one (its spool) are not taken for another's.
func forwardMember(cfg Config, opts Options, env plugins.Env, tier bool) (func(address string) (plugins.Sink, error), error) {
	client := opts.HTTPClient
	tlsConf, err := cfg.ForwardTLSConfig()
	if err != nil {
		return nil, err
	}
	if tlsConf != nil {
		// forward_tls_*: a client certificate for the global, and the
		// authority to verify it with.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = tlsConf
		client = &http.Client{Timeout: env.Interval, Transport: t}
	}
	return func(address string) (plugins.Sink, error) {
		var dest string
		if tier {
			dest = "forward-" + address
			if u, err := url.Parse(address); err == nil && u.Host != "" {
				dest = "forward-" + u.Host
			}
		}
		if forward.IsGRPCAddress(address) {
			return forward.NewGRPCClient(forward.GRPCClientConfig{Address: address, TLS: tlsConf, Delivery: delivery(cfg), Destination: dest}, env)
		}
		return forward.NewClient(forward.ClientConfig{Address: address, Client: client, Delivery: delivery(cfg), Destination: dest}, env)
	}, nil
}
