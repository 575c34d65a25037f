//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/veneur/veneur/samplers"
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

// startGlobal starts global number index of a trial, pinned to the
// server CPU, returning once /healthcheck answers 200.
func (d *driver) startGlobal(ctx context.Context, index int) (*globalProc, error) {
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
		cfg := filepath.Join(d.tmp, fmt.Sprintf("global-%d-%d.yaml", index, attempt))
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

// forwardURL is the address a local that forwards to g over transport
// has in forward_addresses, the member string of the ring.
func (g *globalProc) forwardURL(transport string) string {
	if isGRPC(transport) {
		return fmt.Sprintf("grpc://127.0.0.1:%d", g.grpcPort)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", g.httpPort)
}

// port is g's port for transport.
func (g *globalProc) port(transport string) int {
	if isGRPC(transport) {
		return g.grpcPort
	}
	return g.httpPort
}

// globalTrial runs one global workload over one transport against a bare
// receiver, or against a fresh tier of n global veneurs (all pinned to the
// server CPU) over which the locals shard every flush of fwds.
func (d *driver) globalTrial(ctx context.Context, g globalWorkload, fwds [][]samplers.Forwarded, flushes []localFlush, transport, server string, n int) globalResult {
	if server == serverBare {
		return d.globalBareTrial(ctx, g, flushes, transport)
	}
	res := globalResult{workload: g.name, transport: transport, server: serverVeneur, globals: n, countersPublished: -1}
	d.api.reset()
	procs := make([]*globalProc, 0, n)
	defer func() {
		for _, v := range procs {
			v.kill()
		}
	}()
	urls := make([]string, 0, n)
	dials := make([]func() (flushSender, error), 0, n)
	for i := range n {
		v, err := d.startGlobal(ctx, i)
		if err != nil {
			res.err = fmt.Errorf("global %d of %d: %w", i+1, n, err)
			return res
		}
		procs = append(procs, v)
		urls = append(urls, v.forwardURL(transport))
		dials = append(dials, dialer(transport, v.port(transport)))
	}
	parts, err := tierFlushes(fwds, urls)
	if err != nil {
		res.err = err
		return res
	}
	cpu0 := make([]float64, n)
	for i, v := range procs {
		if cpu0[i], err = procCPUSeconds(v.pid()); err != nil {
			res.err = err
			return res
		}
	}
	load0 := d.snapLoad()
	start := time.Now()
	res.sent, err = runLocals(ctx, d.opts.locals, parts, dials, d.opts.trialGlobal)
	if err != nil {
		res.err = err
		return res
	}
	rss := make([]uint64, n)
	rssErr := make([]error, n)
	for i, v := range procs {
		rss[i], rssErr[i] = procPeakRSS(v.pid())
		if err := v.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			res.err = fmt.Errorf("sending SIGTERM to global %d: %w", i+1, err)
			return res
		}
	}
	for i, v := range procs {
		if !v.wait(30 * time.Second) {
			res.err = fmt.Errorf("global %d did not exit within 30s of SIGTERM", i+1)
			return res
		}
	}
	res.wall = time.Since(start).Seconds()
	for i, v := range procs {
		if code := v.cmd.ProcessState.ExitCode(); code != 0 {
			res.err = fmt.Errorf("global %d exited with status %d after SIGTERM: %s", i+1, code, v.output.String())
			return res
		}
		cpu1, maxRSS, err := v.cpuAndRSS()
		if err != nil {
			res.err = err
			return res
		}
		if rssErr[i] == nil {
			maxRSS = max(rss[i], maxRSS)
		}
		res.cpuSeconds += cpu1 - cpu0[i]
		res.peakRSS = max(res.peakRSS, maxRSS)
		res.totalRSS += maxRSS
	}
	if !d.api.waitIdle(5 * time.Second) {
		res.notes = append(res.notes, "API still busy 5s after the globals exited")
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
	res.sent, err = runLocals(ctx, d.opts.locals, singleFlushes(flushes), []func() (flushSender, error){dialer(transport, port)}, d.opts.trialGlobal)
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
// server (veneur with each tier size of -globals), and returns their
// results.
func (d *driver) runGlobal(ctx context.Context, names []string, stderr io.Writer) ([]globalResult, error) {
	var out []globalResult
	for _, name := range names {
		g, _ := globalWorkloadByName(name) // validated with the options
		fwds, err := buildForwarded(g, 4)
		if err != nil {
			return nil, err
		}
		flushes, err := encodeFlushes(fwds)
		if err != nil {
			return nil, fmt.Errorf("workload %s: %w", g.name, err)
		}
		fmt.Fprintf(stderr, "workload %s: %d locals, each flush %s (%d series; %.0f KiB as deflated JSON, %.0f KiB as protobuf)\n",
			g.name, d.opts.locals, g.desc, g.series(), float64(len(flushes[0].body))/1024, float64(wireBytes(flushes[0]))/1024)
		for _, transport := range d.opts.transports {
			for _, server := range orderedServers(d.opts.servers) {
				tiers := d.opts.globals
				if server == serverBare {
					tiers = []int{1}
				}
				for _, n := range tiers {
					r := d.globalTrial(ctx, g, fwds, flushes, transport, server, n)
					if ctx.Err() != nil {
						return nil, fmt.Errorf("interrupted: %w", ctx.Err())
					}
					fmt.Fprintln(stderr, r.summary())
					out = append(out, r)
				}
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
