package veneur

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"
)

// minimal is the smallest valid config: something to listen on.
const minimal = "udp_address: 127.0.0.1:8126\n"

// mustParse parses doc and fails the test on error.
func mustParse(t *testing.T, doc string) Config {
	t.Helper()
	c, err := ParseConfig([]byte(doc))
	if err != nil {
		t.Fatalf("ParseConfig(%q): %v", doc, err)
	}
	return c
}

// joinedCount returns how many errors err joins together (1 if it joins
// none), looking through any %w wrapping.
func joinedCount(err error) int {
	for err != nil {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			return len(j.Unwrap())
		}
		err = errors.Unwrap(err)
	}
	return 1
}

func TestReadConfigReadmeKeys(t *testing.T) {
	c, err := ReadConfig(filepath.Join("testdata", "config", "readme.yaml"))
	if err != nil {
		t.Fatalf("ReadConfig: %v", err)
	}
	want := Config{
		Aggregates:              []string{"min", "max", "count"},
		APIHostname:             "https://app.datadoghq.com",
		Debug:                   true,
		FlushMaxPerBody:         25000,
		ForwardAddress:          "http://veneur.example.com",
		Hostname:                "localhost",
		HTTPAddress:             "einhorn@0",
		Interval:                "10s",
		Key:                     "not-a-real-key",
		MetricMaxLength:         4096,
		NumReaders:              1,
		NumWorkers:              96,
		Percentiles:             []float64{0.5, 0.75, 0.99},
		ReadBufferSizeBytes:     2097152,
		StatsAddress:            "localhost:8125",
		Tags:                    []string{"foo:bar", "baz:quz"},
		TcpAddress:              "localhost:8129",
		TLSAuthorityCertificate: testCertPEM,
		TLSCertificate:          testCertPEM,
		TLSKey:                  testKeyPEM,
		TraceMaxLengthBytes:     DefaultTraceMaxLengthBytes,
		UdpAddress:              "localhost:8126",
		// Not in 1.1.0: their defaults.
		FlushMaxConcurrency:  DefaultFlushMaxConcurrency,
		FlushSpoolBytes:      DefaultFlushSpoolBytes,
		ShutdownTimeout:      DefaultShutdownTimeout,
		ImportMaxBodyBytes:   DefaultImportMaxBodyBytes,
		ImportMaxConcurrency: 2 * runtime.NumCPU(),
		TCPIdleTimeout:       DefaultTCPIdleTimeout,
		TCPMaxConnections:    DefaultTCPMaxConnections,
		EtcdPrefix:           DefaultEtcdPrefix,
		EtcdLeaseTTL:         DefaultEtcdLeaseTTL,
		MaxDatagramBytes:     DefaultMaxDatagramBytes,
		UnixSocketMode:       DefaultUnixSocketMode,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("ReadConfig(readme.yaml)\n got %+v\nwant %+v", c, want)
	}
	if !c.IsLocal() {
		t.Errorf("IsLocal() = false with forward_address %q", c.ForwardAddress)
	}
}

// Every config the repository ships is valid, sinks included, as
// veneur -validate checks it.
func TestShippedConfigsLoad(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("config", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 3 {
		t.Fatalf("config/ holds %q; want dev.yaml, local.yaml and global.yaml at least", paths)
	}
	for _, path := range append(paths, "example.yaml", filepath.Join("packaging", "systemd", "veneur.yaml")) {
		t.Run(path, func(t *testing.T) {
			c, err := ReadConfig(path)
			if err != nil {
				t.Fatalf("ReadConfig(%s): %v", path, err)
			}
			log := logrus.New()
			log.SetOutput(io.Discard)
			// Stats: no client for stats_address, whose goroutines would outlive the test.
			if _, err := NewFromConfig(c, Options{Stdout: io.Discard, Log: log, Stats: &statsd.NoOpClient{}}); err != nil {
				t.Fatalf("NewFromConfig(%s): %v", path, err)
			}
		})
	}
}

// config/local.yaml and config/global.yaml are a pair for one machine:
// the local forwards to the global's http_address on loopback, neither
// needs a Datadog account, and they flush on the same interval. (e2e
// TestLocalGlobalPair runs them.)
func TestLocalGlobalPair(t *testing.T) {
	local, err := ReadConfig(filepath.Join("config", "local.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	global, err := ReadConfig(filepath.Join("config", "global.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "http://" + global.HTTPAddress; local.ForwardAddress != want {
		t.Errorf("local forward_address %q, want the global's http_address, %q", local.ForwardAddress, want)
	}
	if !local.IsLocal() || global.IsLocal() {
		t.Errorf("IsLocal: local %v, global %v; want true, false", local.IsLocal(), global.IsLocal())
	}
	if local.Interval != global.Interval {
		t.Errorf("interval: local %q, global %q; global counters need the same", local.Interval, global.Interval)
	}
	seen := map[string]string{}
	for _, a := range []struct{ name, addr string }{
		{"local udp_address", local.UdpAddress}, {"local http_address", local.HTTPAddress},
		{"global udp_address", global.UdpAddress}, {"global http_address", global.HTTPAddress},
	} {
		host, _, err := net.SplitHostPort(a.addr)
		if err != nil || host != "127.0.0.1" {
			t.Errorf("%s %q: want a loopback host:port", a.name, a.addr)
		}
		if other, ok := seen[a.addr]; ok {
			t.Errorf("%s and %s are both %q", a.name, other, a.addr)
		}
		seen[a.addr] = a.name
	}
	for _, c := range []Config{local, global} {
		if c.APIHostname != "" || c.Hostname == "" {
			t.Errorf("api_hostname %q hostname %q: want flushes printed, under a hostname of their own", c.APIHostname, c.Hostname)
		}
	}
	if local.Hostname == global.Hostname {
		t.Errorf("both hostnames are %q; the printed flushes should tell them apart", local.Hostname)
	}
}

// TestExampleListsEveryKey keeps example.yaml complete as keys are added.
func TestExampleListsEveryKey(t *testing.T) {
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	root := documentRoot(&doc)
	if root == nil || root.Kind != yaml.MappingNode {
		t.Fatalf("example.yaml is not a mapping")
	}
	var got, want []string
	for i := 0; i < len(root.Content); i += 2 {
		got = append(got, root.Content[i].Value)
	}
	for _, f := range configFields() {
		want = append(want, f.key)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("example.yaml keys\n got %v\nwant %v", got, want)
	}
	// veneur 1.1.0's 34 keys; flush_max_concurrency, flush_spool_bytes,
	// flush_spool_max_age and shutdown_timeout (delivery); the http_tls_*
	// and forward_tls_* keys, import_max_body_bytes,
	// import_max_concurrency, tcp_max_connections, tcp_idle_timeout and
	// max_series_per_interval (limits); grpc_address;
	// allow_short_interval; forward_addresses and the etcd_* keys (the
	// global tier); the unix sockets' unix_datagram_address,
	// unix_stream_address and unix_socket_mode; max_datagram_bytes.
	if len(want) != 60 {
		t.Errorf("Config has %d keys, want 60", len(want))
	}

	c, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if c.UdpAddress != "0.0.0.0:8126" || c.HTTPAddress != "0.0.0.0:8127" || c.APIHostname != "https://app.datadoghq.com" {
		t.Errorf("example.yaml: udp %q http %q api %q", c.UdpAddress, c.HTTPAddress, c.APIHostname)
	}
	if c.IsLocal() {
		t.Error("example.yaml: IsLocal() = true, want a root instance")
	}
}

// Warnings flag a config that is valid but probably not what was meant;
// -validate prints them and exits 0.
func TestWarnings(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      string // "" means no warning
	}{
		{"real-looking key", "api_hostname: https://app.datadoghq.com\nkey: 0123456789abcdef0123456789abcdef", ""},
		{"example's placeholder", "api_hostname: https://app.datadoghq.com\nkey: your-datadog-api-key", `key looks like a placeholder (it contains "your")`},
		{"all x", "api_hostname: https://app.datadoghq.com\nkey: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "key looks like a placeholder"},
		{"changeme", "api_hostname: https://app.datadoghq.com\nkey: changeme", "key looks like a placeholder"},
		{"short", "api_hostname: https://app.datadoghq.com\nkey: 0123456789abcdef", "key has 16 characters, not the 32 hexadecimal characters"},
		// Without api_hostname the key is not used.
		{"placeholder but printing", "key: your-datadog-api-key", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := mustParse(t, minimal+tc.doc+"\n").Warnings()
			switch {
			case tc.want == "" && len(w) != 0:
				t.Errorf("Warnings() = %q, want none", w)
			case tc.want != "" && (len(w) != 1 || !strings.Contains(w[0], tc.want)):
				t.Errorf("Warnings() = %q, want one containing %q", w, tc.want)
			}
		})
	}
	c, err := ReadConfig("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "placeholder") {
		t.Errorf("example.yaml: Warnings() = %q, want the placeholder key", w)
	}
}

func TestDevConfig(t *testing.T) {
	c, err := ReadConfig(filepath.Join("config", "dev.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		UdpAddress:   "127.0.0.1:8126",
		HTTPAddress:  "127.0.0.1:8127",
		StatsAddress: "127.0.0.1:8126",
		Interval:     "10s",
		Hostname:     "dev",
		Tags:         []string{"env:dev"},
	}
	if err := want.ApplyDefaults(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("dev.yaml\n got %+v\nwant %+v", c, want)
	}
}

func TestDefaults(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skipf("os.Hostname: %v", err)
	}
	c := mustParse(t, minimal)
	d, err := c.ParseInterval()
	if err != nil || d != 10*time.Second {
		t.Errorf("ParseInterval() = %v, %v; want 10s", d, err)
	}
	for _, tc := range []struct {
		key       string
		got, want any
	}{
		{"interval", c.Interval, "10s"},
		{"hostname", c.Hostname, host},
		{"num_workers", c.NumWorkers, runtime.NumCPU()},
		{"num_readers", c.NumReaders, 1},
		{"metric_max_length", c.MetricMaxLength, 4096},
		{"max_datagram_bytes", c.MaxDatagramBytes, 65536},
		{"unix_socket_mode", c.UnixSocketMode, "0660"},
		{"unix_datagram_address", c.UnixDatagramAddress, ""},
		{"unix_stream_address", c.UnixStreamAddress, ""},
		{"flush_max_per_body", c.FlushMaxPerBody, 5000},
		{"read_buffer_size_bytes", c.ReadBufferSizeBytes, 2097152},
		{"trace_max_length_bytes", c.TraceMaxLengthBytes, 16384},
		{"percentiles", c.Percentiles, []float64{0.5, 0.75, 0.99}},
		{"aggregates", c.Aggregates, []string{"min", "max", "count"}},
		{"tags", c.Tags, []string(nil)},
		{"api_hostname", c.APIHostname, ""},
		{"http_address", c.HTTPAddress, ""},
		{"stats_address", c.StatsAddress, ""},
		{"forward_address", c.ForwardAddress, ""},
		{"tcp_address", c.TcpAddress, ""},
		{"influx_consistency", c.InfluxConsistency, ""},
		{"debug", c.Debug, false},
		{"is_local", c.IsLocal(), false},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("default %s = %#v, want %#v", tc.key, tc.got, tc.want)
		}
	}
}

func TestDefaultsKeepExplicitValues(t *testing.T) {
	c := mustParse(t, minimal+`
interval: 250ms
allow_short_interval: true
hostname: web-1
num_workers: 3
num_readers: 2
metric_max_length: 100
flush_max_per_body: 7
read_buffer_size_bytes: 1024
trace_max_length_bytes: 99
percentiles: [0.9]
aggregates: [sum]
flush_max_concurrency: 2
flush_spool_bytes: 1000
flush_spool_max_age: 1m
shutdown_timeout: 3s
max_datagram_bytes: 8192
unix_socket_mode: "0600"
`)
	want := Config{
		UdpAddress: "127.0.0.1:8126", Interval: "250ms", AllowShortInterval: true, Hostname: "web-1",
		NumWorkers: 3, NumReaders: 2, MetricMaxLength: 100, FlushMaxPerBody: 7,
		ReadBufferSizeBytes: 1024, TraceMaxLengthBytes: 99,
		FlushMaxConcurrency: 2, FlushSpoolBytes: 1000, FlushSpoolMaxAge: "1m", ShutdownTimeout: "3s",
		ImportMaxBodyBytes: DefaultImportMaxBodyBytes, ImportMaxConcurrency: 2 * runtime.NumCPU(),
		TCPIdleTimeout: DefaultTCPIdleTimeout, TCPMaxConnections: DefaultTCPMaxConnections,
		EtcdPrefix: DefaultEtcdPrefix, EtcdLeaseTTL: DefaultEtcdLeaseTTL,
		MaxDatagramBytes: 8192, UnixSocketMode: "0600",
		Percentiles: []float64{0.9}, Aggregates: []string{"sum"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("\n got %+v\nwant %+v", c, want)
	}
}

func TestDefaultsEmptyListsAndOmittedHostname(t *testing.T) {
	c := mustParse(t, minimal+"percentiles: []\naggregates: []\nomit_empty_hostname: true\n")
	if c.Percentiles == nil || len(c.Percentiles) != 0 {
		t.Errorf("percentiles: [] gave %#v, want an empty list", c.Percentiles)
	}
	if c.Aggregates == nil || len(c.Aggregates) != 0 {
		t.Errorf("aggregates: [] gave %#v, want an empty list", c.Aggregates)
	}
	if c.Hostname != "" {
		t.Errorf("omit_empty_hostname: true gave hostname %q, want empty", c.Hostname)
	}

	c = mustParse(t, minimal+"percentiles:\naggregates: ~\nomit_empty_hostname: true\nhostname: h\n")
	if !reflect.DeepEqual(c.Percentiles, DefaultPercentiles()) || !reflect.DeepEqual(c.Aggregates, DefaultAggregates()) {
		t.Errorf("null lists gave %v and %v, want the defaults", c.Percentiles, c.Aggregates)
	}
	if c.Hostname != "h" {
		t.Errorf("hostname = %q, want h", c.Hostname)
	}
}

func TestApplyDefaultsIsIdempotent(t *testing.T) {
	var c Config
	if err := c.ApplyDefaults(); err != nil {
		t.Fatal(err)
	}
	once := c
	once.Percentiles = append([]float64(nil), c.Percentiles...)
	if err := c.ApplyDefaults(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, once) {
		t.Errorf("second ApplyDefaults changed\n%+v\nto\n%+v", once, c)
	}
	// A negative value is left for Validate to report, not replaced.
	c = Config{NumWorkers: -1}
	if err := c.ApplyDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.NumWorkers != -1 {
		t.Errorf("num_workers -1 became %d", c.NumWorkers)
	}
}

func TestEmptyFileFailsOnlyForNothingToListenOn(t *testing.T) {
	for _, doc := range []string{"", "\n", "# only a comment\n", "---\n", "{}"} {
		_, err := ParseConfig([]byte(doc))
		if err == nil {
			t.Fatalf("ParseConfig(%q) succeeded", doc)
		}
		if want := "nothing to listen on: set udp_address, e.g. 127.0.0.1:8126, or tcp_address, unix_datagram_address or unix_stream_address"; err.Error() != want {
			t.Errorf("ParseConfig(%q) = %q, want exactly %q", doc, err, want)
		}
	}
	// tcp_address alone is something to listen on.
	mustParse(t, "tcp_address: 127.0.0.1:8129\n")
}

func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string // appended to minimal
		want []string
	}{
		{"interval unparseable", "interval: soon", []string{"interval", `"soon"`, "10s"}},
		{"interval without unit", "interval: 10", []string{"interval", "missing unit"}},
		{"interval zero", "interval: 0s", []string{"interval", "greater than zero"}},
		{"interval negative", "interval: -5s", []string{"interval", "greater than zero"}},
		{"interval under 1s", "interval: 999ms", []string{`interval "999ms": shorter than 1s`, "use 1s or more", "allow_short_interval: true"}},
		{"interval 1ns", "interval: 1ns", []string{`interval "1ns"`, "allow_short_interval"}},
		{"interval under 1s, not allowed", "interval: 100ms\nallow_short_interval: false", []string{`interval "100ms"`, "allow_short_interval: true"}},
		{"shutdown_timeout unparseable", "shutdown_timeout: soon", []string{"shutdown_timeout", `"soon"`, "10s"}},
		{"flush_spool_max_age zero", "flush_spool_max_age: 0s", []string{"flush_spool_max_age", "greater than zero"}},
		{"flush_spool_bytes negative", "flush_spool_bytes: -1", []string{"flush_spool_bytes = -1", "64 MiB"}},
		{"flush_max_concurrency negative", "flush_max_concurrency: -2", []string{"flush_max_concurrency = -2", "4"}},
		{"udp_address missing port", `udp_address: "x"`, []string{`udp_address "x": missing port; use host:port such as 127.0.0.1:8126`}},
		{"udp_address port not a number", "udp_address: localhost:http", []string{"udp_address", "not a number from 0 to 65535"}},
		{"udp_address port too big", "udp_address: localhost:65536", []string{"udp_address", "65535"}},
		{"udp_address negative port", "udp_address: localhost:-1", []string{"udp_address", "0 to 65535"}},
		{"udp_address empty port", "udp_address: 'localhost:'", []string{"udp_address", "missing port number"}},
		{"udp_address url", "udp_address: udp://127.0.0.1:8126", []string{"udp_address", "URL"}},
		{"udp_address bare ipv6", "udp_address: '::1:8126'", []string{"udp_address", "brackets"}},
		{"udp_address spaces", "udp_address: 'my host:8126'", []string{"udp_address", "white space"}},
		{"tcp_address", "tcp_address: 8129", []string{"tcp_address", "missing port"}},
		{"stats_address", "stats_address: localhost", []string{"stats_address", "missing port", "127.0.0.1:8125"}},
		{"trace_address", "trace_address: localhost:99999", []string{"trace_address", "0 to 65535"}},
		{"http_address word", "http_address: localhost", []string{"http_address", "einhorn@N", "unix socket"}},
		{"http_address bad port", "http_address: localhost:x", []string{"http_address", "not a number"}},
		{"http_address einhorn without number", "http_address: einhorn@", []string{"http_address", "einhorn@0"}},
		{"http_address fd negative", "http_address: fd@-1", []string{"http_address", "fd@3"}},
		{"http_address systemd without name", "http_address: 'systemd:'", []string{"http_address", "systemd:dogstatsd"}},
		{"udp_address fd not a number", "udp_address: fd@x", []string{`udp_address "fd@x"`, "fd@3"}},
		{"udp_address einhorn negative", "udp_address: einhorn@-1", []string{"udp_address", "einhorn@0"}},
		{"tcp_address systemd with colon", "tcp_address: 'systemd:a:b'", []string{"tcp_address", "FileDescriptorName"}},
		{"tcp_address a path", "tcp_address: /run/veneur.sock", []string{"tcp_address", "host:port", "systemd:NAME"}},
		{"unix_datagram_address host:port", "unix_datagram_address: 127.0.0.1:8126", []string{"unix_datagram_address", "not a socket path", "/var/run/veneur/dogstatsd.sock"}},
		{"unix_stream_address too long", "unix_stream_address: /" + strings.Repeat("d", 107), []string{"unix_stream_address", "108 bytes", "shorter path"}},
		{"unix addresses the same", "unix_datagram_address: /run/d.sock\nunix_stream_address: /run/d.sock", []string{"unix_datagram_address and unix_stream_address", "its own"}},
		{"unix_socket_mode not octal", "unix_socket_mode: rw-rw----", []string{"unix_socket_mode", `"0660"`}},
		{"unix_socket_mode 8", "unix_socket_mode: '0868'", []string{"unix_socket_mode", "octal"}},
		{"unix_socket_mode too big", "unix_socket_mode: '01777'", []string{"unix_socket_mode", "octal"}},
		{"unix_socket_mode read only", "unix_socket_mode: '0444'", []string{"unix_socket_mode", "write permission"}},
		{"max_datagram_bytes negative", "max_datagram_bytes: -1", []string{"max_datagram_bytes = -1", "65536"}},
		{"max_datagram_bytes huge", "max_datagram_bytes: 1073741824", []string{"max_datagram_bytes = 1073741824", "16 MiB"}},
		{"http_address systemd", "http_address: systemd", []string{"http_address", "fd@N"}},
		{"percentile one", "percentiles: [0.5, 1]", []string{"percentiles[1]", "between 0 and 1"}},
		{"percentile zero", "percentiles: [0]", []string{"percentiles[0]"}},
		{"percentile as percent", "percentiles: [99]", []string{"percentiles[0] = 99", "0.99"}},
		{"percentile NaN", "percentiles: [.nan]", []string{"percentiles[0] = NaN"}},
		{"percentile duplicate", "percentiles: [0.5, 0.5]", []string{"percentiles", "twice"}},
		{"aggregate unknown", "aggregates: [min, mean]", []string{`aggregates[1] "mean"`, "min, max, median, avg, count, sum"}},
		{"aggregate case", "aggregates: [MAX]", []string{`aggregates[0] "MAX"`}},
		{"aggregate duplicate", "aggregates: [min, min]", []string{"aggregates", "twice"}},
		{"num_workers negative", "num_workers: -1", []string{"num_workers = -1", "at least 1"}},
		{"num_readers negative", "num_readers: -3", []string{"num_readers = -3", "at least 1"}},
		{"metric_max_length negative", "metric_max_length: -1", []string{"metric_max_length = -1", "4096"}},
		{"read_buffer_size_bytes negative", "read_buffer_size_bytes: -1", []string{"read_buffer_size_bytes = -1", "2097152"}},
		{"read_buffer_size_bytes huge", "read_buffer_size_bytes: 4294967296", []string{"read_buffer_size_bytes = 4294967296"}},
		{"trace_max_length_bytes negative", "trace_max_length_bytes: -1", []string{"trace_max_length_bytes = -1", "16384"}},
		{"tls_key alone", "tcp_address: 127.0.0.1:8129\ntls_key: k", []string{"tls_key is set but tls_certificate is empty"}},
		{"tls_certificate alone", "tcp_address: 127.0.0.1:8129\ntls_certificate: c", []string{"tls_certificate is set but tls_key is empty"}},
		{"tls without tcp_address", "tls_key: k\ntls_certificate: c", []string{"tls_key is set but tcp_address is empty", "tls_certificate is set but tcp_address is empty"}},
		{"tls authority alone", "tcp_address: 127.0.0.1:8129\ntls_authority_certificate: a", []string{"tls_authority_certificate", "tls_key and tls_certificate"}},
		{"nothing to listen on", "udp_address: ''", []string{"nothing to listen on", "udp_address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := tc.doc + "\n"
			if !strings.HasPrefix(doc, "udp_address:") {
				doc = minimal + doc
			}
			_, err := ParseConfig([]byte(doc))
			if err == nil {
				t.Fatalf("ParseConfig accepted %q", doc)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	for _, doc := range []string{
		"udp_address: ':8126'",
		"udp_address: '127.0.0.1:0'",
		"udp_address: '[::1]:8126'",
		"udp_address: 'localhost:65535'",
		"http_address: '127.0.0.1:8127'",
		"http_address: ':0'",
		"http_address: einhorn@0",
		"http_address: fd@3",
		"http_address: /run/veneur.sock",
		"http_address: ./veneur.sock",
		"http_address: systemd:http",
		"grpc_address: systemd:grpc",
		"grpc_address: /run/veneur-grpc.sock",
		"udp_address: systemd:dogstatsd",
		"udp_address: fd@3",
		"udp_address: einhorn@0",
		"tcp_address: systemd:dogstatsd",
		"udp_address: ''\nunix_datagram_address: /var/run/veneur/dsd.sock",
		"udp_address: ''\nunix_stream_address: ./dsd.sock",
		"unix_stream_address: systemd:dsd-stream\nunix_datagram_address: fd@4",
		"unix_socket_mode: 0600",
		"unix_socket_mode: '0o666'",
		"unix_socket_mode: 622",
		"max_datagram_bytes: 8192",
		"api_hostname: https://app.datadoghq.com",
		"api_hostname: http://127.0.0.1:9999/",
		"forward_address: http://veneur-global:8127",
		"trace_api_address: http://localhost:8126",
		"percentiles: [0.001, 0.5, 0.999]",
		"aggregates: [min, max, median, avg, count, sum]",
		"influx_consistency: quorum",
		"tcp_address: 127.0.0.1:8129\ntls_key: |\n" + indent(testKeyPEM) + "tls_certificate: |\n" + indent(testCertPEM) +
			"tls_authority_certificate: |\n" + indent(testCertPEM),
		"num_workers: 1e3",
		"interval: 1h30m",
		"interval: 1s",
		"interval: 1000ms",
		"interval: 100ms\nallow_short_interval: true",
		"interval: 1ns\nallow_short_interval: true",
	} {
		if !strings.HasPrefix(doc, "udp_address:") {
			doc = minimal + doc
		}
		if _, err := ParseConfig([]byte(doc + "\n")); err != nil {
			t.Errorf("ParseConfig(%q): %v", doc, err)
		}
	}
}

func TestUnknownKey(t *testing.T) {
	for _, tc := range []struct {
		doc, want string
	}{
		{"flush_max_per_bdy: 5000", `line 2: unknown config key "flush_max_per_bdy"; did you mean "flush_max_per_body"?`},
		{"UdpAddress: x", `did you mean "udp_address"?`},
		{"http-address: x", `did you mean "http_address"?`},
		{"intreval: 10s", `did you mean "interval"?`},
		{"num_worker: 2", `did you mean "num_workers"?`},
		{"percentile: [0.5]", `did you mean "percentiles"?`},
		{"tls_authority: x", `did you mean "tls_authority_certificate"?`},
		{"kye: x", `did you mean "key"?`},
		{"colour: blue", `unknown config key "colour"; see docs/configuration.md`},
		{"tls: x", `unknown config key "tls"; see`},
		{"on: 1", `unknown config key "on"`},
	} {
		_, err := ParseConfig([]byte(minimal + tc.doc + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q) = %v, want an error containing %q", tc.doc, err, tc.want)
		}
	}
}

func TestTypeMismatchNamesKey(t *testing.T) {
	for _, tc := range []struct {
		doc, want string
	}{
		{"num_workers: abc", `line 2: config key "num_workers": got "abc", want a whole number`},
		{"num_workers: 1.5", `line 2: config key "num_workers": got 1.5, want a whole number`},
		{"num_readers: 1e30", `line 2: config key "num_readers": got 1e+30, want a whole number`},
		{"debug: maybe", `line 2: config key "debug": got "maybe", want true or false`},
		{"percentiles: 0.5", `line 2: config key "percentiles": got 0.5, want a list of numbers`},
		{"percentiles: [0.5, high]", `line 2: config key "percentiles": got a list [0.5 high], want a list of numbers`},
		{"tags: {env: prod}", `line 2: config key "tags": got a mapping, want a list of strings`},
		{"hostname: [a, b]", `line 2: config key "hostname": got a list [a b], want a string`},
		{"num_workers: -.inf", `line 2: config key "num_workers": got -Inf, want a whole number`},
		{"num_workers: 9223372036854775808", `line 2: config key "num_workers": got 9223372036854775808, want a whole number`},
		{"debug: 1", `line 2: config key "debug": got 1, want true or false`},
		{"interval: {s: 10}", `line 2: config key "interval": got a mapping, want a string`},
		{`percentiles: ["0.5"]`, `line 2: config key "percentiles": got a list [0.5], want a list of numbers, such as [0.5, 0.99]; percentiles[0] (line 2) is "0.5"`},
	} {
		_, err := ParseConfig([]byte(minimal + tc.doc + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q) = %v, want an error containing %q", tc.doc, err, tc.want)
		}
	}
}

// wantErrors parses doc and checks that the error contains every one of
// want and joins exactly len(want) problems.
func wantErrors(t *testing.T, doc string, want ...string) {
	t.Helper()
	_, err := ParseConfig([]byte(doc))
	if err == nil {
		t.Fatalf("ParseConfig(%q) succeeded", doc)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("ParseConfig(%q) error\n%v\ndoes not contain %q", doc, err, w)
		}
	}
	if n := joinedCount(err); n != len(want) {
		t.Errorf("ParseConfig(%q) error joins %d problems, want %d:\n%v", doc, n, len(want), err)
	}
}

func TestUnknownKeyReportsItsLine(t *testing.T) {
	wantErrors(t, `# veneur
udp_address: 127.0.0.1:8126
tags:
  - env:prod

intervall: 10s
colour: blue
`,
		`line 6: unknown config key "intervall"; did you mean "interval"?`,
		`line 7: unknown config key "colour"; see docs/configuration.md`)
}

func TestTypeErrorReportsKeyAndLine(t *testing.T) {
	wantErrors(t, `udp_address: 127.0.0.1:8126
num_workers: 4
num_readers: many
debug: true
omit_empty_hostname: perhaps
percentiles:
  - 0.5
  - p99
`,
		`line 3: config key "num_readers": got "many", want a whole number`,
		`line 5: config key "omit_empty_hostname": got "perhaps", want true or false`,
		`line 6: config key "percentiles": got a list [0.5 p99], want a list of numbers, such as [0.5, 0.99]; percentiles[1] (line 8) is "p99"`)
}

func TestDuplicateKeyReportsBothLines(t *testing.T) {
	wantErrors(t, "udp_address: 127.0.0.1:8126\ninterval: 5s\nhostname: h\ninterval: 6s\n",
		`line 4: config key "interval" is set more than once (first on line 2); keep one`)
	// A repeated unknown key is reported as unknown once, then as repeated.
	wantErrors(t, minimal+"colour: a\ncolour: b\n",
		`line 2: unknown config key "colour"`,
		`line 3: config key "colour" is set more than once (first on line 2)`)
	// A repeated key whose values are mistyped is reported for each.
	wantErrors(t, minimal+"num_workers: x\nnum_workers: y\n",
		`line 2: config key "num_workers": got "x"`,
		`line 3: config key "num_workers" is set more than once (first on line 2)`,
		`line 3: config key "num_workers": got "y"`)
}

func TestNestedWrongShapeIsNamed(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"hostname:\n  - a\n  - b", `line 2: config key "hostname": got a list [a b], want a string`},
		{"tags:\n  - a\n  - [b, c]", `line 2: config key "tags": got a list [a [b c]], want a list of strings, such as ["a", "b"]; tags[1] (line 4) is a list [b c]`},
		{"tags: [a, {b: c}]", `line 2: config key "tags": got a list [a {...}], want a list of strings, such as ["a", "b"]; tags[1] (line 2) is a mapping`},
		{"percentiles: [[0.5]]", `line 2: config key "percentiles": got a list [[0.5]], want a list of numbers, such as [0.5, 0.99]; percentiles[0] (line 2) is a list [0.5]`},
		{"aggregates: [[min, max]]", `aggregates[0] (line 2) is a list [min max]`},
		{"debug: [true]", `line 2: config key "debug": got a list [true], want true or false`},
		{"num_workers: {n: 1}", `line 2: config key "num_workers": got a mapping, want a whole number`},
		{"? [a, b]\n: 1", `line 2: a config key must be a name, not a list [a b]`},
		{"tags: &t [a, *t]", `tags[1] (line 2) is a list [a [a [a`},
	} {
		wantErrors(t, minimal+tc.doc+"\n", tc.want)
	}
}

func TestLongValueIsShortenedInErrors(t *testing.T) {
	long := strings.Repeat("x", 100)
	_, err := ParseConfig([]byte(minimal + "num_workers: " + long + "\n"))
	want := `got "` + strings.Repeat("x", 59) + "...,"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v does not contain %q", err, want)
	}
}

// TestYAML11Scalars checks the YAML 1.1 spellings that yaml.v2 decoded and
// that existing configs may use, which yaml.v3 must decode the same way.
func TestYAML11Scalars(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want bool
	}{
		{"yes", true}, {"Yes", true}, {"YES", true}, {"on", true}, {"On", true}, {"ON", true}, {"y", true}, {"Y", true},
		{"true", true}, {"True", true}, {"TRUE", true},
		{"no", false}, {"No", false}, {"NO", false}, {"off", false}, {"Off", false}, {"OFF", false}, {"n", false}, {"N", false},
		{"false", false}, {"False", false}, {"~", false}, {"", false},
	} {
		c := mustParse(t, minimal+"debug: "+tc.doc+"\nomit_empty_hostname: "+tc.doc+"\nhostname: h\n")
		if c.Debug != tc.want || c.OmitEmptyHostname != tc.want {
			t.Errorf("debug: %s gave %v and %v, want %v", tc.doc, c.Debug, c.OmitEmptyHostname, tc.want)
		}
	}
	for _, tc := range []struct {
		doc  string
		want int
	}{
		{"12", 12}, {"+12", 12}, {"0x10", 16}, {"0o17", 15}, {"017", 15}, {"0b101", 5}, {"1_000", 1000}, {"1e3", 1000}, {"2.0", 2},
	} {
		c := mustParse(t, minimal+"num_workers: "+tc.doc+"\n")
		if c.NumWorkers != tc.want {
			t.Errorf("num_workers: %s gave %d, want %d", tc.doc, c.NumWorkers, tc.want)
		}
	}
	c := mustParse(t, minimal+"percentiles: [.5, 0.75, 1e-1, 9.9e-1, !!float '0.25']\nhostname: yes\nkey: 1e3\ninterval: 2.5m\ntags: [on, 0x1F, 1.50, ~x]\n")
	if want := []float64{0.5, 0.75, 0.1, 0.99, 0.25}; !reflect.DeepEqual(c.Percentiles, want) {
		t.Errorf("percentiles = %v, want %v", c.Percentiles, want)
	}
	if c.Hostname != "yes" || c.Key != "1e3" || c.Interval != "2.5m" {
		t.Errorf("hostname %q key %q interval %q", c.Hostname, c.Key, c.Interval)
	}
	if want := []string{"on", "0x1F", "1.50", "~x"}; !reflect.DeepEqual(c.Tags, want) {
		t.Errorf("tags = %q, want %q", c.Tags, want)
	}
}

// TestNullListItemsKept checks that a null list item decodes as the zero
// item, as yaml.v2 did, rather than being dropped.
func TestNullListItemsKept(t *testing.T) {
	c := mustParse(t, minimal+"tags:\n  - a\n  -\n  - ~\n  - b\n")
	if want := []string{"a", "", "", "b"}; !reflect.DeepEqual(c.Tags, want) {
		t.Errorf("tags = %q, want %q", c.Tags, want)
	}
	wantErrors(t, minimal+"percentiles: [0.5, ~]\n", "percentiles[1] = 0: must be strictly between 0 and 1")
	wantErrors(t, minimal+"aggregates: [min, null]\n", `aggregates[1] "": unknown aggregate`)
	// A list shared through an alias gets the zero of each key's item type.
	c, err := decodeConfig([]byte("tags: &l [~, 1]\npercentiles: *l\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Tags, []string{"", "1"}) || !reflect.DeepEqual(c.Percentiles, []float64{0, 1}) {
		t.Errorf("tags %q percentiles %v, want [\"\" \"1\"] and [0 1]", c.Tags, c.Percentiles)
	}
}

func TestAliasesAndMergeKeys(t *testing.T) {
	c := mustParse(t, "udp_address: &addr 127.0.0.1:8126\nstats_address: *addr\ntags: &t [a, b]\n")
	if c.StatsAddress != "127.0.0.1:8126" || !reflect.DeepEqual(c.Tags, []string{"a", "b"}) {
		t.Errorf("stats_address %q tags %q", c.StatsAddress, c.Tags)
	}

	// A key set in place wins over the same key merged in.
	c = mustParse(t, minimal+"<<: [{num_workers: 2, interval: 5s}, {num_readers: 3, interval: 7s}]\ninterval: 1s\n")
	if c.NumWorkers != 2 || c.NumReaders != 3 || c.Interval != "1s" {
		t.Errorf("num_workers %d num_readers %d interval %q, want 2, 3 and 1s", c.NumWorkers, c.NumReaders, c.Interval)
	}

	wantErrors(t, minimal+"<<:\n  num_workrs: 2\n  debug: maybe\n",
		`line 3: unknown config key "num_workrs"; did you mean "num_workers"?`,
		`line 4: config key "debug": got "maybe", want true or false`)
	wantErrors(t, minimal+"<<: {interval: 5s, interval: 6s}\n",
		`line 2: config key "interval" is set more than once (first on line 2)`)
	wantErrors(t, minimal+"<<: {debug: true}\n<<: {num_workers: 2}\n",
		`line 3: merge key << is used more than once in a mapping (first on line 2); merge a list instead`)
	wantErrors(t, minimal+"<<: [{debug: true}, 5]\n", `line 2: merge key <<: item 2 (line 2) is 5; only mappings can be merged`)
	wantErrors(t, minimal+"<<: text\n", `line 2: merge key << is given "text"; give a mapping or a list of mappings`)
	wantErrors(t, "&root\nudp_address: 127.0.0.1:8126\n<<: *root\n", `line 3: merge key << merges a mapping into itself (the mapping on line 1)`)
	wantErrors(t, minimal+"'<<': x\n", `line 2: unknown config key "<<"`)
	wantErrors(t, minimal+"hostname: &k <<\n*k : {debug: true}\n", `line 3: unknown config key "<<"`)
	wantErrors(t, minimal+"tags: &l [{debug: true}]\n<<: *l\n",
		`line 2: config key "tags": got a list [{...}]`,
		`line 3: merge key << is given an alias of a list; write the list in place`)
}

func TestScalarsDecodeIntoStrings(t *testing.T) {
	c := mustParse(t, minimal+"hostname: 1234\nkey: 0x1F\ntags: [a, 1, true]\n")
	if c.Hostname != "1234" || c.Key != "0x1F" || !reflect.DeepEqual(c.Tags, []string{"a", "1", "true"}) {
		t.Errorf("hostname %q key %q tags %q", c.Hostname, c.Key, c.Tags)
	}
}

func TestDecodeErrorsReportedTogether(t *testing.T) {
	_, err := ParseConfig([]byte(minimal + "num_workers: x\nnum_readers: y\nflush_max_per_bdy: 1\ninterval: 5s\ninterval: 6s\n"))
	if err == nil {
		t.Fatal("ParseConfig succeeded")
	}
	for _, w := range []string{`line 2: config key "num_workers"`, `line 3: config key "num_readers"`, `line 4: unknown config key "flush_max_per_bdy"`,
		`line 6: config key "interval" is set more than once (first on line 5)`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	if n := joinedCount(err); n != 4 {
		t.Errorf("error joins %d problems, want 4:\n%v", n, err)
	}
}

func TestReadConfigReportsAllProblems(t *testing.T) {
	path := filepath.Join("testdata", "config", "invalid.yaml")
	_, err := ReadConfig(path)
	if err == nil {
		t.Fatal("ReadConfig succeeded")
	}
	msg := err.Error()
	for _, w := range []string{path, `udp_address "localhost": missing port`, `interval "soon"`, "percentiles[1] = 99", `aggregates[1] "mean"`, "num_workers = -2"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not contain %q", msg, w)
		}
	}
	if n := joinedCount(err); n != 5 {
		t.Errorf("error joins %d problems, want 5:\n%v", n, err)
	}
}

func TestReadConfigMisspeltKey(t *testing.T) {
	path := filepath.Join("testdata", "config", "misspelt.yaml")
	_, err := ReadConfig(path)
	want := `line 2: unknown config key "flush_max_per_bdy"; did you mean "flush_max_per_body"?`
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
		t.Errorf("ReadConfig(%s) = %v, want an error naming the path and containing %q", path, err, want)
	}
}

func TestReadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.yaml")
	_, err := ReadConfig(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "-f") {
		t.Errorf("ReadConfig(%s) = %v, want an error naming the path and -f", path, err)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v does not wrap os.ErrNotExist", err)
	}
}

func TestReadConfigTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	data := []byte(minimal + "# " + strings.Repeat("x", maxConfigBytes) + "\n")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ReadConfig(path)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("ReadConfig(big) = %v, want a size error", err)
	}
}

func TestNotAMapping(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"udp_address: [", "not valid YAML"},
		{"\tudp_address: x", "not valid YAML"},
		{"- udp_address: x", "config is a YAML list; it must be a mapping"},
		{"just words", "config is a YAML string; it must be a mapping"},
		{"42", "config is a YAML scalar; it must be a mapping"},
	} {
		_, err := ParseConfig([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q) = %v, want an error containing %q", tc.doc, err, tc.want)
		}
	}
}

func TestParseInterval(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"10s", 10 * time.Second, true},
		{"1m", time.Minute, true},
		{"1ns", time.Nanosecond, true},
		{"", 0, false},
		{"0", 0, false},
		{"-1s", 0, false},
		{"ten", 0, false},
	} {
		d, err := Config{Interval: tc.in}.ParseInterval()
		if (err == nil) != tc.ok || d != tc.want {
			t.Errorf("ParseInterval(%q) = %v, %v; want %v, ok=%v", tc.in, d, err, tc.want, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "interval") {
			t.Errorf("ParseInterval(%q) error %q does not name the key", tc.in, err)
		}
	}
}

func TestValidateZeroConfigListsEveryProblem(t *testing.T) {
	err := Config{}.Validate()
	if err == nil {
		t.Fatal("Validate accepted the zero Config")
	}
	for _, w := range []string{"interval", "shutdown_timeout", "flush_max_concurrency", "flush_spool_bytes", "tcp_idle_timeout", "tcp_max_connections", "import_max_concurrency", "import_max_body_bytes", "num_workers", "num_readers", "metric_max_length", "max_datagram_bytes", "read_buffer_size_bytes", "trace_max_length_bytes", "etcd_lease_ttl", "etcd_prefix", "nothing to listen on"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	if n := joinedCount(err); n != 17 {
		t.Errorf("Validate joined %d problems, want 17:\n%v", n, err)
	}
}

func TestSuggestKey(t *testing.T) {
	fields := configFields()
	for in, want := range map[string]string{
		"flush_max_per_bdy":       "flush_max_per_body",
		"UDP_ADDRESS":             "udp_address",
		"aws_s3_buckt":            "aws_s3_bucket",
		"read_buffer_size":        "read_buffer_size_bytes",
		"xyz":                     "",
		"":                        "",
		strings.Repeat("a", 5000): "",
	} {
		if got := suggestKey(in, fields); got != want {
			t.Errorf("suggestKey(%.20q) = %q, want %q", in, got, want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "", 3},
		{"", "abc", 3},
		{"kitten", "sitting", 3},
		{"ab", "ba", 1},
		{"key", "kye", 1},
		{"same", "same", 0},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// testCertPEM and testKeyPEM are a self-signed test key pair (P-256, valid
// for 100 years), as in testdata/config/readme.yaml.
const (
	testCertPEM = "-----BEGIN CERTIFICATE-----\nMIIBgzCCASmgAwIBAgIURXMQpiNE+OoQYeb71GQBt8/PW/UwCgYIKoZIzj0EAwIw\nFjEUMBIGA1UEAwwLdmVuZXVyIHRlc3QwIBcNMjYxMTI1MDcwNzQ0WhgPMjEyNjEx\nMDEwNzA3NDRaMBYxFDASBgNVBAMMC3ZlbmV1ciB0ZXN0MFkwEwYHKoZIzj0CAQYI\nKoZIzj0DAQcDQgAE3biuxM1jGp1YOhABHGKxE+lOmBGE41WSIaA/mF4C4tbuZ6q4\nbfnCzmiRi4fZa/7iBHTpK6vX+x8AYONMila4JqNTMFEwHQYDVR0OBBYEFC/rzixh\nKsg+T1ObyjV5Jet1msfhMB8GA1UdIwQYMBaAFC/rzixhKsg+T1ObyjV5Jet1msfh\nMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAK5W2NKGRNIjN0IN\nNEoDwEGWXAJeWVHGK3vb7Qv6TOQRAiB+EUaLM8F7DzprOuhyT2ymtVrnS+xPpaot\nNWVt5zTcsw==\n-----END CERTIFICATE-----\n"
	testKeyPEM  = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIH3n7hy8xqMLyG6+SNEBSaaTEQLLrnf7yTX9THD9BLAPoAoGCCqGSM49\nAwEHoUQDQgAE3biuxM1jGp1YOhABHGKxE+lOmBGE41WSIaA/mF4C4tbuZ6q4bfnC\nzmiRi4fZa/7iBHTpK6vX+x8AYONMila4Jg==\n-----END EC PRIVATE KEY-----\n"
)

// indent indents every line of a PEM text for a YAML block scalar.
func indent(pem string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(pem, "\n") {
		if l != "" {
			b.WriteString("  " + l)
		}
	}
	return b.String()
}
