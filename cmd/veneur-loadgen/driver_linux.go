package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// driver runs the benchmark: it owns the stand-in API, the server CPU
// choice and the temporary directory of the run.
type driver struct {
	opts          options
	api           *standInAPI
	apiPort       int
	tmp           string
	self          string // this executable, for the bare reader
	veneurPath    string
	veneurSource  string // where the veneur binary came from
	serverCPU     int    // -1 when not pinned
	driverCPU     int
	rcvbufGranted int
	loadAvgStart  string
	log           io.Writer
}

func (d *driver) trialLength(w workload) time.Duration {
	if w.strict {
		return d.opts.trialStrict
	}
	return d.opts.trial
}

func runDriver(o options, stdout, stderr io.Writer) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	d := &driver{opts: o, log: stderr, serverCPU: -1}
	d.tmp, err = os.MkdirTemp("", "veneur-loadgen-")
	if err != nil {
		return fmt.Errorf("creating a temporary directory: %w", err)
	}
	defer os.RemoveAll(d.tmp)
	if d.self, err = os.Executable(); err != nil {
		return fmt.Errorf("finding this executable to start the bare reader: %w", err)
	}

	if slices.Contains(o.servers, serverVeneur) {
		d.veneurPath, d.veneurSource = o.veneurPath, "given with -veneur"
		if d.veneurPath == "" {
			d.veneurSource = "built from ./cmd/veneur at " + gitRevision(ctx)
			d.veneurPath = filepath.Join(d.tmp, "veneur")
			fmt.Fprintln(stderr, "building veneur: go build -o", d.veneurPath, "./cmd/veneur")
			build := exec.CommandContext(ctx, "go", "build", "-o", d.veneurPath, "./cmd/veneur")
			build.Stdout, build.Stderr = stderr, stderr
			if err := build.Run(); err != nil {
				return fmt.Errorf("building ./cmd/veneur: %w; run from the module root or pass -veneur PATH", err)
			}
		}
	}

	d.loadAvgStart = loadAverage()
	pinNote, err := d.pin()
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, pinNote)

	// The stand-in Datadog API runs in this process, on the driver CPU.
	d.api = newStandInAPI(apiKey)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("stand-in API listen on 127.0.0.1:0: %w", err)
	}
	d.apiPort = ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: d.api, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	rep := &report{servers: orderedServers(o.servers)}
	var udpNames, globalNames []string
	for _, name := range o.workloads {
		if isGlobalWorkload(name) {
			globalNames = append(globalNames, name)
		} else {
			udpNames = append(udpNames, name)
		}
	}
	for _, name := range udpNames {
		w, _ := workloadByName(name) // validated with the options
		wr := newWorkloadReport(w, o.firstFixedRate())
		rep.workloads = append(rep.workloads, wr)
		r, err := buildRing(w)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "workload %s: %s; %d datagrams of %d lines in the ring, %.1f KiB\n",
			w.name, w.desc, r.len(), w.perDgram, float64(len(r.buf))/1024)
		for _, s := range rep.servers {
			bs := newBisector(w.lo, w.hi, o.maxTrials, o.precision)
			repeats := 0
			for {
				rate, ok := bs.next()
				if !ok {
					break
				}
				// The rate passes when -confirm trials in a row pass at it.
				first := len(wr.search[s])
				pass, achieved, startFailed := true, math.Inf(1), false
				for range o.confirm {
					t := d.trial(ctx, s, w, r, rate)
					if ctx.Err() != nil {
						return fmt.Errorf("interrupted: %w", ctx.Err())
					}
					if t.noisyFailure() && repeats < maxNoisyRepeats {
						repeats++
						fmt.Fprintln(stderr, t.summary()+"; other processes took a benchmark CPU, repeating")
						wr.search[s] = append(wr.search[s], t)
						t = d.trial(ctx, s, w, r, rate)
						if ctx.Err() != nil {
							return fmt.Errorf("interrupted: %w", ctx.Err())
						}
					}
					fmt.Fprintln(stderr, t.summary())
					wr.search[s] = append(wr.search[s], t)
					achieved = math.Min(achieved, t.sent.rate())
					if !t.pass {
						pass, startFailed = false, t.startFailed
						break
					}
				}
				if startFailed {
					break
				}
				if !pass {
					for i := first; i < len(wr.search[s]); i++ {
						wr.search[s][i].unconfirmed = true
					}
				}
				if o.confirm > 1 {
					note, _ := confirmations(wr.search[s][first:])
					fmt.Fprintf(stderr, "[%s %s] %s\n", w.name, s, note)
				}
				bs.record(rate, achieved, pass)
			}
		}
		for _, rate := range o.fixedRates {
			for _, s := range rep.servers {
				if n := len(wr.search[s]); n > 0 && wr.search[s][n-1].startFailed {
					continue
				}
				for range o.confirm {
					t := d.trial(ctx, s, w, r, rate)
					if ctx.Err() != nil {
						return fmt.Errorf("interrupted: %w", ctx.Err())
					}
					fmt.Fprintln(stderr, "fixed rate", t.summary())
					wr.fixed[s] = append(wr.fixed[s], t)
				}
			}
		}
	}
	if len(globalNames) > 0 {
		if rep.global, err = d.runGlobal(ctx, globalNames, stderr); err != nil {
			return err
		}
		rep.globalHeader = fmt.Sprintf("Global workloads: %d simulated locals forward to a global (num_workers %d, interval 1s) as fast as it answers, for %v per transport and server; CPU s is the server's from the start of sending to its exit",
			o.locals, o.workers, o.trialGlobal)
		if !slices.Equal(o.globals, []int{1}) {
			rep.globalHeader += fmt.Sprintf("; veneur as a tier of %s globals (-globals), each global with that config and its own ports", joinInts(o.globals))
		}
	}
	rep.header = d.header(pinNote, len(udpNames) > 0)
	fmt.Fprintln(stdout)
	rep.render(stdout)
	for _, wr := range rep.workloads {
		for s, trials := range wr.search {
			if n := len(trials); n > 0 && trials[n-1].startFailed {
				return fmt.Errorf("the %s server did not start for workload %s: %w", s, wr.w.name, trials[n-1].err)
			}
		}
	}
	return nil
}

func (d *driver) trial(ctx context.Context, server string, w workload, r *ring, rate float64) trialResult {
	if server == serverBare {
		return d.bareTrial(ctx, w, r, rate)
	}
	return d.veneurTrial(ctx, w, r, rate)
}

// pin puts the server on one CPU and this process (sender and stand-in API)
// on another. With fewer than two CPUs, or without taskset, nothing is
// pinned and the note says so.
func (d *driver) pin() (string, error) {
	cpus, err := allowedCPUs()
	if err != nil {
		return "", err
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return fmt.Sprintf("NOT PINNED: taskset not found (%v); install util-linux. Figures include scheduling noise.", err), nil
	}
	if len(cpus) < 2 {
		return fmt.Sprintf("NOT PINNED: only %d CPU allowed; server, sender and API share it.", len(cpus)), nil
	}
	server, drv := cpus[0], cpus[1]
	if d.opts.serverCPU >= 0 {
		server = d.opts.serverCPU
	}
	if d.opts.driverCPU >= 0 {
		drv = d.opts.driverCPU
	}
	if server == drv {
		return "", fmt.Errorf("-server-cpu and -driver-cpu are both %d; pick two different CPUs", server)
	}
	if !slices.Contains(cpus, server) || !slices.Contains(cpus, drv) {
		return "", fmt.Errorf("CPUs %d and %d must both be in the allowed set %v; pick others with -server-cpu and -driver-cpu", server, drv, cpus)
	}
	if err := pinProcess(drv); err != nil {
		return "", err
	}
	d.serverCPU, d.driverCPU = server, drv
	return fmt.Sprintf("pinned: server on CPU %d (taskset -c %d), sender and stand-in API on CPU %d", server, server, drv), nil
}

// header describes the machine and the run; udp adds the settings of the
// DogStatsD workloads.
func (d *driver) header(pinNote string, udp bool) []string {
	h := []string{
		"veneur load benchmark, " + time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		fmt.Sprintf("machine: %d CPUs (nproc), %s, Linux %s, %s", runtime.NumCPU(), cpuModel(), kernelRelease(), runtime.Version()),
		pinNote,
		fmt.Sprintf("load average (1, 5, 15 min) at start %s, at end %s; \"other load\" is the share of the server/driver CPU other processes took during the trial", d.loadAvgStart, loadAverage()),
	}
	if !udp {
		if slices.Contains(d.opts.servers, serverVeneur) {
			h = append(h, fmt.Sprintf("veneur: %s (%s)", d.veneurPath, d.veneurSource))
		}
		return h
	}
	rmem := strings.TrimSpace(readSmallFile("/proc/sys/net/core/rmem_max"))
	granted := ""
	if d.rcvbufGranted > 0 {
		granted = fmt.Sprintf("; SO_RCVBUF granted to the bare reader: %d", d.rcvbufGranted)
	}
	h = append(h, fmt.Sprintf("receive buffer: both servers ask for %d bytes (veneur via read_buffer_size_bytes); net.core.rmem_max %s, the kernel grants at most twice that%s",
		d.opts.rcvbuf, rmem, granted))
	h = append(h, fmt.Sprintf("trials: %v each (c: %v), at most %d per workload and server, precision %.0f%%; datagrams packed to %d bytes, sendmmsg batches of up to %d",
		d.opts.trial, d.opts.trialStrict, d.opts.maxTrials, d.opts.precision*100, maxDatagramBytes, sendBatchMax))
	if slices.Contains(d.opts.servers, serverVeneur) {
		h = append(h, fmt.Sprintf("veneur: %s (%s), num_workers %d, num_readers 1, interval 1s (c: 2s), flush_max_per_body 5000", d.veneurPath, d.veneurSource, d.opts.workers))
	}
	return h
}

func cpuModel() string {
	for l := range strings.SplitSeq(readSmallFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return string(bytes.TrimRight(u.Release[:], "\x00"))
}

// gitRevision names the checked-out commit, marked dirty when the tree has
// changes, or "an unknown revision" outside a git checkout.
func gitRevision(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "an unknown revision"
	}
	return "git " + strings.TrimSpace(string(out))
}

func loadAverage() string {
	f := strings.Fields(readSmallFile("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func readSmallFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return string(b)
}

// joinInts renders ns as "1, 2 and 3".
func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// orderedServers puts the bare reader first, the reference for the ratios.
func orderedServers(list []string) []string {
	var out []string
	for _, s := range []string{serverBare, serverVeneur} {
		if slices.Contains(list, s) {
			out = append(out, s)
		}
	}
	return out
}

// loadSnap is a reading of both CPUs' busy time and of this process's CPU
// time, to tell how much of each CPU other processes took during a trial.
type loadSnap struct {
	srvBusy, srvTotal, drvBusy, drvTotal uint64
	self                                 float64 // seconds
	ok                                   bool
}

func (d *driver) snapLoad() loadSnap {
	if d.serverCPU < 0 {
		return loadSnap{}
	}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return loadSnap{}
	}
	var s loadSnap
	var err1, err2, err3 error
	s.srvBusy, s.srvTotal, err1 = parseCPUTimes(stat, d.serverCPU)
	s.drvBusy, s.drvTotal, err2 = parseCPUTimes(stat, d.driverCPU)
	s.self, err3 = procCPUSeconds(os.Getpid())
	s.ok = err1 == nil && err2 == nil && err3 == nil
	return s
}

// otherLoad sets the share of the server and driver CPUs that processes
// other than the server and the driver used between a and b, where the
// server used serverCPU seconds. NaN when unknown.
func (r *trialResult) otherLoad(a, b loadSnap, serverCPU float64) {
	r.otherSrv, r.otherDrv = otherLoadShares(a, b, serverCPU)
}

// otherLoadShares is the share of the server and driver CPUs that other
// processes used between a and b, where the server used serverCPU
// seconds; NaN when unknown.
func otherLoadShares(a, b loadSnap, serverCPU float64) (srvShare, drvShare float64) {
	if !a.ok || !b.ok || b.srvTotal <= a.srvTotal || b.drvTotal <= a.drvTotal {
		return math.NaN(), math.NaN()
	}
	srv := float64(b.srvBusy-a.srvBusy) - serverCPU*clockTicksPerSecond
	drv := float64(b.drvBusy-a.drvBusy) - (b.self-a.self)*clockTicksPerSecond
	return math.Max(0, srv/float64(b.srvTotal-a.srvTotal)), math.Max(0, drv/float64(b.drvTotal-a.drvTotal))
}
