package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunExitCodes(t *testing.T) {
	for _, c := range []struct {
		name   string
		args   []string
		code   int
		outHas string
		errHas string
	}{
		{"no config", nil, 2, "", "-f CONFIG is required"},
		{"valid", []string{"-validate", "-f", writeFile(t, "http_address: 127.0.0.1:0\nforward_addresses: [http://g1:8127, grpc://g2:8128]\n")}, 0, "valid", ""},
		{"no global", []string{"-validate", "-f", writeFile(t, "http_address: 127.0.0.1:0\n")}, 1, "", "forward_addresses"},
		{"a key it does not use", []string{"-validate", "-f", writeFile(t, "http_address: 127.0.0.1:0\nforward_address: http://g:8127\nudp_address: 127.0.0.1:8126\n")}, 1, "", "udp_address"},
		{"missing file", []string{"-f", filepath.Join(t.TempDir(), "absent.yaml")}, 1, "", "check the path"},
		{"version", []string{"-version"}, 0, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(c.args, &out, &errb); code != c.code {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, c.code, errb.String())
			}
			if !strings.Contains(out.String(), c.outHas) || !strings.Contains(errb.String(), c.errHas) {
				t.Errorf("stdout %q, stderr %q; want %q and %q in them", out.String(), errb.String(), c.outHas, c.errHas)
			}
		})
	}
}
