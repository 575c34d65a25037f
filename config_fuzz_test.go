package veneur

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParseConfig checks that ParseConfig never panics, that every config
// it accepts validates and has a usable interval, and that an accepted
// config written back out as YAML parses to the same config.
func FuzzParseConfig(f *testing.F) {
	for _, path := range []string{"example.yaml", filepath.Join("config", "dev.yaml")} {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(minimal + "flush_max_per_bdy: 1\nnum_workers: x\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("ParseConfig(%q) returned an empty error", data)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig(%q) accepted a config that does not validate: %v", data, err)
		}
		if d, err := c.ParseInterval(); err != nil || d <= 0 {
			t.Fatalf("ParseConfig(%q) accepted interval %q: %v, %v", data, c.Interval, d, err)
		}
		again := c
		if err := again.ApplyDefaults(); err != nil {
			t.Fatalf("ApplyDefaults on an accepted config: %v", err)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("ApplyDefaults changed an accepted config:\n%+v\nto\n%+v", c, again)
		}

		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("yaml.Marshal(%+v): %v", c, err)
		}
		c2, err := ParseConfig(out)
		if err != nil {
			t.Fatalf("accepted config %q, but not its re-encoding %q: %v", data, out, err)
		}
		out2, err := yaml.Marshal(c2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("re-encoding changed the config:\n%s\nthen\n%s", out, out2)
		}
	})
}
