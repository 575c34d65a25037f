package main

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func trialAt(server string, target, achieved float64, expected, received int64, cpu float64) trialResult {
	d := 3 * time.Second
	lines := int64(achieved * d.Seconds())
	r := trialResult{server: server, target: target, sent: sendStats{lines: lines, counters: expected, elapsed: d}, received: received, cpuSeconds: cpu, peakRSS: 30 << 20}
	r.finish(expected)
	return r
}

func TestTrialJudge(t *testing.T) {
	a, _ := workloadByName("a")
	c, _ := workloadByName("c")
	tests := []struct {
		name     string
		w        workload
		r        trialResult
		anomaly  bool
		flush    *flushCheck
		wantPass bool
	}{
		{name: "no loss", w: a, r: trialAt("veneur", 1e5, 1e5, 300_000, 300_000, 0.3), wantPass: true},
		{name: "loss under 1%", w: a, r: trialAt("veneur", 1e5, 1e5, 300_000, 297_500, 0.3), wantPass: true},
		{name: "loss of 1%", w: a, r: trialAt("veneur", 1e5, 1e5, 300_000, 297_000, 0.3), wantPass: false},
		{name: "more than sent", w: a, r: trialAt("veneur", 1e5, 1e5, 300_000, 300_001, 0.3), wantPass: false},
		{name: "nothing sent", w: a, r: trialAt("veneur", 1e5, 0, 0, 0, 0), wantPass: false},
		{name: "anomaly", w: a, r: trialAt("veneur", 1e5, 1e5, 300_000, 300_000, 0.3), anomaly: true, wantPass: false},
		{name: "strict one lost", w: c, r: trialAt("veneur", 1e5, 1e5, 300_000, 299_999, 0.3), flush: &flushCheck{interior: 3, complete: 3}, wantPass: false},
		{name: "strict exact", w: c, r: trialAt("veneur", 1e5, 1e5, 300_000, 300_000, 0.3), flush: &flushCheck{interior: 3, complete: 3}, wantPass: true},
		{name: "strict flush problem", w: c, r: trialAt("veneur", 1e5, 1e5, 300_000, 300_000, 0.3), flush: &flushCheck{problems: []string{"late"}}, wantPass: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r
			r.flush = tc.flush
			r.judge(tc.w, tc.anomaly)
			if r.pass != tc.wantPass {
				t.Fatalf("pass %v, want %v (loss %v, notes %v)", r.pass, tc.wantPass, r.loss, r.notes)
			}
		})
	}
	errored := trialAt("veneur", 1e5, 1e5, 300_000, 300_000, 0.3)
	errored.err = errors.New("veneur exited")
	errored.judge(a, false)
	if errored.pass {
		t.Fatal("a trial with an error passed")
	}
}

func TestTrialDerived(t *testing.T) {
	// Veneur, mixed workload: 40% counters, 1% of them lost.
	r := trialAt("veneur", 1e6, 1e6, 1_200_000, 1_188_000, 1.5)
	if r.loss < 0.0099 || r.loss > 0.0101 {
		t.Errorf("loss %v, want 0.01", r.loss)
	}
	if got := r.cpuPerMillion(); got < 0.505 || got > 0.506 {
		t.Errorf("CPU per million %v, want 1.5s over 2.97M lines", got)
	}
	if r.senderLimited {
		t.Error("sender-limited at the rate asked")
	}
	if s := trialAt("bare", 1e6, 0.9e6, 1, 1, 0); !s.senderLimited {
		t.Error("90% of the rate asked is not marked sender-limited")
	}
}

func TestGroupDigits(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -1234: "-1,234", 100000: "100,000"} {
		if got := groupDigits(in); got != want {
			t.Errorf("groupDigits(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestReportRender(t *testing.T) {
	b, _ := workloadByName("b")
	a, _ := workloadByName("a")
	pass := func(r trialResult) trialResult { r.pass = true; return r }
	wb := newWorkloadReport(b, 100_000)
	wb.search[serverBare] = []trialResult{pass(trialAt("bare", 1e6, 1e6, 3e6, 3e6, 0.3)), pass(trialAt("bare", 5e6, 5e6, 15e6, 15e6, 1.5))}
	wb.search[serverVeneur] = []trialResult{pass(trialAt("veneur", 1e6, 1e6, 1.2e6, 1.2e6, 0.9)), trialAt("veneur", 3e6, 3e6, 3.6e6, 2e6, 3)}
	wb.fixed[serverVeneur] = []trialResult{pass(trialAt("veneur", 1e5, 1e5, 120_000, 120_000, 0.2))}
	wb.fixed[serverBare] = []trialResult{pass(trialAt("bare", 1e5, 1e5, 300_000, 300_000, 0.1))}
	wa := newWorkloadReport(a, 100_000)
	wa.search[serverVeneur] = []trialResult{trialAt("veneur", 1e5, 1e5, 3e5, 0, 0.1)}
	rep := &report{header: []string{"head"}, servers: []string{serverBare, serverVeneur}, workloads: []*workloadReport{wb, wa}}
	var out bytes.Buffer
	rep.render(&out)
	s := out.String()
	t.Log("\n" + s)
	for _, want := range []string{
		"5,000,000", // bare's best rate in b
		"1,000,000", // veneur's best rate in b
		"failed at 3,000,000",
		"0.20x", // veneur/bare rate in b
		"FAIL (b) max rate: veneur 1,000,000 lines/s is 20% of the bare reader's 5,000,000",
		"PASS (b) at 100,000 lines/s: veneur 0.667 CPU s per M lines",
		"against the bare reader's 10,000,000 lines per CPU-second: 10%",
		"none passed", // veneur in a
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	good := options{workloads: []string{"a", "b"}, servers: []string{"veneur"}, trial: 3 * time.Second, trialStrict: 10 * time.Second,
		maxTrials: 6, precision: 0.05, fixedRates: []float64{1e5}, confirm: 1, rcvbuf: 8 << 20, workers: 2,
		locals: 16, trialGlobal: 10 * time.Second, transports: []string{"http", "grpc"}, globals: []int{1}}
	err := good.validate()
	if err != nil {
		t.Fatal(err)
	}
	global := good
	global.workloads = []string{"g", "d", "a"}
	if err := global.validate(); err != nil {
		t.Errorf("the global workloads: %v", err)
	}
	mutate := []func(*options){
		func(o *options) { o.workloads = nil },
		func(o *options) { o.workloads = []string{"x"} },
		func(o *options) { o.servers = []string{"statsd"} },
		func(o *options) { o.trial = time.Millisecond },
		func(o *options) { o.trialStrict = 2 * time.Second },
		func(o *options) { o.maxTrials = 0 },
		func(o *options) { o.precision = 0 },
		func(o *options) { o.fixedRates = []float64{1e5, -1} },
		func(o *options) { o.confirm = 0 },
		func(o *options) { o.confirm = 11 },
		func(o *options) { o.rcvbuf = 1 },
		func(o *options) { o.workers = 0 },
		func(o *options) { o.locals = 0 },
		func(o *options) { o.trialGlobal = time.Millisecond },
		func(o *options) { o.transports = nil },
		func(o *options) { o.transports = []string{"udp"} },
		func(o *options) { o.globals = nil },
		func(o *options) { o.globals = []int{1, 0} },
		func(o *options) { o.globals = []int{maxGlobals + 1} },
	}
	for i, m := range mutate {
		o := good
		m(&o)
		if err := o.validate(); err == nil {
			t.Errorf("mutation %d accepted: %+v", i, o)
		}
	}
	if got := splitList(" a, b,,a ,c"); strings.Join(got, "|") != "a|b|c" {
		t.Errorf("splitList = %q", got)
	}
	tiers := good
	if tiers.globals, err = parseGlobals("3, 1,2,3"); err != nil || !slices.Equal(tiers.globals, []int{3, 1, 2}) {
		t.Errorf("parseGlobals(\"3, 1,2,3\") = %v, %v; want [3 1 2]", tiers.globals, err)
	}
	if err := tiers.validate(); err != nil {
		t.Errorf("-globals 3,1,2: %v", err)
	}
	if _, err := parseGlobals("1,two"); err == nil || !strings.Contains(err.Error(), `"two"`) {
		t.Errorf("parseGlobals(\"1,two\"): %v, want an error naming \"two\"", err)
	}
}

func TestNoisyFailure(t *testing.T) {
	base := trialAt("bare", 1e6, 1e6, 3e6, 2e6, 0.2)
	tests := []struct {
		name     string
		pass     bool
		start    bool
		otherSrv float64
		want     bool
	}{
		{"quiet failure", false, false, 0.02, false},
		{"noisy failure", false, false, 0.3, true},
		{"noisy pass", true, false, 0.3, false},
		{"start failure", false, true, 0.3, false},
		{"unknown load", false, false, math.NaN(), false},
		{"noisy driver", false, false, -1, true},
	}
	for _, tc := range tests {
		r := base
		r.pass, r.startFailed, r.otherSrv, r.otherDrv = tc.pass, tc.start, tc.otherSrv, 0
		if tc.otherSrv < 0 { // the driver's CPU was the busy one
			r.otherSrv, r.otherDrv = 0, 0.5
		}
		if got := r.noisyFailure(); got != tc.want {
			t.Errorf("%s: noisyFailure %v, want %v", tc.name, got, tc.want)
		}
	}
}
