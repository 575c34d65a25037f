package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"gopkg.in/yaml.v3"
)

// shippedConfig reads config/NAME, a config the README tells users to run.
func shippedConfig(t *testing.T, name string) config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "config", name))
	if err != nil {
		t.Fatal(err)
	}
	var c config
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("config/%s: %v", name, err)
	}
	return c
}

// useShipped makes c the shipped config, keeping only c's free loopback
// ports in place of the shipped ones (tests bind no fixed port).
func useShipped(c, shipped config) {
	udp, http := c["udp_address"], c["http_address"]
	for k := range c {
		delete(c, k)
	}
	for k, v := range shipped {
		c[k] = v
	}
	c["udp_address"], c["http_address"] = udp, http
}

// TestLocalGlobalPair runs the README's local and global pair,
// config/local.yaml and config/global.yaml, as shipped but on free
// ports, sends the local a histogram, a set, a global counter and a
// counter, and reads both printed flushes: the local prints the
// histogram's aggregates and the counter, the global the percentiles,
// the set's count and the global counter, each with its own hostname.
func TestLocalGlobalPair(t *testing.T) {
	t.Parallel()
	localFile, globalFile := shippedConfig(t, "local.yaml"), shippedConfig(t, "global.yaml")
	if localFile["forward_address"] != "http://"+globalFile["http_address"].(string) {
		t.Fatalf("config/local.yaml forward_address %v is not config/global.yaml's http_address %v", localFile["forward_address"], globalFile["http_address"])
	}
	global := startDaemon(t, nil, func(c config) { useShipped(c, globalFile) })
	local := startDaemon(t, nil, func(c config) {
		useShipped(c, localFile)
		c["forward_address"] = "http://" + global.httpAddr
	})

	sendRaw(t, local,
		"api.latency:10|ms|#route:/home\napi.latency:20|ms|#route:/home\napi.latency:30|ms|#route:/home",
		"users:ann|s\nusers:bob|s\nusers:ann|s",
		"logins:1|c|#veneurglobalonly\nlogins:1|c|#veneurglobalonly",
		"page.views:1|c|#route:/home",
	)
	// The local's last flush forwards to the global, which is still up;
	// the global's last flush then publishes what it merged.
	local.terminate(t, syscall.SIGTERM)
	global.terminate(t, syscall.SIGTERM)

	printed := func(d *daemon) []string {
		var out []string
		re := regexp.MustCompile(`^flush \S+ (.*)$`)
		for _, line := range strings.Split(d.stdout.String(), "\n") {
			if m := re.FindStringSubmatch(line); m != nil {
				out = append(out, m[1])
			}
		}
		slices.Sort(out)
		return out
	}
	// Counters are rates over the 10 s interval of both files.
	wantLocal := []string{
		"api.latency.count rate 0.3 interval=10 host=local tags=[route:/home env:demo]",
		"api.latency.max gauge 30 host=local tags=[route:/home env:demo]",
		"api.latency.min gauge 10 host=local tags=[route:/home env:demo]",
		"page.views rate 0.1 interval=10 host=local tags=[route:/home env:demo]",
	}
	wantGlobal := []string{
		"api.latency.50percentile gauge 20 host=global tags=[route:/home env:demo]",
		"api.latency.75percentile gauge 30 host=global tags=[route:/home env:demo]",
		"api.latency.99percentile gauge 30 host=global tags=[route:/home env:demo]",
		"logins rate 0.2 interval=10 host=global tags=[env:demo]",
		"users gauge 2 host=global tags=[env:demo]",
	}
	if got := printed(local); !slices.Equal(got, wantLocal) {
		t.Errorf("the local printed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantLocal, "\n"))
	}
	if got := printed(global); !slices.Equal(got, wantGlobal) {
		t.Errorf("the global printed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantGlobal, "\n"))
	}
}
