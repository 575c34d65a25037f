package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"gopkg.in/yaml.v3"
)

const (
	// hostName is the hostname every test daemon is configured with.
	hostName = "e2e-host"
	// startTimeout bounds how long a daemon may take to answer /healthcheck.
	startTimeout = 15 * time.Second
	// stopTimeout bounds how long a daemon may take to exit after a signal.
	stopTimeout = 20 * time.Second
	// pollEvery is the pause between two polls of something with a deadline.
	pollEvery = 20 * time.Millisecond
)

// binPath is where TestMain builds the daemon. It depends only on the test
// process, so every test finds the same binary without shared variables.
func binPath() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("veneur-e2e-%d", os.Getpid()), "veneur")
}

// proxyBinPath is where TestMain builds veneur-proxy.
func proxyBinPath() string { return filepath.Join(filepath.Dir(binPath()), "veneur-proxy") }

// str is v as a string, "" when it is not one.
func str(v any) string {
	s, _ := v.(string)
	return s
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// The official client turns these into extra tags or another
	// destination; the expectations here assume a clean environment.
	for _, k := range []string{
		"DD_ENTITY_ID", "DD_ENV", "DD_SERVICE", "DD_VERSION", "DD_EXTERNAL_ENV",
		"DD_CARDINALITY", "DATADOG_CARDINALITY", "DD_ORIGIN_DETECTION_ENABLED",
		"DD_AGENT_HOST", "DD_DOGSTATSD_PORT", "DD_DOGSTATSD_URL",
	} {
		_ = os.Unsetenv(k)
	}
	dir := filepath.Dir(binPath())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: creating %s for the daemon binary: %v; check that TMPDIR is writable\n", dir, err)
		return 1
	}
	defer os.RemoveAll(dir)
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: the go tool is needed to build the daemon: %v; put it on PATH\n", err)
		return 1
	}
	for bin, pkg := range map[string]string{binPath(): "./cmd/veneur", proxyBinPath(): "./cmd/veneur-proxy"} {
		build := exec.Command(goTool, "build", "-o", bin, "github.com/veneur/veneur/"+strings.TrimPrefix(pkg, "./"))
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: building %s failed: %v; fix `go build %s` first:\n%s\n", bin, err, pkg, out)
			return 1
		}
	}
	return m.Run()
}

// syncBuffer collects process output while tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freeUDPAddr returns a loopback UDP address that was free a moment ago.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free UDP port: %v", err)
	}
	addr := c.LocalAddr().String()
	if err := c.Close(); err != nil {
		t.Fatalf("releasing UDP port %s: %v", addr, err)
	}
	return addr
}

// freeTCPAddr returns a loopback TCP address that was free a moment ago.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free TCP port: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("releasing TCP port %s: %v", addr, err)
	}
	return addr
}

// config is a daemon configuration file, key by key.
type config map[string]any

// baseConfig is the configuration every test starts from: long interval (so
// only the final flush on SIGTERM publishes), no self-metrics, no forwarding.
func baseConfig(udpAddr, httpAddr, apiURL string) config {
	return config{
		"udp_address":            udpAddr,
		"http_address":           httpAddr,
		"api_hostname":           apiURL,
		"key":                    apiKey,
		"interval":               "1h",
		"hostname":               hostName,
		"percentiles":            []float64{0.5},
		"num_workers":            4,
		"num_readers":            1,
		"metric_max_length":      4096,
		"flush_max_per_body":     1000,
		"read_buffer_size_bytes": 2 << 20,
		"stats_address":          "",
		"forward_address":        "",
	}
}

// writeConfig writes cfg as YAML into the test's temporary directory.
func writeConfig(t *testing.T, cfg config) string {
	t.Helper()
	out, err := yaml.Marshal(map[string]any(cfg))
	if err != nil {
		t.Fatalf("encoding config: %v", err)
	}
	f, err := os.CreateTemp(t.TempDir(), "veneur-*.yaml")
	if err != nil {
		t.Fatalf("creating config file: %v", err)
	}
	if _, err := f.Write(out); err != nil {
		t.Fatalf("writing config file: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("closing config file: %v", err)
	}
	return f.Name()
}

// daemon is one running veneur process.
type daemon struct {
	udpAddr  string
	httpAddr string
	config   string // YAML text, for failure logs
	fake     *fakeDD
	cmd      *exec.Cmd
	stdout   *syncBuffer
	stderr   *syncBuffer
	done     chan struct{} // closed when the process has exited
	exitCode int           // valid once done is closed
	stopOnce sync.Once
	paused   bool // SIGSTOPped by pause; terminate resumes it
	// scheme and client reach http_address: https, trusting the
	// configured authority, when the config serves it over TLS.
	scheme string
	client *http.Client
}

var errAddrInUse = errors.New("address already in use")

// startDaemon starts veneur on a fresh config (baseConfig adjusted by tweak,
// which may be nil), pointed at fake (nil means api_hostname ""), waits for
// /healthcheck and arranges for SIGTERM, an exit-code check and output
// logging at the end of the test.
func startDaemon(t *testing.T, fake *fakeDD, tweak func(config)) *daemon {
	t.Helper()
	const attempts = 3
	for attempt := 1; ; attempt++ {
		d, err := tryStartDaemon(t, fake, tweak)
		if err == nil {
			t.Cleanup(func() {
				d.terminate(t, syscall.SIGTERM)
				if fake != nil {
					fake.assertNoViolations(t)
				}
				if t.Failed() {
					d.logOutput(t)
				}
			})
			return d
		}
		if errors.Is(err, errAddrInUse) && attempt < attempts {
			t.Logf("start attempt %d: %v; retrying on new ports", attempt, err)
			continue
		}
		t.Fatalf("starting veneur: %v", err)
	}
}

func tryStartDaemon(t *testing.T, fake *fakeDD, tweak func(config)) (*daemon, error) {
	apiURL := ""
	if fake != nil {
		apiURL = fake.URL()
	}
	cfg := baseConfig(freeUDPAddr(t), freeTCPAddr(t), apiURL)
	if tweak != nil {
		tweak(cfg)
	}
	return launch(t, fake, cfg, cfg["udp_address"].(string), cfg["http_address"].(string), func(path string) *exec.Cmd {
		return exec.Command(binPath(), "-f", path)
	})
}

// launch writes cfg, starts the command command builds for the config's
// path, and waits for /healthcheck on httpAddr. udpAddr is where the
// daemon takes UDP (it may differ from the config's udp_address when the
// daemon inherits its sockets).
func launch(t *testing.T, fake *fakeDD, cfg config, udpAddr, httpAddr string, command func(path string) *exec.Cmd) (*daemon, error) {
	path := writeConfig(t, cfg)
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading back %s: %w", path, err)
	}
	scheme, client := "http", http.DefaultClient
	if _, ok := cfg["http_tls_certificate"]; ok {
		pool := x509.NewCertPool()
		if ca, ok := cfg["http_tls_authority_certificate"].(string); ok {
			pool.AppendCertsFromPEM([]byte(ca))
		}
		scheme, client = "https", &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	d := &daemon{
		scheme:   scheme,
		client:   client,
		udpAddr:  udpAddr,
		httpAddr: httpAddr,
		config:   string(text),
		fake:     fake,
		stdout:   &syncBuffer{},
		stderr:   &syncBuffer{},
		done:     make(chan struct{}),
	}
	d.cmd = command(path)
	d.cmd.Stdout = d.stdout
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("running %s: %w", d.cmd.Path, err)
	}
	go func() {
		_ = d.cmd.Wait()
		d.exitCode = d.cmd.ProcessState.ExitCode()
		close(d.done)
	}()
	if err := d.waitHealthy(); err != nil {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		out := d.stderr.String() + d.stdout.String()
		err = fmt.Errorf("%w\nconfig:\n%s\nstderr:\n%s\nstdout:\n%s", err, d.config, d.stderr.String(), d.stdout.String())
		if strings.Contains(out, "address already in use") {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return nil, err
	}
	return d, nil
}

// waitHealthy polls /healthcheck until it answers 200, the process exits,
// or startTimeout passes.
func (d *daemon) waitHealthy() error {
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last error
	for {
		code, err := d.health()
		if err == nil && code == http.StatusOK {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("status %d", code)
		}
		last = err
		select {
		case <-d.done:
			return fmt.Errorf("daemon exited with code %d before /healthcheck answered 200", d.exitCode)
		case <-deadline.C:
			return fmt.Errorf("/healthcheck did not answer 200 within %v (last: %v)", startTimeout, last)
		case <-tick.C:
		}
	}
}

// health performs one GET /healthcheck.
func (d *daemon) health() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.scheme+"://"+d.httpAddr+"/healthcheck", nil)
	if err != nil {
		return 0, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// terminate sends sig (once per daemon), waits for the exit and fails the
// test unless the daemon exits 0 in time.
func (d *daemon) terminate(t *testing.T, sig syscall.Signal) {
	t.Helper()
	d.stopOnce.Do(func() {
		select {
		case <-d.done:
			t.Errorf("veneur exited on its own with code %d before %v was sent", d.exitCode, sig)
			return
		default:
		}
		if err := d.cmd.Process.Signal(sig); err != nil {
			t.Errorf("sending %v to veneur: %v", sig, err)
		}
		if d.paused {
			// The signal is now pending; resuming lets the daemon see it
			// with everything sent while it was stopped still queued.
			if err := d.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Errorf("resuming veneur with SIGCONT: %v", err)
			}
		}
		timer := time.NewTimer(stopTimeout)
		defer timer.Stop()
		select {
		case <-d.done:
		case <-timer.C:
			_ = d.cmd.Process.Kill()
			<-d.done
			t.Errorf("veneur did not exit within %v of %v; killed it", stopTimeout, sig)
			return
		}
		if d.exitCode != 0 {
			t.Errorf("veneur exit code after %v = %d, want 0", sig, d.exitCode)
		}
	})
}

// pause stops the daemon with SIGSTOP and waits until the kernel reports it
// stopped, so that datagrams sent afterwards queue up in its socket buffer.
// terminate resumes it. Linux only (it reads /proc).
func (d *daemon) pause(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("stopping veneur with SIGSTOP: %v", err)
	}
	d.paused = true
	stat := fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid)
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(stat)
		if err != nil {
			t.Fatalf("reading %s: %v", stat, err)
		}
		// The state follows the parenthesised command name: "pid (comm) T ...".
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'T' {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("veneur not in stopped state %v after SIGSTOP: %s", startTimeout, b)
		case <-tick.C:
		}
	}
}

// stopAndCollect sends SIGTERM, waits for the exit (after which the final
// flush has been answered) and returns every request the API received.
func (d *daemon) stopAndCollect(t *testing.T) []apiRequest {
	t.Helper()
	d.terminate(t, syscall.SIGTERM)
	return d.fake.snapshot()
}

func (d *daemon) logOutput(t *testing.T) {
	t.Helper()
	t.Logf("veneur config:\n%s", d.config)
	t.Logf("veneur stderr:\n%s", d.stderr.String())
	t.Logf("veneur stdout:\n%s", d.stdout.String())
}

// outputLen is the combined length of what the daemon has written so far,
// a mark for waitOutput.
func (d *daemon) outputLen() (stderr, stdout int) {
	return len(d.stderr.String()), len(d.stdout.String())
}

// waitOutput polls the daemon's output written after the mark from
// outputLen until it matches re.
func (d *daemon) waitOutput(t *testing.T, timeout time.Duration, errMark, outMark int, re *regexp.Regexp) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		if re.MatchString(d.stderr.String()[errMark:]) || re.MatchString(d.stdout.String()[outMark:]) {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("veneur output did not match %q within %v", re, timeout)
		case <-tick.C:
		}
	}
}

// newClient returns the official DogStatsD client aimed at d, with every
// client-side transformation (telemetry, aggregation, origin tags) off.
func newClient(t *testing.T, d *daemon, opts ...statsd.Option) *statsd.Client {
	t.Helper()
	all := append([]statsd.Option{
		statsd.WithoutTelemetry(),
		statsd.WithoutClientSideAggregation(),
		statsd.WithoutOriginDetection(),
	}, opts...)
	c, err := statsd.New(d.udpAddr, all...)
	if err != nil {
		t.Fatalf("creating DogStatsD client for %s: %v", d.udpAddr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// must fails the test on a client error.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("DogStatsD client: %v", err)
	}
}

// flushClient pushes everything the client buffered onto the socket.
func flushClient(t *testing.T, c *statsd.Client) {
	t.Helper()
	must(t, c.Flush())
}

// sendRaw sends each datagram as-is over a plain UDP socket.
func sendRaw(t *testing.T, d *daemon, datagrams ...string) {
	t.Helper()
	conn, err := net.Dial("udp", d.udpAddr)
	if err != nil {
		t.Fatalf("dialing %s: %v", d.udpAddr, err)
	}
	defer conn.Close()
	for _, dg := range datagrams {
		n, err := conn.Write([]byte(dg))
		if err != nil {
			t.Fatalf("sending %q: %v", dg, err)
		}
		if n != len(dg) {
			t.Fatalf("sent %d of %d bytes of %q", n, len(dg), dg)
		}
	}
}

// want is the expected content of one series.
type want struct {
	Type     string
	Value    float64
	Interval float64 // only for rate
	Tags     []string
	Host     string
	Device   string
}

func gauge(v float64, tags ...string) want {
	return want{Type: "gauge", Value: v, Tags: tags, Host: hostName}
}

func rate(v, interval float64, tags ...string) want {
	return want{Type: "rate", Value: v, Interval: interval, Tags: tags, Host: hostName}
}

// approx compares floats with a relative tolerance of 1e-9.
func approx(got, want float64) bool {
	if got == want {
		return true
	}
	return math.Abs(got-want) <= 1e-9*math.Max(math.Abs(got), math.Abs(want))
}

// findSeries returns every series called name across reqs.
func findSeries(reqs []apiRequest, name string) []series {
	var out []series
	for _, s := range allSeries(reqs) {
		if s.Metric == name {
			out = append(out, s)
		}
	}
	return out
}

// onlySeries returns the single series called name, failing the test when
// there is none or more than one.
func onlySeries(t *testing.T, reqs []apiRequest, name string) series {
	t.Helper()
	found := findSeries(reqs, name)
	if len(found) != 1 {
		t.Fatalf("want exactly 1 series %q, got %d; received:%s", name, len(found), describe(reqs))
	}
	return found[0]
}

// checkSeries compares s with w field by field.
func checkSeries(t *testing.T, s series, w want) {
	t.Helper()
	if s.Type != w.Type {
		t.Errorf("%s: type %q, want %q", s.Metric, s.Type, w.Type)
	}
	if !approx(s.Value, w.Value) {
		t.Errorf("%s: value %v, want %v", s.Metric, s.Value, w.Value)
	}
	if s.Interval != w.Interval {
		t.Errorf("%s: interval %v, want %v", s.Metric, s.Interval, w.Interval)
	}
	if !slices.Equal(s.Tags, w.Tags) {
		t.Errorf("%s: tags %q, want %q", s.Metric, s.Tags, w.Tags)
	}
	if s.Host != w.Host {
		t.Errorf("%s: host %q, want %q", s.Metric, s.Host, w.Host)
	}
	if s.Device != w.Device {
		t.Errorf("%s: device_name %q, want %q", s.Metric, s.Device, w.Device)
	}
}

// expectSeries asserts that exactly one series called name arrived and that
// it matches w.
func expectSeries(t *testing.T, reqs []apiRequest, name string, w want) {
	t.Helper()
	checkSeries(t, onlySeries(t, reqs, name), w)
}

// seriesNames returns the sorted, de-duplicated names of all series.
func seriesNames(reqs []apiRequest) []string {
	var out []string
	for _, s := range allSeries(reqs) {
		out = append(out, s.Metric)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// expectNames asserts that the set of series names is exactly names.
func expectNames(t *testing.T, reqs []apiRequest, names ...string) {
	t.Helper()
	w := slices.Clone(names)
	slices.Sort(w)
	if got := seriesNames(reqs); !slices.Equal(got, w) {
		t.Errorf("series names %q, want %q", got, w)
	}
}
