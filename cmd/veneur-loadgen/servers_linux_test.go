package main

import (
	"slices"
	"testing"

	"github.com/veneur/veneur/plugins/datadog"
)

// The key veneur is given draws no warning, so none is quoted as a
// problem of a trial that lost lines.
func TestAPIKeyDrawsNoWarning(t *testing.T) {
	if w := datadog.KeyWarning(apiKey); w != "" {
		t.Errorf("veneur warns of the load generator's key %q: %s", apiKey, w)
	}
}

// A trial that lost lines shows the last warnings and errors of veneur's
// log, in order, and nothing else of it.
func TestLogProblems(t *testing.T) {
	log := `time="t0" level=info msg="veneur started"
time="t1" level=warning msg="first"
time="t2" level=error msg="second" sink=datadog
time="t3" level=info msg="flushed"
time="t4" level=warning msg="third"
time="t5" level=error msg="fourth"
time="t6" level=info msg="veneur stopped"`
	if got, want := logProblems(log, 3), []string{`time="t2" level=error msg="second" sink=datadog`, `time="t4" level=warning msg="third"`, `time="t5" level=error msg="fourth"`}; !slices.Equal(got, want) {
		t.Errorf("logProblems = %q, want %q", got, want)
	}
	if got := logProblems(`time="t0" level=info msg="veneur started"`, 3); len(got) != 0 {
		t.Errorf("logProblems of an info line = %q, want none", got)
	}
}
