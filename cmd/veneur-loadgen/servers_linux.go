//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// veneurConfig renders the trial config. stats_address is the driver's
// socket for veneur's self-metrics (statsAddr; none when empty), apart
// from the series sent to the stand-in API; forward_address stays empty
// so that nothing forwards.
func veneurConfig(udpPort, httpPort, apiPort int, interval time.Duration, workers, rcvbuf int, statsAddr string) string {
	return fmt.Sprintf(`udp_address: "127.0.0.1:%d"
http_address: "127.0.0.1:%d"
api_hostname: "http://127.0.0.1:%d"
key: %q
interval: %q
hostname: "loadgen"
percentiles: [0.5, 0.99]
aggregates: ["min", "max", "count"]
num_workers: %d
num_readers: 1
metric_max_length: 4096
flush_max_per_body: 5000
read_buffer_size_bytes: %d
stats_address: %q
forward_address: ""
`, udpPort, httpPort, apiPort, apiKey, interval.String(), workers, rcvbuf, statsAddr)
}

// apiKey has the form of a Datadog API key (32 hexadecimal characters),
// so veneur does not warn of it in the logs the report quotes.
const apiKey = "0123456789abcdef0123456789abcdef"

// veneurProc is a running veneur.
type veneurProc struct {
	*child
	udpPort int
}

// startVeneur writes a config and starts veneur pinned to the server CPU,
// returning once /healthcheck answers 200. A port taken between choosing it
// and binding it is retried with new ports.
func (d *driver) startVeneur(ctx context.Context, interval time.Duration, statsAddr string) (*veneurProc, error) {
	var lastErr error
	for attempt := range 3 {
		udpPort, err := freeUDPPort()
		if err != nil {
			return nil, err
		}
		httpPort, err := freeTCPPort()
		if err != nil {
			return nil, err
		}
		cfg := filepath.Join(d.tmp, fmt.Sprintf("veneur-%d.yaml", attempt))
		body := veneurConfig(udpPort, httpPort, d.apiPort, interval, d.opts.workers, d.opts.rcvbuf, statsAddr)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			return nil, fmt.Errorf("writing veneur config: %w", err)
		}
		c, err := startChild([]string{d.veneurPath, "-f", cfg}, d.serverCPU, nil)
		if err != nil {
			return nil, err
		}
		err = waitHealthy(ctx, c, fmt.Sprintf("http://127.0.0.1:%d/healthcheck", httpPort), 15*time.Second)
		if err == nil {
			return &veneurProc{child: c, udpPort: udpPort}, nil
		}
		c.kill()
		lastErr = err
		if !strings.Contains(c.output.String(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

// waitHealthy polls url until it answers 200, the process exits, or the
// timeout passes.
func waitHealthy(ctx context.Context, c *child, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		if c.exited() {
			return fmt.Errorf("veneur exited during start-up (%v): %s", c.waitErr, c.output.String())
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("healthcheck request: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("veneur did not answer %s with 200 within %v; output: %s", url, timeout, c.output.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// veneurTrial sends one workload at one rate to a fresh veneur, stops it
// with SIGTERM (it drains the socket and flushes once more) and compares
// the counter lines sent with the counts that reached the stand-in API.
// veneur's self-metrics go to a socket of the driver, which keeps its
// reader gaps over the trial (start-up and shutdown included).
func (d *driver) veneurTrial(ctx context.Context, w workload, r *ring, rate float64) (res trialResult) {
	res = trialResult{workload: w.name, server: serverVeneur, target: rate}
	d.api.reset()
	stats, err := newStatsSink()
	if err != nil {
		res.err, res.startFailed = err, true
		return res
	}
	defer func() {
		g := stats.close()
		res.gaps = &g
	}()
	v, err := d.startVeneur(ctx, w.interval, stats.addr())
	if err != nil {
		res.err, res.startFailed = err, true
		return res
	}
	defer v.kill()
	s, err := newSender(r, v.udpPort)
	if err != nil {
		res.err = err
		return res
	}
	defer s.close()
	cpu0, err := procCPUSeconds(v.pid())
	if err != nil {
		res.err = err
		return res
	}
	load0 := d.snapLoad()
	start := time.Now()
	res.sent, err = s.run(ctx, rate, d.trialLength(w))
	end := time.Now()
	if err != nil {
		res.err = err
		return res
	}
	rss, rssErr := procPeakRSS(v.pid())
	if err := v.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		res.err = fmt.Errorf("sending SIGTERM to veneur: %w", err)
		return res
	}
	if !v.wait(30 * time.Second) {
		res.err = fmt.Errorf("veneur did not exit within 30s of SIGTERM")
		return res
	}
	if code := v.cmd.ProcessState.ExitCode(); code != 0 {
		res.err = fmt.Errorf("veneur exited with status %d after SIGTERM: %s", code, v.output.String())
		return res
	}
	cpu1, maxRSS, err := v.cpuAndRSS()
	if err != nil {
		res.err = err
		return res
	}
	if rssErr == nil {
		rss = max(rss, maxRSS)
	} else {
		rss = maxRSS
	}
	if !d.api.waitIdle(5 * time.Second) {
		res.notes = append(res.notes, "API still busy 5s after veneur exited")
	}
	res.otherLoad(load0, d.snapLoad(), cpu1-cpu0)
	posts, apiErrs := d.api.snapshot()
	if n := d.api.repeated(); n > 0 {
		res.notes = append(res.notes, fmt.Sprintf("%d POST bodies arrived twice (sent again after a slow answer), counted once", n))
	}
	for _, e := range apiErrs {
		res.notes = append(res.notes, "API: "+e)
	}
	var bad int
	for _, p := range posts {
		res.received += p.counterSum
		bad += p.badCounters
	}
	if bad > 0 {
		res.notes = append(res.notes, fmt.Sprintf("%d counter series were not type rate with an interval", bad))
	}
	res.cpuSeconds = cpu1 - cpu0
	res.peakRSS = rss
	res.finish(res.sent.counters)
	if w.strict {
		want, wantCounters := w.expectedSeries(histoOutputs)
		perSeries := res.sent.rate() * w.interval.Seconds() / float64(w.series)
		fc := checkFlushes(posts, start, end, w.interval, want, wantCounters, seriesJudgement(perSeries))
		res.flush = &fc
	}
	res.judge(w, len(apiErrs) > 0 || bad > 0)
	if res.loss > 0 || !res.pass {
		// What veneur said of it: drops are logged with their cause.
		for _, l := range logProblems(v.output.String(), 3) {
			res.notes = append(res.notes, "veneur: "+l)
		}
	}
	return res
}

// logProblems returns the last n warning and error lines of veneur's log
// (logrus's text format).
func logProblems(log string, n int) []string {
	var out []string
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0 && len(out) < n; i-- {
		if l := strings.TrimSpace(lines[i]); strings.Contains(l, "level=warning") || strings.Contains(l, "level=error") {
			out = append(out, l)
		}
	}
	slices.Reverse(out)
	return out
}

// bareProc is a running bare reader.
type bareProc struct {
	*child
	stdin  io.WriteCloser
	lines  <-chan string
	port   int
	rcvbuf int
}

func (d *driver) startBare() (*bareProc, error) {
	b := &bareProc{}
	c, err := startChild([]string{d.self, "-mode", "bare", "-rcvbuf", strconv.Itoa(d.opts.rcvbuf)}, d.serverCPU, func(cmd *exec.Cmd) error {
		in, err := cmd.StdinPipe()
		if err != nil {
			return fmt.Errorf("bare reader stdin: %w", err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return fmt.Errorf("bare reader stdout: %w", err)
		}
		b.stdin, b.lines = in, lineReader(out)
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.child = c
	l, err := readLine(b.lines, 10*time.Second)
	if err == nil {
		_, err = fmt.Sscanf(l, "ready %d %d", &b.port, &b.rcvbuf)
	}
	if err != nil {
		c.kill()
		return nil, fmt.Errorf("bare reader did not start: %w; output: %s", err, c.output.String())
	}
	return b, nil
}

func (b *bareProc) stats() (bareStats, error) {
	var s bareStats
	if _, err := io.WriteString(b.stdin, "stats\n"); err != nil {
		return s, fmt.Errorf("asking the bare reader for stats: %w", err)
	}
	l, err := readLine(b.lines, 5*time.Second)
	if err != nil {
		return s, fmt.Errorf("bare reader stats: %w", err)
	}
	if _, err := fmt.Sscanf(l, "stats %d %d %d %d", &s.lines, &s.datagrams, &s.bytes, &s.truncated); err != nil {
		return s, fmt.Errorf("bare reader stats line %q: %w", l, err)
	}
	return s, nil
}

// bareTrial sends one workload at one rate to a fresh bare reader and
// compares the lines sent with the lines it counted once it went quiet.
func (d *driver) bareTrial(ctx context.Context, w workload, r *ring, rate float64) trialResult {
	res := trialResult{workload: w.name, server: serverBare, target: rate}
	b, err := d.startBare()
	if err != nil {
		res.err, res.startFailed = err, true
		return res
	}
	defer b.kill()
	defer b.stdin.Close()
	d.rcvbufGranted = b.rcvbuf
	s, err := newSender(r, b.port)
	if err != nil {
		res.err = err
		return res
	}
	defer s.close()
	cpu0, err := procCPUSeconds(b.pid())
	if err != nil {
		res.err = err
		return res
	}
	load0 := d.snapLoad()
	res.sent, err = s.run(ctx, rate, d.trialLength(w))
	if err != nil {
		res.err = err
		return res
	}
	// Drained: every line counted, or the count unchanged for 100ms.
	var st bareStats
	var last uint64
	steady := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && steady < 5; {
		if st, err = b.stats(); err != nil {
			res.err = err
			return res
		}
		if st.lines >= uint64(res.sent.lines) {
			break
		}
		if st.lines == last {
			steady++
		} else {
			steady = 0
		}
		last = st.lines
		time.Sleep(20 * time.Millisecond)
	}
	cpu1, err := procCPUSeconds(b.pid())
	if err != nil {
		res.err = err
		return res
	}
	res.otherLoad(load0, d.snapLoad(), cpu1-cpu0)
	if res.peakRSS, err = procPeakRSS(b.pid()); err != nil {
		res.err = err
		return res
	}
	if st.truncated > 0 {
		res.notes = append(res.notes, fmt.Sprintf("%d datagrams truncated", st.truncated))
	}
	b.stdin.Close()
	if !b.wait(5 * time.Second) {
		res.notes = append(res.notes, "bare reader did not exit within 5s of its stdin closing")
	}
	res.received = int64(st.lines)
	res.cpuSeconds = cpu1 - cpu0
	res.finish(res.sent.lines)
	res.judge(w, st.truncated > 0)
	return res
}
