// Command veneur-loadgen is the load benchmark behind `make bench-load`.
//
// It builds veneur, starts it pinned to one CPU and flushing to a stand-in
// Datadog API, and sends it DogStatsD over loopback UDP with sendmmsg from
// another CPU. For each workload it searches, in a bounded number of trials,
// for the highest offered rate veneur takes with under 1% loss, and does the
// same against a bare reader (a recvmmsg loop that only counts lines, run by
// this binary with -mode bare) as the ceiling of the machine. It reports
// lines per second, loss, server CPU seconds per million lines and peak RSS
// side by side.
//
// The global workloads (g and d, not run by default) simulate local
// instances forwarding to a global veneur over HTTP (/import) and over
// gRPC, and report the series the global merges per CPU-second and its
// peak RSS, beside a bare receiver of each transport. With -globals 1,2,3
// veneur also runs as a tier of 2 and 3 globals, over which the simulated
// locals shard their flushes as a local with forward_addresses does.
// docs/benchmark.md describes the method and the columns.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options are the driver's settings.
type options struct {
	veneurPath  string
	workloads   []string
	servers     []string
	trial       time.Duration // trial length of workloads a and b
	trialStrict time.Duration // trial length of workload c
	maxTrials   int
	precision   float64
	// fixedRates are the rates of the fixed-rate trials, in lines/s;
	// empty skips them.
	fixedRates []float64
	// confirm is how many trials must pass at a rate for it to pass in
	// the search; each fixed rate is also run that many times.
	confirm   int
	rcvbuf    int
	workers   int
	serverCPU int
	driverCPU int
	// The global workloads: simulated locals, the sending time of a
	// trial, and the transports measured.
	locals      int
	trialGlobal time.Duration
	transports  []string
	// globals are the tier sizes veneur is measured with: for each, that
	// many globals on the server CPU, over which the locals shard.
	globals []int
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("veneur-loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mode := fs.String("mode", "driver", "driver (run the benchmark), bare (the bare reader) or global-bare (a bare receiver of forwards); the driver starts the others")
	veneur := fs.String("veneur", "", "veneur binary to test; empty builds ./cmd/veneur from the current module")
	workloads := fs.String("workloads", "a,b,c", "comma-separated workloads: a, b, c (DogStatsD), g, d (forwards to a global)")
	servers := fs.String("servers", "bare,veneur", "comma-separated servers to measure: bare, veneur")
	trial := fs.Duration("trial", 3*time.Second, "sending time of one trial of workloads a and b")
	trialStrict := fs.Duration("trial-c", 10*time.Second, "sending time of one trial of workload c (needs several 2s flushes)")
	maxTrials := fs.Int("max-trials", 6, "trials per workload and server in the rate search")
	precision := fs.Float64("precision", 0.05, "stop the search once the failing rate is within this fraction of the passing one")
	fixedRate := fs.String("fixed-rate", "100000", "lines/s of the fixed-rate trials per workload and server, comma-separated (e.g. 1000000,3000000); 0 skips them")
	confirm := fs.Int("confirm", 1, "trials that must all pass at a rate for it to pass in the search; each fixed rate runs this many trials too")
	rcvbuf := fs.Int("rcvbuf", 8<<20, "receive buffer asked for by both servers (read_buffer_size_bytes), bytes")
	workers := fs.Int("workers", 2, "veneur num_workers")
	serverCPU := fs.Int("server-cpu", -1, "CPU the server is pinned to; -1 picks the first allowed CPU")
	driverCPU := fs.Int("driver-cpu", -1, "CPU the sender and stand-in API are pinned to; -1 picks the second allowed CPU")
	quick := fs.Bool("quick", false, "short run: 1.5s trials (c: 8s, g and d: 5s), 3 search trials per server")
	locals := fs.Int("locals", 16, "workloads g and d: simulated local instances, each with its own connection")
	trialGlobal := fs.Duration("trial-g", 10*time.Second, "sending time of one trial of workloads g and d")
	transports := fs.String("transports", "http,grpc", "workloads g and d: comma-separated transports: http (/import), grpc (SendMetricsV2 with a batch id, as our locals send), grpc-v14 (without one, as veneur v14 sends)")
	globals := fs.String("globals", "1", "workloads g and d: comma-separated numbers of globals veneur runs as a tier (1 to 8 each), the locals sharding every flush over them; e.g. 1,2,3")
	transport := fs.String("transport", "", "-mode global-bare: the transport to serve, http or grpc")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments %q; all settings are flags, see -h\n", fs.Args())
		return 2
	}
	switch *mode {
	case "bare":
		return bareMain(*rcvbuf)
	case "global-bare":
		return globalBareMain(*transport)
	}
	if *mode != "driver" {
		fmt.Fprintf(stderr, "-mode %q: use driver or bare\n", *mode)
		return 2
	}
	tiers, err := parseGlobals(*globals)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	fixedRates, err := parseRates(*fixedRate)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	o := options{
		veneurPath: *veneur, workloads: splitList(*workloads), servers: splitList(*servers),
		trial: *trial, trialStrict: *trialStrict, maxTrials: *maxTrials, precision: *precision,
		fixedRates: fixedRates, confirm: *confirm, rcvbuf: *rcvbuf, workers: *workers, serverCPU: *serverCPU, driverCPU: *driverCPU,
		locals: *locals, trialGlobal: *trialGlobal, transports: splitList(*transports), globals: tiers,
	}
	if *quick {
		o.trial, o.trialStrict, o.maxTrials, o.trialGlobal = 1500*time.Millisecond, 8*time.Second, 3, 5*time.Second
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if err := runDriver(o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "veneur-loadgen:", err)
		return 1
	}
	return 0
}

func (o options) validate() error {
	if len(o.workloads) == 0 {
		return fmt.Errorf("-workloads is empty; use a, b, c, g, d or a comma-separated list of them")
	}
	for _, w := range o.workloads {
		if isGlobalWorkload(w) {
			continue
		}
		if _, err := workloadByName(w); err != nil {
			return fmt.Errorf("-workloads: unknown workload %q; use a, b, c, g or d", w)
		}
	}
	if len(o.transports) == 0 {
		return fmt.Errorf("-transports is empty; use http, grpc or both")
	}
	for _, t := range o.transports {
		if t != transportHTTP && !isGRPC(t) {
			return fmt.Errorf("-transports: unknown transport %q; use http and/or grpc", t)
		}
	}
	if len(o.globals) == 0 {
		return fmt.Errorf("-globals is empty; use 1, or a comma-separated list such as 1,2,3")
	}
	for _, n := range o.globals {
		if n < 1 || n > maxGlobals {
			return fmt.Errorf("-globals: %d globals; use 1 to %d (every global of a tier runs on the server CPU)", n, maxGlobals)
		}
	}
	if len(o.servers) == 0 {
		return fmt.Errorf("-servers is empty; use bare, veneur or both")
	}
	for _, s := range o.servers {
		if s != serverBare && s != serverVeneur {
			return fmt.Errorf("-servers: unknown server %q; use bare and/or veneur", s)
		}
	}
	switch {
	case o.trial < 500*time.Millisecond || o.trial > 5*time.Minute:
		return fmt.Errorf("-trial %v: use between 500ms and 5m", o.trial)
	case o.trialStrict < 6*time.Second || o.trialStrict > 5*time.Minute:
		return fmt.Errorf("-trial-c %v: use between 6s and 5m so that at least two 2s flushes lie inside it", o.trialStrict)
	case o.maxTrials < 1 || o.maxTrials > 20:
		return fmt.Errorf("-max-trials %d: use 1 to 20", o.maxTrials)
	case o.precision <= 0 || o.precision >= 1:
		return fmt.Errorf("-precision %v: use a fraction such as 0.05", o.precision)
	case slices.ContainsFunc(o.fixedRates, func(r float64) bool { return r <= 0 || r > 50e6 }):
		return fmt.Errorf("-fixed-rate %v: use rates up to 50000000 lines/s, or 0 alone to skip the fixed-rate trials", o.fixedRates)
	case o.confirm < 1 || o.confirm > 10:
		return fmt.Errorf("-confirm %d: use 1 to 10 trials per rate", o.confirm)
	case o.rcvbuf < 64<<10 || o.rcvbuf > 1<<30:
		return fmt.Errorf("-rcvbuf %d: use 65536 up to 1073741824 bytes", o.rcvbuf)
	case o.workers < 1 || o.workers > 64:
		return fmt.Errorf("-workers %d: use 1 to 64", o.workers)
	case o.locals < 1 || o.locals > 1000:
		return fmt.Errorf("-locals %d: use 1 to 1000", o.locals)
	case o.trialGlobal < time.Second || o.trialGlobal > 5*time.Minute:
		return fmt.Errorf("-trial-g %v: use between 1s and 5m", o.trialGlobal)
	}
	return nil
}

// firstFixedRate is the first rate of -fixed-rate, that of the targets; 0
// when there is none.
func (o options) firstFixedRate() float64 {
	if len(o.fixedRates) == 0 {
		return 0
	}
	return o.fixedRates[0]
}

// parseRates reads -fixed-rate: distinct rates in lines/s, in the order
// given; "0" alone is no rate (validate checks their range).
func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range splitList(s) {
		r, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, fmt.Errorf("-fixed-rate: %q is not a rate; use lines/s, comma-separated, such as 1000000,3000000, or 0 to skip", f)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	if len(out) == 1 && out[0] == 0 {
		return nil, nil
	}
	return out, nil
}

// maxGlobals bounds -globals: every global of a tier shares the server
// CPU.
const maxGlobals = 8

// parseGlobals reads -globals: distinct numbers of globals, in the order
// given (validate checks their range).
func parseGlobals(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("-globals: %q is not a number of globals; use a comma-separated list such as 1,2,3", f)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	seen := map[string]bool{}
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f != "" && !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}
