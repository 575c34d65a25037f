package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
)

// socketDir is a short directory for unix sockets: a socket path may have
// at most 107 bytes, and t.TempDir's can be long.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vnr")
	if err != nil {
		t.Fatalf("creating a directory for sockets: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// newClientAt returns the official DogStatsD client aimed at addr, with
// every client-side transformation off.
func newClientAt(t *testing.T, addr string) *statsd.Client {
	t.Helper()
	c, err := statsd.New(addr, statsd.WithoutTelemetry(), statsd.WithoutClientSideAggregation(), statsd.WithoutOriginDetection())
	if err != nil {
		t.Fatalf("creating DogStatsD client for %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// staleSocket leaves a socket file at path with nothing behind it, as a
// veneur that was killed leaves one.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatalf("making a stale socket file at %s: %v", path, err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}

// datadog-go in each of its unix socket modes (unix:// finds the datagram
// socket itself, unixgram://, and unixstream://, length-prefixed) sends to
// one daemon: every series, event and service check arrives exactly. The
// daemon replaced a stale socket file at start, gave its files
// unix_socket_mode, and removes them when it exits.
func TestUnixSocketsWithDatadogGo(t *testing.T) {
	t.Parallel()
	dir := socketDir(t)
	dgram, stream := filepath.Join(dir, "dsd.sock"), filepath.Join(dir, "dsd-stream.sock")
	staleSocket(t, dgram)
	fake := newFakeDD(t)
	d := startDaemon(t, fake, func(c config) {
		c["unix_datagram_address"] = dgram
		c["unix_stream_address"] = stream
		c["unix_socket_mode"] = "0620"
	})
	for _, p := range []string{dgram, stream} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatalf("socket file %s: %v", p, err)
		}
		if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o620 {
			t.Errorf("%s: mode %v, want a socket with 0620 (unix_socket_mode)", p, fi.Mode())
		}
	}
	modes := []struct{ name, addr string }{
		{"auto", "unix://" + dgram},
		{"gram", "unixgram://" + dgram},
		{"stream", "unixstream://" + stream},
	}
	const n = 500
	for i, m := range modes {
		c := newClientAt(t, m.addr)
		for range n {
			must(t, c.Incr("uds."+m.name+".c", []string{"mode:" + m.name}, 1))
		}
		must(t, c.Gauge("uds."+m.name+".g", float64(i+1), nil, 1))
		for _, v := range []float64{1, 2, 3, 4} {
			must(t, c.Histogram("uds."+m.name+".h", v, nil, 1))
		}
		must(t, c.Event(&statsd.Event{Title: "ev-" + m.name, Text: "via " + m.name, Timestamp: time.Unix(1700000000, 0), Tags: []string{"mode:" + m.name}}))
		must(t, c.ServiceCheck(&statsd.ServiceCheck{Name: "check." + m.name, Status: statsd.Warn, Timestamp: time.Unix(1700000001, 0), Message: "via " + m.name}))
		flushClient(t, c)
	}
	reqs := d.stopAndCollect(t)
	var names []string
	for i, m := range modes {
		p := "uds." + m.name
		names = append(names, p+".c", p+".g", p+".h.min", p+".h.max", p+".h.count", p+".h.50percentile")
		expectSeries(t, reqs, p+".c", rate(n/hour, hour, "mode:"+m.name))
		expectSeries(t, reqs, p+".g", gauge(float64(i+1)))
		expectSeries(t, reqs, p+".h.min", gauge(1))
		expectSeries(t, reqs, p+".h.max", gauge(4))
		expectSeries(t, reqs, p+".h.count", rate(4/hour, hour))
	}
	expectNames(t, reqs, names...)
	events, checks := fake.eventsAndChecks()
	if len(events) != len(modes) || len(checks) != len(modes) {
		t.Fatalf("%d events and %d checks, want %d of each: %v %v", len(events), len(checks), len(modes), events, checks)
	}
	gotEvents, gotChecks := map[string]string{}, map[string]string{}
	for _, e := range events {
		gotEvents[fmt.Sprint(e["title"])] = fmt.Sprintf("%v %v %v", e["text"], e["date_happened"], e["tags"])
	}
	for _, c := range checks {
		gotChecks[fmt.Sprint(c["check"])] = fmt.Sprintf("%v %v %v", c["status"], c["timestamp"], c["message"])
	}
	for _, m := range modes {
		if want := fmt.Sprintf("via %s 1.7e+09 [mode:%s]", m.name, m.name); gotEvents["ev-"+m.name] != want {
			t.Errorf("event ev-%s: %q, want %q", m.name, gotEvents["ev-"+m.name], want)
		}
		if want := fmt.Sprintf("1 1.700000001e+09 via %s", m.name); gotChecks["check."+m.name] != want {
			t.Errorf("check check.%s: %q, want %q", m.name, gotChecks["check."+m.name], want)
		}
	}
	for _, p := range []string{dgram, stream} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket file %s after exit: %v, want it removed", p, err)
		}
	}
}

// wholeDatagram is an 8,179-byte datagram of 300 counter lines, as
// hot-shots and datadog-go's unix modes pack them (up to 8,192 bytes): each
// line far under metric_max_length, the datagram twice over it.
func wholeDatagram(t *testing.T, prefix string) string {
	t.Helper()
	const lines, size = 300, 8179
	base := 0
	for i := 0; i < lines; i++ {
		base += len(fmt.Sprintf("%s.%03d:1|c|#p:", prefix, i)) + 1
	}
	base-- // no newline after the last line
	pad := size - base
	if pad < lines {
		t.Fatalf("prefix %q too long for %d lines in %d bytes", prefix, lines, size)
	}
	var b strings.Builder
	for i := 0; i < lines; i++ {
		if i > 0 {
			b.WriteByte('\n')
		}
		p := pad / lines
		if i < pad%lines {
			p++
		}
		fmt.Fprintf(&b, "%s.%03d:1|c|#p:%s", prefix, i, strings.Repeat("x", p))
	}
	if b.Len() != size || strings.Count(b.String(), "\n") != lines-1 {
		t.Fatalf("built %d bytes of %d lines, want %d and %d", b.Len(), strings.Count(b.String(), "\n")+1, size, lines)
	}
	return b.String()
}

// An 8,179-byte datagram of 300 lines is taken whole, over UDP and over
// the unix datagram socket, with the default metric_max_length of 4,096:
// all 300 counters reach the API.
func TestWholeDatagramCounted(t *testing.T) {
	t.Parallel()
	dgram := filepath.Join(socketDir(t), "dsd.sock")
	fake := newFakeDD(t)
	d := startDaemon(t, fake, func(c config) { c["unix_datagram_address"] = dgram })
	udp, unix := wholeDatagram(t, "whole.udp"), wholeDatagram(t, "whole.uds")
	sendRaw(t, d, udp)
	c, err := net.Dial("unixgram", dgram)
	if err != nil {
		t.Fatalf("dialing %s: %v", dgram, err)
	}
	defer c.Close()
	if n, err := c.Write([]byte(unix)); err != nil || n != len(unix) {
		t.Fatalf("sending %d bytes to %s: %d, %v", len(unix), dgram, n, err)
	}
	reqs := d.stopAndCollect(t)
	for _, prefix := range []string{"whole.udp", "whole.uds"} {
		got := 0
		for _, s := range allSeries(reqs) {
			if strings.HasPrefix(s.Metric, prefix+".") {
				got++
				if !approx(s.Value, 1/hour) || s.Type != "rate" {
					t.Errorf("%s = %v %s, want rate %v", s.Metric, s.Value, s.Type, 1/hour)
				}
			}
		}
		if got != 300 {
			t.Errorf("%d of the 300 counters of the %s datagram reached the API", got, prefix)
		}
	}
}
