//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// globalConfig renders the config of the global under test: it listens
// for forwards on http_address (/import) and grpc_address, takes as many
// imports at once as there are locals, and flushes every second to the
// stand-in API. udp_address only satisfies the config check.
func globalConfig(udpPort, httpPort, grpcPort, apiPort, workers, locals int) string {
	return fmt.Sprintf(`udp_address: "127.0.0.1:%d"
http_address: "127.0.0.1:%d"
grpc_address: "127.0.0.1:%d"
api_hostname: "http://127.0.0.1:%d"
key: %q
interval: "1s"
hostname: "loadgen-global"
percentiles: [0.5, 0.99]
aggregates: ["min", "max", "count"]
num_workers: %d
num_readers: 1
import_max_concurrency: %d
flush_max_per_body: 5000
stats_address: ""
forward_address: ""
`, udpPort, httpPort, grpcPort, apiPort, apiKey, workers, locals)
}

// globalProc is a running global veneur.
type globalProc struct {
	*child
	httpPort, grpcPort int
}

// startGlobal starts a global veneur pinned to the server CPU, returning
// once /healthcheck answers 200.
func (d *driver) startGlobal(ctx context.Context) (*globalProc, error) {
	var lastErr error
	for attempt := range 3 {
		var ports [3]int
		for i := range ports {
			p, err := freeTCPPort()
			if err != nil {
				return nil, err
			}
			ports[i] = p
		}
		cfg := filepath.Join(d.tmp, fmt.Sprintf("global-%d.yaml", attempt))
		body := globalConfig(ports[0], ports[1], ports[2], d.apiPort, d.opts.workers, d.opts.locals)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			return nil, fmt.Errorf("writing the global's config: %w", err)
		}
		c, err := startChild([]string{d.veneurPath, "-f", cfg}, d.serverCPU, nil)
		if err != nil {
			return nil, err
		}
		err = waitHealthy(ctx, c, fmt.Sprintf("http://127.0.0.1:%d/healthcheck", ports[1]), 15*time.Second)
		if err == nil {
			return &globalProc{child: c, httpPort: ports[1], grpcPort: ports[2]}, nil
		}
		c.kill()
		lastErr = err
		if !strings.Contains(c.output.String(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

// dialer makes the senders of transport to 127.0.0.1:port.
func dialer(transport string, port int) func() (flushSender, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if transport == transportGRPC {
		return func() (flushSender, error) { return newGRPCSender(addr) }
	}
	return func() (flushSender, error) { return newHTTPSender(addr), nil }
}

// globalTrial runs one global workload over one transport against one
// server: a fresh global veneur, or a bare receiver.
func (d *driver) globalTrial(ctx context.Context, g globalWorkload, flushes []localFlush, transport, server string) globalResult {
	if server == serverBare {
		return d.globalBareTrial(ctx, g, flushes, transport)
	}
	res := globalResult{workload: g.name, transport: transport, server: serverVeneur, countersPublished: -1}
	d.api.reset()
	v, err := d.startGlobal(ctx)
	if err != nil {
		res.err = err
		return res
	}
	defer v.kill()
	port := v.httpPort
	if transport == transportGRPC {
		port = v.grpcPort
	}
	cpu0, err := procCPUSeconds(v.pid())
	if err != nil {
		res.err = err
		return res
	}
	load0 := d.snapLoad()
	start := time.Now()
	res.sent, err = runLocals(ctx, d.opts.locals, flushes, dialer(transport, port), d.opts.trialGlobal)
	if err != nil {
		res.err = err
		return res
	}
	rss, rssErr := procPeakRSS(v.pid())
	if err := v.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		res.err = fmt.Errorf("sending SIGTERM to the global: %w", err)
		return res
	}
	if !v.wait(30 * time.Second) {
		res.err = fmt.Errorf("the global did not exit within 30s of SIGTERM")
		return res
	}
	res.wall = time.Since(start).Seconds()
	if code := v.cmd.ProcessState.ExitCode(); code != 0 {
		res.err = fmt.Errorf("the global exited with status %d after SIGTERM: %s", code, v.output.String())
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
	res.cpuSeconds, res.peakRSS = cpu1-cpu0, rss
	if !d.api.waitIdle(5 * time.Second) {
		res.notes = append(res.notes, "API still busy 5s after the global exited")
	}
	res.otherSrv, res.otherDrv = otherLoadShares(load0, d.snapLoad(), res.cpuSeconds)
	posts, apiErrs := d.api.snapshot()
	if n := d.api.repeated(); n > 0 {
		res.notes = append(res.notes, fmt.Sprintf("%d POST bodies arrived twice (sent again after a slow answer), counted once", n))
	}
	for _, e := range apiErrs {
		res.notes = append(res.notes, "API: "+e)
	}
	res.countersPublished = 0
	for _, p := range posts {
		res.countersPublished += p.counterSum
		if p.badCounters > 0 {
			res.notes = append(res.notes, fmt.Sprintf("%d counter series were not type rate with an interval", p.badCounters))
		}
	}
	return res
}

// globalBareTrial is globalTrial against a bare receiver.
func (d *driver) globalBareTrial(ctx context.Context, g globalWorkload, flushes []localFlush, transport string) globalResult {
	res := globalResult{workload: g.name, transport: transport, server: serverBare, countersPublished: -1}
	var stdin io.WriteCloser
	var lines <-chan string
	c, err := startChild([]string{d.self, "-mode", "global-bare", "-transport", transport}, d.serverCPU, func(cmd *exec.Cmd) error {
		in, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		stdin, lines = in, lineReader(out)
		return nil
	})
	if err != nil {
		res.err = err
		return res
	}
	defer c.kill()
	defer stdin.Close()
	var port int
	l, err := readLine(lines, 10*time.Second)
	if err == nil {
		_, err = fmt.Sscanf(l, "ready %d", &port)
	}
	if err != nil {
		res.err = fmt.Errorf("the bare %s receiver did not start: %w; output: %s", transport, err, c.output.String())
		return res
	}
	cpu0, err := procCPUSeconds(c.pid())
	if err != nil {
		res.err = err
		return res
	}
	load0 := d.snapLoad()
	start := time.Now()
	res.sent, err = runLocals(ctx, d.opts.locals, flushes, dialer(transport, port), d.opts.trialGlobal)
	if err != nil {
		res.err = err
		return res
	}
	cpu1, err := procCPUSeconds(c.pid())
	if err != nil {
		res.err = err
		return res
	}
	res.wall = time.Since(start).Seconds()
	res.cpuSeconds = cpu1 - cpu0
	res.otherSrv, res.otherDrv = otherLoadShares(load0, d.snapLoad(), res.cpuSeconds)
	if res.peakRSS, err = procPeakRSS(c.pid()); err != nil {
		res.err = err
	}
	stdin.Close()
	if !c.wait(5 * time.Second) {
		res.notes = append(res.notes, "the bare receiver did not exit within 5s of its stdin closing")
	}
	return res
}

// runGlobal runs every global workload over every transport against every
// server, and returns their results.
func (d *driver) runGlobal(ctx context.Context, names []string, stderr io.Writer) ([]globalResult, error) {
	var out []globalResult
	for _, name := range names {
		g, _ := globalWorkloadByName(name) // validated with the options
		flushes, err := buildFlushes(g, 4)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(stderr, "workload %s: %d locals, each flush %s (%d series; %.0f KiB as deflated JSON, %.0f KiB as protobuf)\n",
			g.name, d.opts.locals, g.desc, g.series(), float64(len(flushes[0].body))/1024, float64(wireBytes(flushes[0]))/1024)
		for _, transport := range d.opts.transports {
			for _, server := range orderedServers(d.opts.servers) {
				r := d.globalTrial(ctx, g, flushes, transport, server)
				if ctx.Err() != nil {
					return nil, fmt.Errorf("interrupted: %w", ctx.Err())
				}
				fmt.Fprintln(stderr, r.summary())
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// wireBytes is the size of a flush's protobuf messages.
func wireBytes(f localFlush) int {
	n := 0
	for _, m := range f.msgs {
		n += len(m.B)
	}
	return n
}
