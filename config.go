package veneur

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/getsentry/sentry-go"

	"github.com/veneur/veneur/listen"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/plugins/datadog"
)

// Config is veneur's configuration, read from a YAML file. The YAML keys are
// those of veneur 1.1.0, so an existing configuration file loads unchanged.
// docs/configuration.md documents every key, its default and its
// validation rule.
//
// For the keys of optional features an empty string means "off".
type Config struct {
	// AllowShortInterval lets interval be shorter than 1s, for tests and
	// benchmarks: Datadog's points and rate intervals are whole seconds, so
	// flushes less than a second apart publish the same (series, second)
	// more than once and rates with a wrong interval.
	AllowShortInterval bool `yaml:"allow_short_interval"`
	// Aggregates lists the local aggregates flushed for every histogram and
	// timer: any of min, max, median, avg, count, sum. Default: min, max,
	// count. An explicit empty list flushes none.
	Aggregates []string `yaml:"aggregates"`
	// APIHostname is the base URL of the Datadog API, such as
	// https://app.datadoghq.com. Empty means flushes are printed to standard
	// output instead of being posted.
	APIHostname string `yaml:"api_hostname"`
	// AwsAccessKeyID is the access key of the S3 plugin; with
	// AwsSecretAccessKey empty too, the AWS SDK's default chain is used.
	AwsAccessKeyID string `yaml:"aws_access_key_id"`
	// AwsRegion is the region of the S3 plugin's bucket.
	AwsRegion string `yaml:"aws_region"`
	// AwsS3Bucket is the bucket the S3 plugin writes every flush to, as
	// TSV. Empty means no S3 plugin.
	AwsS3Bucket string `yaml:"aws_s3_bucket"`
	// AwsSecretAccessKey is the secret key of the S3 plugin.
	AwsSecretAccessKey string `yaml:"aws_secret_access_key"`
	// Debug turns on debug logging.
	Debug bool `yaml:"debug"`
	// EnableProfiling serves /debug/pprof on http_address.
	EnableProfiling bool `yaml:"enable_profiling"`
	// EtcdAdvertiseAddress makes this instance a member of the global tier
	// in etcd: the forward URL locals reach it at (http(s):// for
	// http_address, grpc(s):// for grpc_address), registered under
	// EtcdPrefix with a lease while it runs. Empty means it does not
	// register.
	EtcdAdvertiseAddress string `yaml:"etcd_advertise_address"`
	// EtcdEndpoints are the client URLs of the etcd cluster that holds the
	// members of the global tier, such as http://127.0.0.1:2379. An
	// instance that forwards, with these set and no forward_address(es),
	// shards over the members it sees there.
	EtcdEndpoints []string `yaml:"etcd_endpoints"`
	// EtcdLeaseTTL is the lease of a member's registration, as a Go
	// duration: a member that stops renewing it leaves the tier that long
	// after. Default "10s".
	EtcdLeaseTTL string `yaml:"etcd_lease_ttl"`
	// EtcdPrefix is the etcd key prefix of the tier's members. Default
	// "/veneur/globals/".
	EtcdPrefix string `yaml:"etcd_prefix"`
	// FlushMaxConcurrency is how many bodies of one flush a destination
	// gets at once. Default 4.
	FlushMaxConcurrency int `yaml:"flush_max_concurrency"`
	// FlushMaxPerBody is the largest number of metrics in one body posted to
	// Datadog. Default 5000.
	FlushMaxPerBody int `yaml:"flush_max_per_body"`
	// FlushSpoolBytes bounds, per destination, the compressed bodies that
	// wait for delivery (retries, a slow destination); past it the oldest
	// are dropped. Default 67108864 (64 MiB).
	FlushSpoolBytes int64 `yaml:"flush_spool_bytes"`
	// FlushSpoolMaxAge is how long a body may wait for delivery before it
	// is dropped, as a Go duration. Default: 10 intervals.
	FlushSpoolMaxAge string `yaml:"flush_spool_max_age"`
	// ForwardAddress is the URL of an upstream (global) veneur to forward
	// histogram digests, sets and global counters to. Empty means this
	// instance is the root.
	ForwardAddress string `yaml:"forward_address"`
	// ForwardAddresses is a static list of global instances (the same
	// URL forms as forward_address) that forwarded series are sharded
	// over: each series goes to exactly one of them.
	ForwardAddresses []string `yaml:"forward_addresses"`
	// ForwardTLSAuthorityCertificate is the PEM certificate of the
	// authority that signed the global's certificate, for an https://
	// forward_address. Empty trusts the system's authorities.
	ForwardTLSAuthorityCertificate string `yaml:"forward_tls_authority_certificate"`
	// ForwardTLSCertificate and ForwardTLSKey are the PEM client
	// certificate and key presented to an https:// forward_address.
	ForwardTLSCertificate string `yaml:"forward_tls_certificate"`
	ForwardTLSKey         string `yaml:"forward_tls_key"`
	// GRPCAddress is the host:port where the gRPC forward service
	// (forwardrpc.Forward, as current veneur speaks it) listens, with the
	// TLS of the http_tls_* keys. Empty means none.
	GRPCAddress string `yaml:"grpc_address"`
	// Hostname is attached to every metric veneur flushes. Default:
	// os.Hostname(), unless OmitEmptyHostname is true.
	Hostname string `yaml:"hostname"`
	// HTTPAddress is where the HTTP server (healthcheck, /import) listens:
	// host:port, a unix socket path starting with "/" or ".", or an
	// inherited socket: fd@N, einhorn@N or systemd:NAME. Empty means no
	// HTTP server.
	HTTPAddress string `yaml:"http_address"`
	// HTTPTLSAuthorityCertificate is the PEM certificate of the authority
	// that must have signed the client certificates of /import requests.
	// /healthcheck and /version stay open to clients without one.
	HTTPTLSAuthorityCertificate string `yaml:"http_tls_authority_certificate"`
	// HTTPTLSCertificate and HTTPTLSKey, both set, serve http_address over
	// TLS only.
	HTTPTLSCertificate string `yaml:"http_tls_certificate"`
	HTTPTLSKey         string `yaml:"http_tls_key"`
	// ImportMaxBodyBytes bounds the decompressed body of one /import
	// request. Default 268435456 (256 MiB).
	ImportMaxBodyBytes int64 `yaml:"import_max_body_bytes"`
	// ImportMaxConcurrency bounds the /import requests (and gRPC import
	// calls) served at once; past it a request waits for a place, a
	// second at most and with 16 times as many waiting at most, then gets
	// 503 with Retry-After. Default: twice the number of CPUs.
	ImportMaxConcurrency int `yaml:"import_max_concurrency"`
	// InfluxAddress is the URL of an InfluxDB 1.x server that every flush
	// is also written to. Empty means no InfluxDB.
	InfluxAddress string `yaml:"influx_address"`
	// InfluxConsistency is the InfluxDB write consistency: any, one, quorum
	// or all; empty leaves the server's default.
	InfluxConsistency string `yaml:"influx_consistency"`
	// InfluxDBName is the InfluxDB database to write to; it must exist.
	InfluxDBName string `yaml:"influx_db_name"`
	// Interval is how often veneur flushes, as a Go duration. Default "10s".
	Interval string `yaml:"interval"`
	// Key is the Datadog API key.
	Key string `yaml:"key"`
	// MaxDatagramBytes is the largest DogStatsD datagram (UDP or unix)
	// received whole; a longer one is cut there, and the line at the cut
	// is counted as truncated. Default 65536, which every UDP datagram
	// fits.
	MaxDatagramBytes int `yaml:"max_datagram_bytes"`
	// MaxSeriesPerInterval caps the series one interval holds; past it new
	// series are dropped (their existing ones keep counting) and counted
	// per metric name. 0, the default, means no cap.
	MaxSeriesPerInterval int `yaml:"max_series_per_interval"`
	// MetricMaxLength is the longest DogStatsD line, in bytes, that is
	// processed; longer ones are skipped and counted (too_long). Default
	// 4096.
	MetricMaxLength int `yaml:"metric_max_length"`
	// NumReaders is the number of goroutines reading udp_address, sharing
	// the port with SO_REUSEPORT on Linux (or sharing the one socket of an
	// inherited address). Default 1.
	NumReaders int `yaml:"num_readers"`
	// NumWorkers is the number of aggregation workers. Default: the number
	// of CPUs.
	NumWorkers int `yaml:"num_workers"`
	// OmitEmptyHostname, when true and Hostname is empty, sends metrics
	// without a host instead of defaulting Hostname to os.Hostname().
	OmitEmptyHostname bool `yaml:"omit_empty_hostname"`
	// Percentiles lists the percentiles flushed for every histogram and
	// timer, each strictly between 0 and 1. Default: 0.5, 0.75, 0.99. An
	// explicit empty list flushes none.
	Percentiles []float64 `yaml:"percentiles"`
	// ReadBufferSizeBytes is the receive buffer requested for each UDP
	// socket and for the unix datagram socket. Default 2097152 (2 MiB).
	ReadBufferSizeBytes int `yaml:"read_buffer_size_bytes"`
	// SentryDsn is the Sentry DSN errors and crashes are reported to.
	SentryDsn string `yaml:"sentry_dsn"`
	// ShutdownTimeout bounds how long SIGTERM waits to deliver what is
	// still spooled after the last flush, as a Go duration. Default "10s".
	ShutdownTimeout string `yaml:"shutdown_timeout"`
	// StatsAddress is the DogStatsD host:port veneur sends its own metrics
	// to. Empty means no self-metrics.
	StatsAddress string `yaml:"stats_address"`
	// Tags are added to every metric veneur flushes.
	Tags []string `yaml:"tags"`
	// TcpAddress is the host:port (or inherited socket: fd@N, einhorn@N,
	// systemd:NAME) of the TCP (or TLS) DogStatsD listener, which reads
	// newline-terminated lines. Empty means no TCP listener.
	TcpAddress string `yaml:"tcp_address"`
	// TCPIdleTimeout closes a TCP or unix stream connection that sent
	// nothing for that long, as a Go duration. Default "5m".
	TCPIdleTimeout string `yaml:"tcp_idle_timeout"`
	// TCPMaxConnections bounds the open TCP connections, and apart from
	// them those of the unix stream socket; past it new ones are closed at
	// once and counted. Default 10000.
	TCPMaxConnections int `yaml:"tcp_max_connections"`
	// TLSAuthorityCertificate is the PEM certificate of the authority that
	// must have signed clients' certificates. Empty accepts any client.
	TLSAuthorityCertificate string `yaml:"tls_authority_certificate"`
	// TLSCertificate is the PEM certificate of the TLS listener; with
	// TLSKey set, tcp_address accepts TLS connections only.
	TLSCertificate string `yaml:"tls_certificate"`
	// TLSKey is the PEM private key of the TLS listener.
	TLSKey string `yaml:"tls_key"`
	// TraceAddress is the host:port of the SSF span listener (UDP, one
	// protobuf span per datagram). Empty means none.
	TraceAddress string `yaml:"trace_address"`
	// TraceAPIAddress is the URL of the Datadog trace agent that trace spans
	// are sent to (PUT /v0.3/traces). Empty keeps only the spans' metrics.
	TraceAPIAddress string `yaml:"trace_api_address"`
	// TraceMaxLengthBytes is the largest SSF datagram accepted. Default
	// 16384.
	TraceMaxLengthBytes int `yaml:"trace_max_length_bytes"`
	// UdpAddress is the host:port (or inherited socket: fd@N, einhorn@N,
	// systemd:NAME) of the UDP DogStatsD listener.
	UdpAddress string `yaml:"udp_address"`
	// UnixDatagramAddress is the path (or inherited socket) of the unix
	// datagram DogStatsD listener: one datagram is one packet, as over
	// UDP. Empty means none.
	UnixDatagramAddress string `yaml:"unix_datagram_address"`
	// UnixSocketMode is the permission of the socket files veneur
	// creates (unix_*_address, a unix http_address), in octal. Default
	// "0660": the owner and the group may send.
	UnixSocketMode string `yaml:"unix_socket_mode"`
	// UnixStreamAddress is the path (or inherited socket) of the unix
	// stream DogStatsD listener: length-prefixed payloads as the Datadog
	// agent's stream socket reads them, or newline-terminated lines.
	// Empty means none.
	UnixStreamAddress string `yaml:"unix_stream_address"`
}

// Defaults filled in by ApplyDefaults for keys left unset.
const (
	DefaultInterval            = "10s"
	DefaultNumReaders          = 1
	DefaultMetricMaxLength     = 4096
	DefaultMaxDatagramBytes    = listen.DefaultMaxDatagram
	DefaultUnixSocketMode      = "0660"
	DefaultFlushMaxPerBody     = datadog.DefaultMaxPerBody
	DefaultReadBufferSizeBytes = 2 << 20
	DefaultTraceMaxLengthBytes = 16384
	DefaultFlushMaxConcurrency = plugins.DefaultMaxConcurrency
	DefaultFlushSpoolBytes     = plugins.DefaultSpoolBytes
	DefaultShutdownTimeout     = "10s"
	DefaultImportMaxBodyBytes  = 256 << 20
	DefaultTCPIdleTimeout      = "5m"
	DefaultTCPMaxConnections   = 10_000
	DefaultEtcdPrefix          = "/veneur/globals/"
	DefaultEtcdLeaseTTL        = "10s"
	// MinInterval is the shortest interval accepted without
	// allow_short_interval.
	MinInterval = time.Second
	// DefaultSpoolIntervals is flush_spool_max_age, in intervals, when it
	// is unset.
	DefaultSpoolIntervals = plugins.DefaultSpoolAgeIntervals
)

// maxConfigBytes bounds the size of a config file. Real ones, PEM blocks
// included, are a few kilobytes.
const maxConfigBytes = 1 << 20

// DefaultPercentiles returns the percentiles used when the key is unset.
func DefaultPercentiles() []float64 { return []float64{0.5, 0.75, 0.99} }

// DefaultAggregates returns the aggregates used when the key is unset.
func DefaultAggregates() []string { return []string{"min", "max", "count"} }

// ValidAggregates returns every aggregate name the aggregates key accepts.
func ValidAggregates() []string {
	return []string{"min", "max", "median", "avg", "count", "sum"}
}

// ReadConfig reads the YAML file at path and returns it parsed, with
// defaults applied and validated, as ParseConfig does.
func ReadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w; check the path given to -f", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return Config{}, fmt.Errorf("reading config %s: %w", path, err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes YAML strictly (an unknown key or a value of the wrong
// type is an error naming the key), applies defaults and validates the
// result. Every problem found is reported in the one returned error.
func ParseConfig(data []byte) (Config, error) {
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
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ApplyDefaults fills every unset (zero) field with its default. Hostname
// comes from os.Hostname unless OmitEmptyHostname is true. A nil Percentiles
// or Aggregates gets the default list; an empty, non-nil one is kept.
// Negative numbers are kept, for Validate to report.
func (c *Config) ApplyDefaults() error {
	if c.Interval == "" {
		c.Interval = DefaultInterval
	}
	if c.NumWorkers == 0 {
		c.NumWorkers = runtime.NumCPU()
	}
	if c.NumReaders == 0 {
		c.NumReaders = DefaultNumReaders
	}
	if c.MetricMaxLength == 0 {
		c.MetricMaxLength = DefaultMetricMaxLength
	}
	if c.MaxDatagramBytes == 0 {
		c.MaxDatagramBytes = DefaultMaxDatagramBytes
	}
	if c.UnixSocketMode == "" {
		c.UnixSocketMode = DefaultUnixSocketMode
	}
	if c.FlushMaxPerBody == 0 {
		c.FlushMaxPerBody = DefaultFlushMaxPerBody
	}
	if c.ReadBufferSizeBytes == 0 {
		c.ReadBufferSizeBytes = DefaultReadBufferSizeBytes
	}
	if c.FlushMaxConcurrency == 0 {
		c.FlushMaxConcurrency = DefaultFlushMaxConcurrency
	}
	if c.FlushSpoolBytes == 0 {
		c.FlushSpoolBytes = DefaultFlushSpoolBytes
	}
	if c.ShutdownTimeout == "" {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.ImportMaxBodyBytes == 0 {
		c.ImportMaxBodyBytes = DefaultImportMaxBodyBytes
	}
	if c.ImportMaxConcurrency == 0 {
		c.ImportMaxConcurrency = 2 * runtime.NumCPU()
	}
	if c.TCPIdleTimeout == "" {
		c.TCPIdleTimeout = DefaultTCPIdleTimeout
	}
	if c.TCPMaxConnections == 0 {
		c.TCPMaxConnections = DefaultTCPMaxConnections
	}
	if c.EtcdPrefix == "" {
		c.EtcdPrefix = DefaultEtcdPrefix
	}
	if c.EtcdLeaseTTL == "" {
		c.EtcdLeaseTTL = DefaultEtcdLeaseTTL
	}
	if c.TraceMaxLengthBytes == 0 {
		c.TraceMaxLengthBytes = DefaultTraceMaxLengthBytes
	}
	if c.Percentiles == nil {
		c.Percentiles = DefaultPercentiles()
	}
	if c.Aggregates == nil {
		c.Aggregates = DefaultAggregates()
	}
	if c.Hostname == "" && !c.OmitEmptyHostname {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("hostname: %w; set hostname in the config, or omit_empty_hostname: true to send metrics without a host", err)
		}
		c.Hostname = h
	}
	return nil
}

// ParseInterval returns the flush interval. It fails, naming the key, when
// interval is not a Go duration or is not positive.
func (c Config) ParseInterval() (time.Duration, error) {
	return parsePositiveDuration("interval", c.Interval, "10s")
}

// ParseTCPIdleTimeout returns tcp_idle_timeout as a duration.
func (c Config) ParseTCPIdleTimeout() (time.Duration, error) {
	return parsePositiveDuration("tcp_idle_timeout", c.TCPIdleTimeout, "5m")
}

// ParseShutdownTimeout returns shutdown_timeout as a duration.
func (c Config) ParseShutdownTimeout() (time.Duration, error) {
	return parsePositiveDuration("shutdown_timeout", c.ShutdownTimeout, "10s")
}

// SpoolMaxAge returns flush_spool_max_age as a duration: the configured
// one, or DefaultSpoolIntervals intervals when it is unset.
func (c Config) SpoolMaxAge() (time.Duration, error) {
	if c.FlushSpoolMaxAge == "" {
		iv, err := c.ParseInterval()
		return DefaultSpoolIntervals * iv, err
	}
	return parsePositiveDuration("flush_spool_max_age", c.FlushSpoolMaxAge, "5m")
}

func parsePositiveDuration(key, value, example string) (time.Duration, error) {
	d, err := time.ParseDuration(value)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w; use a Go duration such as %s", key, value, err, example)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%s %q: must be greater than zero; use a Go duration such as %s", key, value, example)
	}
	return d, nil
}

// Warnings returns what looks wrong in a valid config without making it
// invalid, each naming its key and what to check: a Datadog API key that
// looks like a placeholder (see datadog.KeyWarning). veneur -validate
// prints them and exits 0; veneur logs them at start-up.
func (c Config) Warnings() []string {
	var warnings []string
	if c.APIHostname != "" {
		if w := datadog.KeyWarning(c.Key); w != "" {
			warnings = append(warnings, w)
		}
	}
	return warnings
}

// IsLocal reports whether this instance forwards its global metrics
// upstream: forward_address or forward_addresses is set, or etcd_endpoints
// is, without etcd_advertise_address (which makes it a global).
func (c Config) IsLocal() bool {
	return c.ForwardAddress != "" || len(c.ForwardAddresses) > 0 ||
		(len(c.EtcdEndpoints) > 0 && c.EtcdAdvertiseAddress == "")
}

// ParseEtcdLeaseTTL returns etcd_lease_ttl as a duration.
func (c Config) ParseEtcdLeaseTTL() (time.Duration, error) {
	return parsePositiveDuration("etcd_lease_ttl", c.EtcdLeaseTTL, "10s")
}

// validateTier checks the keys of the global tier: forward_address(es)
// and etcd_*.
func (c Config) validateTier(add func(error)) {
	if c.ForwardAddress != "" && len(c.ForwardAddresses) > 0 {
		add(errors.New("forward_address and forward_addresses are both set; use forward_address for one global, or list every global in forward_addresses"))
	}
	seen := map[string]bool{}
	for i, a := range c.ForwardAddresses {
		if a == "" {
			add(fmt.Errorf("forward_addresses[%d] is empty; give the URL of a global, such as http://veneur-global-1:8127", i))
		}
		if seen[a] {
			add(fmt.Errorf("forward_addresses[%d] %q is listed twice; list each global once", i, a))
		}
		if scheme, _, _ := strings.Cut(a, "://"); a != "" && !contains([]string{"http", "https", "grpc", "grpcs"}, strings.ToLower(scheme)) {
			add(fmt.Errorf("forward_addresses[%d] %q: not an http(s):// or grpc(s):// URL; use a URL such as http://veneur-global-1:8127", i, a))
		}
		seen[a] = true
	}
	if _, err := c.ParseEtcdLeaseTTL(); err != nil {
		add(err)
	}
	if !strings.HasPrefix(c.EtcdPrefix, "/") || !strings.HasSuffix(c.EtcdPrefix, "/") {
		add(fmt.Errorf("etcd_prefix %q: must start and end with /; leave it unset for %s", c.EtcdPrefix, DefaultEtcdPrefix))
	}
	for i, e := range c.EtcdEndpoints {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			add(fmt.Errorf("etcd_endpoints[%d] %q: not an http(s) URL; use the client URL of an etcd member, such as http://127.0.0.1:2379", i, e))
		}
	}
	if c.EtcdAdvertiseAddress != "" {
		if len(c.EtcdEndpoints) == 0 {
			add(errors.New("etcd_advertise_address is set but etcd_endpoints is empty; list the etcd cluster's client URLs, such as [http://127.0.0.1:2379]"))
		}
		if c.HTTPAddress == "" && c.GRPCAddress == "" {
			add(errors.New("etcd_advertise_address is set but neither http_address nor grpc_address is: a member of the global tier must take imports; set http_address, e.g. 0.0.0.0:8127"))
		}
		if c.ForwardAddress != "" || len(c.ForwardAddresses) > 0 {
			add(errors.New("etcd_advertise_address is set with forward_address(es): a member of the global tier publishes what it imports and does not forward it; remove one of them"))
		}
		if !strings.Contains(c.EtcdAdvertiseAddress, "://") {
			add(fmt.Errorf("etcd_advertise_address %q: not a URL; give the URL locals forward to, such as http://10.0.0.5:8127 or grpc://10.0.0.5:8128", c.EtcdAdvertiseAddress))
		}
	}
}

// Validate checks every field and reports all problems at once, joined with
// errors.Join; each names its key and the fix. It expects defaults to have
// been applied: a zero num_workers, for instance, is an error here.
func (c Config) Validate() error { return c.validate(false) }

// validate is Validate for veneur (proxy false) or veneur-proxy, which
// listens for imports only.
func (c Config) validate(proxy bool) error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}

	if iv, err := c.ParseInterval(); err != nil {
		add(err)
	} else if iv < MinInterval && !c.AllowShortInterval {
		add(fmt.Errorf("interval %q: shorter than %v; Datadog keeps points and rate intervals in whole seconds, so use %v or more (10s is usual), or set allow_short_interval: true for a test or a benchmark", c.Interval, MinInterval, MinInterval))
	}
	if _, err := c.ParseShutdownTimeout(); err != nil {
		add(err)
	}
	if c.FlushSpoolMaxAge != "" {
		if _, err := c.SpoolMaxAge(); err != nil {
			add(err)
		}
	}
	add(positive("flush_max_concurrency", c.FlushMaxConcurrency, DefaultFlushMaxConcurrency))
	if _, err := c.ParseTCPIdleTimeout(); err != nil {
		add(err)
	}
	add(positive("tcp_max_connections", c.TCPMaxConnections, DefaultTCPMaxConnections))
	add(atLeastOne("import_max_concurrency", c.ImportMaxConcurrency, "leave it unset for twice the number of CPUs"))
	if c.ImportMaxBodyBytes <= 0 {
		add(fmt.Errorf("import_max_body_bytes = %d: must be greater than 0; leave it unset for the default of %d (256 MiB)", c.ImportMaxBodyBytes, DefaultImportMaxBodyBytes))
	}
	if c.MaxSeriesPerInterval < 0 {
		add(fmt.Errorf("max_series_per_interval = %d: must not be negative; 0 means no cap", c.MaxSeriesPerInterval))
	}
	add(checkPair("http_tls", c.HTTPTLSCertificate, c.HTTPTLSKey, c.HTTPTLSAuthorityCertificate, "the HTTP server"))
	if (c.HTTPTLSCertificate != "" || c.HTTPTLSAuthorityCertificate != "") && c.HTTPAddress == "" && c.GRPCAddress == "" {
		add(errors.New("http_tls_* is set but http_address and grpc_address are empty; set one, e.g. http_address: 0.0.0.0:8127, or remove them"))
	}
	if c.HTTPTLSCertificate != "" && c.HTTPTLSKey != "" {
		if _, err := c.HTTPTLSConfig(); err != nil {
			add(err)
		}
	}
	add(checkPair("forward_tls", c.ForwardTLSCertificate, c.ForwardTLSKey, "", "the forward client"))
	if _, err := c.ForwardTLSConfig(); err != nil {
		add(err)
	}
	c.validateTier(add)
	if c.FlushSpoolBytes <= 0 {
		add(fmt.Errorf("flush_spool_bytes = %d: must be greater than 0; leave it unset for the default of %d (64 MiB)", c.FlushSpoolBytes, DefaultFlushSpoolBytes))
	}

	for i, p := range c.Percentiles {
		if !(p > 0 && p < 1) {
			add(fmt.Errorf("percentiles[%d] = %v: must be strictly between 0 and 1; write p99 as 0.99", i, p))
		}
	}
	add(checkDuplicates("percentiles", c.Percentiles))

	valid := ValidAggregates()
	for i, a := range c.Aggregates {
		if !contains(valid, a) {
			add(fmt.Errorf("aggregates[%d] %q: unknown aggregate; choose from %s", i, a, strings.Join(valid, ", ")))
		}
	}
	add(checkDuplicates("aggregates", c.Aggregates))

	add(atLeastOne("num_workers", c.NumWorkers, "leave it unset for one worker per CPU"))
	add(atLeastOne("num_readers", c.NumReaders, "leave it unset for one reader"))
	add(positive("metric_max_length", c.MetricMaxLength, DefaultMetricMaxLength))
	add(positive("max_datagram_bytes", c.MaxDatagramBytes, DefaultMaxDatagramBytes))
	if c.MaxDatagramBytes > maxDatagramBytes {
		add(fmt.Errorf("max_datagram_bytes = %d: more than %d (16 MiB); each reader keeps 8 buffers of this size, and no DogStatsD client sends datagrams near it; leave it unset for the default of %d", c.MaxDatagramBytes, maxDatagramBytes, DefaultMaxDatagramBytes))
	}
	if _, err := c.ParseUnixSocketMode(); err != nil {
		add(err)
	}
	add(positive("read_buffer_size_bytes", c.ReadBufferSizeBytes, DefaultReadBufferSizeBytes))
	if c.ReadBufferSizeBytes > math.MaxInt32 {
		add(fmt.Errorf("read_buffer_size_bytes = %d: larger than the kernel accepts (%d); use at most a few hundred MiB", c.ReadBufferSizeBytes, math.MaxInt32))
	}
	add(positive("trace_max_length_bytes", c.TraceMaxLengthBytes, DefaultTraceMaxLengthBytes))

	add(checkListenAddress("udp_address", c.UdpAddress, "127.0.0.1:8126"))
	add(checkListenAddress("tcp_address", c.TcpAddress, "127.0.0.1:8129"))
	add(checkHostPort("stats_address", c.StatsAddress, "127.0.0.1:8125"))
	add(checkStreamAddress("grpc_address", c.GRPCAddress, "0.0.0.0:8128"))
	add(checkHostPort("trace_address", c.TraceAddress, "127.0.0.1:8128"))
	add(checkStreamAddress("http_address", c.HTTPAddress, "127.0.0.1:8127"))
	add(checkUnixAddress("unix_datagram_address", c.UnixDatagramAddress))
	add(checkUnixAddress("unix_stream_address", c.UnixStreamAddress))
	if c.UnixDatagramAddress != "" && c.UnixDatagramAddress == c.UnixStreamAddress {
		add(fmt.Errorf("unix_datagram_address and unix_stream_address are both %q; a path takes one socket, so give each its own", c.UnixDatagramAddress))
	}

	if proxy {
		c.validateProxy(add)
	} else if c.UdpAddress == "" && c.TcpAddress == "" && c.UnixDatagramAddress == "" && c.UnixStreamAddress == "" {
		add(errors.New("nothing to listen on: set udp_address, e.g. 127.0.0.1:8126, or tcp_address, unix_datagram_address or unix_stream_address"))
	}

	switch {
	case c.TLSKey != "" && c.TLSCertificate == "":
		add(errors.New("tls_key is set but tls_certificate is empty; set both (PEM text) or neither"))
	case c.TLSCertificate != "" && c.TLSKey == "":
		add(errors.New("tls_certificate is set but tls_key is empty; set both (PEM text) or neither"))
	}
	if c.TLSAuthorityCertificate != "" && (c.TLSKey == "" || c.TLSCertificate == "") {
		add(errors.New("tls_authority_certificate is set without tls_key and tls_certificate; client certificates are only checked over TLS, so set both or remove it"))
	}
	if c.TLSKey != "" && c.TLSCertificate != "" {
		if _, err := c.TLSConfig(); err != nil {
			add(err)
		}
	}
	if c.TcpAddress == "" {
		for _, k := range []struct{ key, value string }{
			{"tls_key", c.TLSKey},
			{"tls_certificate", c.TLSCertificate},
			{"tls_authority_certificate", c.TLSAuthorityCertificate},
		} {
			if k.value != "" {
				add(fmt.Errorf("%s is set but tcp_address is empty; TLS applies to the TCP listener, so set tcp_address, e.g. 127.0.0.1:8129", k.key))
			}
		}
	}

	if c.SentryDsn != "" {
		if _, err := sentry.NewDsn(c.SentryDsn); err != nil {
			add(fmt.Errorf("sentry_dsn: %w; use the project's DSN, like https://PUBLIC_KEY@sentry.example.com/PROJECT_ID", err))
		}
	}

	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func checkDuplicates[T comparable](key string, values []T) error {
	seen := make(map[T]bool, len(values))
	for _, v := range values {
		if seen[v] {
			return fmt.Errorf("%s: %v is listed twice; list each once", key, v)
		}
		seen[v] = true
	}
	return nil
}

func atLeastOne(key string, v int, hint string) error {
	if v < 1 {
		return fmt.Errorf("%s = %d: must be at least 1; %s", key, v, hint)
	}
	return nil
}

func positive(key string, v, def int) error {
	if v <= 0 {
		return fmt.Errorf("%s = %d: must be greater than 0; leave it unset for the default of %d", key, v, def)
	}
	return nil
}

// checkHostPort accepts an empty value ("off") or host:port with a decimal
// port from 0 to 65535. The host may be empty (all interfaces).
func checkHostPort(key, value, example string) error {
	if value == "" {
		return nil
	}
	reason := hostPortProblem(value)
	if reason == "" {
		return nil
	}
	return fmt.Errorf("%s %q: %s; use host:port such as %s", key, value, reason, example)
}

// hostPortProblem returns why value is not host:port, or "" if it is.
func hostPortProblem(value string) string {
	if strings.Contains(value, "://") {
		return "a URL, not an address"
	}
	host, port, err := net.SplitHostPort(value)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			switch ae.Err {
			case "missing port in address":
				return "missing port"
			case "too many colons in address":
				return "too many colons (write an IPv6 host in brackets, e.g. [::1]:8126)"
			}
			return strings.TrimSuffix(ae.Err, " in address")
		}
		return err.Error()
	}
	if strings.ContainsAny(host, " \t\r\n") {
		return "host contains white space"
	}
	if port == "" {
		return "missing port number"
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Sprintf("port %q is not a number from 0 to 65535", port)
	}
	return ""
}

// inheritedForms names the inherited sockets every listening key takes.
const inheritedForms = "fd@N, einhorn@N, or systemd:NAME"

// checkListenAddress accepts an empty value ("off"), host:port, or an
// inherited socket (see listen.Inherited).
func checkListenAddress(key, value, example string) error {
	if value == "" {
		return nil
	}
	if listen.IsInherited(value) {
		return checkInherited(key, value)
	}
	if reason := hostPortProblem(value); reason != "" {
		return fmt.Errorf("%s %q: %s; use host:port such as %s, or %s", key, value, reason, example, inheritedForms)
	}
	return nil
}

// checkStreamAddress accepts what http_address and grpc_address take, in
// the order goji/bind tried them: an inherited socket, then anything with
// a colon is a TCP host:port, then a value starting with "/" or "." is a
// unix socket path. Empty means off.
func checkStreamAddress(key, value, example string) error {
	forms := "use host:port such as " + example + ", a unix socket path starting with / or ., " + inheritedForms
	switch {
	case value == "":
		return nil
	case listen.IsInherited(value):
		return checkInherited(key, value)
	case strings.Contains(value, ":"):
		if reason := hostPortProblem(value); reason != "" {
			return fmt.Errorf("%s %q: %s; %s", key, value, reason, forms)
		}
		return nil
	case strings.HasPrefix(value, "/"), strings.HasPrefix(value, "."):
		return checkSocketPath(key, value)
	}
	return fmt.Errorf("%s %q: not an address; %s", key, value, forms)
}

// checkInherited checks the inherited-socket form of key's value.
func checkInherited(key, value string) error {
	if err := listen.CheckInherited(value); err != nil {
		return fmt.Errorf("%s %q: %w", key, value, err)
	}
	return nil
}

// checkUnixAddress accepts an empty value ("off"), a unix socket path
// starting with / or ., or an inherited socket.
func checkUnixAddress(key, value string) error {
	switch {
	case value == "":
		return nil
	case listen.IsInherited(value):
		return checkInherited(key, value)
	case strings.HasPrefix(value, "/"), strings.HasPrefix(value, "."):
		return checkSocketPath(key, value)
	}
	return fmt.Errorf("%s %q: not a socket path; use an absolute path such as /var/run/veneur/dogstatsd.sock, or %s", key, value, inheritedForms)
}

// maxSocketPath is the longest unix socket path Linux binds (sun_path
// holds 108 bytes with the terminating NUL).
const maxSocketPath = 107

func checkSocketPath(key, value string) error {
	if len(value) > maxSocketPath {
		return fmt.Errorf("%s %q: %d bytes, longer than the %d a unix socket path may have; choose a shorter path", key, value, len(value), maxSocketPath)
	}
	return nil
}

// maxDatagramBytes bounds max_datagram_bytes.
const maxDatagramBytes = 16 << 20

// ParseUnixSocketMode returns unix_socket_mode as a file mode: octal
// digits, of which at least one write bit, since a client needs write
// permission to connect or send.
func (c Config) ParseUnixSocketMode() (os.FileMode, error) {
	v := c.UnixSocketMode
	if v == "" {
		v = DefaultUnixSocketMode
	}
	m, err := strconv.ParseUint(strings.TrimPrefix(v, "0o"), 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("unix_socket_mode %q: not a permission in octal; use octal digits in quotes, such as \"0660\" (owner and group) or \"0666\" (everyone)", v)
	}
	if m&0o222 == 0 {
		return 0, fmt.Errorf("unix_socket_mode %q: no one may write, and sending to a unix socket needs write permission; use such as \"0660\"", v)
	}
	return os.FileMode(m), nil
}

// TLSConfig builds the TLS settings of the TCP listener from tls_certificate
// and tls_key, and, with tls_authority_certificate, requires clients to
// present a certificate that authority signed. It returns nil when TLS is
// off.
func (c Config) TLSConfig() (*tls.Config, error) {
	return serverTLS("tls", c.TLSCertificate, c.TLSKey, c.TLSAuthorityCertificate, tls.RequireAndVerifyClientCert)
}

// HTTPTLSConfig builds the TLS settings of http_address from
// http_tls_certificate and http_tls_key, or nil when they are unset. With
// http_tls_authority_certificate, a client certificate is verified when
// one is given; /import then refuses requests without one (the handler
// checks), while /healthcheck and /version stay open.
func (c Config) HTTPTLSConfig() (*tls.Config, error) {
	return serverTLS("http_tls", c.HTTPTLSCertificate, c.HTTPTLSKey, c.HTTPTLSAuthorityCertificate, tls.VerifyClientCertIfGiven)
}

// GRPCTLSConfig builds the TLS settings of grpc_address from the http_tls_*
// keys, or nil when they are unset. With http_tls_authority_certificate
// every call needs a client certificate that authority signed: the gRPC
// service has no open routes.
func (c Config) GRPCTLSConfig() (*tls.Config, error) {
	return serverTLS("http_tls", c.HTTPTLSCertificate, c.HTTPTLSKey, c.HTTPTLSAuthorityCertificate, tls.RequireAndVerifyClientCert)
}

// ForwardTLSConfig builds the TLS settings of the forward client: the
// client certificate of forward_tls_certificate and forward_tls_key, and
// the authority of forward_tls_authority_certificate to verify the global
// with. It returns nil when none is set.
func (c Config) ForwardTLSConfig() (*tls.Config, error) {
	if c.ForwardTLSCertificate == "" && c.ForwardTLSKey == "" && c.ForwardTLSAuthorityCertificate == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.ForwardTLSCertificate != "" && c.ForwardTLSKey != "" {
		cert, err := tls.X509KeyPair([]byte(c.ForwardTLSCertificate), []byte(c.ForwardTLSKey))
		if err != nil {
			return nil, fmt.Errorf("forward_tls_certificate and forward_tls_key: %w; both must be PEM text (-----BEGIN ...) of one key pair", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if c.ForwardTLSAuthorityCertificate != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(c.ForwardTLSAuthorityCertificate)) {
			return nil, errors.New("forward_tls_authority_certificate: no PEM certificate found; give the authority's certificate (-----BEGIN CERTIFICATE-----)")
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// checkPair reports a certificate set without its key or the other way
// round, and an authority without either, for the keys prefix_certificate,
// prefix_key and prefix_authority_certificate.
func checkPair(prefix, cert, key, authority, what string) error {
	switch {
	case key != "" && cert == "":
		return fmt.Errorf("%s_key is set but %s_certificate is empty; set both (PEM text) or neither", prefix, prefix)
	case cert != "" && key == "":
		return fmt.Errorf("%s_certificate is set but %s_key is empty; set both (PEM text) or neither", prefix, prefix)
	case authority != "" && cert == "":
		return fmt.Errorf("%s_authority_certificate is set without %s_certificate and %s_key; %s checks client certificates only over TLS, so set both or remove it", prefix, prefix, prefix, what)
	}
	return nil
}

// serverTLS builds a server's TLS settings from PEM texts; auth is how it
// treats client certificates when authority is set.
func serverTLS(prefix, certPEM, keyPEM, authority string, auth tls.ClientAuthType) (*tls.Config, error) {
	if keyPEM == "" && certPEM == "" {
		return nil, nil
	}
	cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("%s_certificate and %s_key: %w; both must be PEM text (-----BEGIN ...) of one key pair", prefix, prefix, err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if authority != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(authority)) {
			return nil, fmt.Errorf("%s_authority_certificate: no PEM certificate found; give the authority's certificate (-----BEGIN CERTIFICATE-----)", prefix)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = auth
	}
	return tc, nil
}
