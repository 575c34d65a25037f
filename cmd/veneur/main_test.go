package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The -validate cases: each config is checked as start-up checks it, and
// the outcome is the exit code, the line on standard output and the
// messages on standard error, which name the key and the fix.
func TestValidate(t *testing.T) {
	const base = "udp_address: 127.0.0.1:0\nhostname: h\n"
	const api = "api_hostname: https://app.datadoghq.com\n"
	for _, tc := range []struct {
		name      string
		doc       string
		code      int
		stdout    string   // the whole of standard output
		stderr    []string // each in standard error
		notStderr string   // absent from standard error, when set
	}{
		{name: "valid", doc: base + api + "key: 0123456789abcdef0123456789abcdef\n",
			code: 0, stdout: "CONFIG: valid\n", notStderr: "warning"},
		{name: "printing flushes needs no key", doc: base,
			code: 0, stdout: "CONFIG: valid\n", notStderr: "warning"},
		{name: "api_hostname without key", doc: base + api,
			code: 1, stderr: []string{"invalid config", `key is empty but api_hostname is "https://app.datadoghq.com"`, "set key to your Datadog API key", "leave api_hostname empty"}},
		{name: "api_hostname with an empty key", doc: base + api + "key: ''\n",
			code: 1, stderr: []string{"key is empty"}},
		{name: "example's placeholder key", doc: base + api + "key: your-datadog-api-key\n",
			code: 0, stdout: "CONFIG: valid, with 1 warning\n", stderr: []string{"veneur: warning: key looks like a placeholder", "32 hexadecimal characters"}},
		{name: "all-x key", doc: base + api + "key: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
			code: 0, stdout: "CONFIG: valid, with 1 warning\n", stderr: []string{"warning: key looks like a placeholder"}},
		{name: "changeme key", doc: base + api + "key: changeme\n",
			code: 0, stdout: "CONFIG: valid, with 1 warning\n", stderr: []string{"warning: key looks like a placeholder"}},
		{name: "short key", doc: base + api + "key: 0123456789abcdef\n",
			code: 0, stdout: "CONFIG: valid, with 1 warning\n", stderr: []string{"warning: key has 16 characters, not the 32 hexadecimal characters"}},
		{name: "interval under 1s", doc: base + "interval: 500ms\n",
			code: 1, stderr: []string{`interval "500ms": shorter than 1s`, "allow_short_interval: true"}},
		{name: "interval under 1s, allowed", doc: base + "interval: 500ms\nallow_short_interval: true\n",
			code: 0, stdout: "CONFIG: valid\n"},
		{name: "interval of 1s", doc: base + "interval: 1s\n",
			code: 0, stdout: "CONFIG: valid\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "veneur.yaml")
			if err := os.WriteFile(path, []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := run([]string{"-f", path, "-validate"}, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			if want := strings.ReplaceAll(tc.stdout, "CONFIG", path); stdout.String() != want {
				t.Errorf("stdout %q, want %q", stdout.String(), want)
			}
			for _, w := range tc.stderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr.String())
				}
			}
			if tc.notStderr != "" && strings.Contains(stderr.String(), tc.notStderr) {
				t.Errorf("stderr contains %q:\n%s", tc.notStderr, stderr.String())
			}
		})
	}
}
