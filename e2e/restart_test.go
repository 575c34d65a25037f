package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// restartCounter is the counter the restart tests send: every line adds 1,
// so what reaches the API must sum to the lines sent.
const restartCounter = "restart.c"

// sender sends restartCounter lines to a UDP address, 5 lines a datagram,
// at about rate datagrams a second, from sources source ports (so that the
// kernel spreads them over an SO_REUSEPORT group), until it has sent total
// lines.
type sender struct {
	conns []net.Conn
	total int
	rate  int
	sent  atomic.Int64 // lines
	err   atomic.Value
	done  chan struct{}
}

const linesPerDatagram = 5

func startSender(t *testing.T, addr string, sources, total, rate int) *sender {
	t.Helper()
	s := &sender{total: total, rate: rate, done: make(chan struct{})}
	for range sources {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatalf("dialing %s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
		s.conns = append(s.conns, c)
	}
	dg := []byte(strings.Repeat(restartCounter+":1|c\n", linesPerDatagram))
	go func() {
		defer close(s.done)
		start := time.Now()
		for i := 0; s.sent.Load() < int64(s.total); i++ {
			// Pace: datagram i is due at i/rate seconds.
			if due := start.Add(time.Duration(i) * time.Second / time.Duration(s.rate)); time.Until(due) > 0 {
				time.Sleep(time.Until(due))
			}
			if _, err := s.conns[i%len(s.conns)].Write(dg); err != nil {
				s.err.Store(fmt.Errorf("datagram %d: %w", i, err))
				return
			}
			s.sent.Add(linesPerDatagram)
		}
	}()
	return s
}

// waitSent waits until at least lines have been sent.
func (s *sender) waitSent(t *testing.T, lines int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for s.sent.Load() < int64(lines) {
		if time.Now().After(deadline) {
			t.Fatalf("the sender sent %d lines in a minute, want %d", s.sent.Load(), lines)
		}
		time.Sleep(pollEvery)
	}
}

// finish waits for the sender to end and fails the test on a send error.
func (s *sender) finish(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the sender did not finish in two minutes")
	}
	if err, _ := s.err.Load().(error); err != nil {
		t.Fatalf("sending: %v", err)
	}
}

// checkAllCounted checks that the counter's parts, one per process, add up
// to what was sent, and that every process took part.
func checkAllCounted(t *testing.T, fake *fakeDD, sent int, processes int) {
	t.Helper()
	reqs := fake.snapshot()
	parts := findSeries(reqs, restartCounter)
	total := sumRate(reqs, restartCounter)
	var got []string
	for _, p := range parts {
		got = append(got, fmt.Sprint(p.Value*p.Interval))
	}
	t.Logf("sent %d; the %d processes counted %s", sent, processes, strings.Join(got, " + "))
	if !approx(total, float64(sent)) {
		t.Errorf("the API got %v %s in all, want the %d sent", total, restartCounter, sent)
	}
	if len(parts) != processes {
		t.Errorf("%d parts of %s, want one from each of the %d processes", len(parts), restartCounter, processes)
	}
}

// heldSockets are the sockets a test holds across restarts, as systemd
// holds a socket unit's: a UDP socket for DogStatsD and a TCP listener for
// HTTP. files are what the child inherits, in order, from descriptor 3.
type heldSockets struct {
	udp   *net.UDPConn
	http  net.Listener
	files []*os.File
}

func holdSockets(t *testing.T) *heldSockets {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("binding the held UDP socket: %v", err)
	}
	udp := pc.(*net.UDPConn)
	// Room for what arrives while no veneur reads, as a socket unit's
	// ReceiveBuffer= gives.
	if err := udp.SetReadBuffer(8 << 20); err != nil {
		t.Fatalf("sizing the held UDP socket: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("binding the held HTTP socket: %v", err)
	}
	h := &heldSockets{udp: udp, http: ln}
	for _, c := range []interface{ File() (*os.File, error) }{udp, ln.(*net.TCPListener)} {
		f, err := c.File()
		if err != nil {
			t.Fatalf("a file for a held socket: %v", err)
		}
		h.files = append(h.files, f)
	}
	t.Cleanup(func() {
		for _, f := range h.files {
			f.Close()
		}
		udp.Close()
		ln.Close()
	})
	return h
}

// activationConfig is the config of a socket-activated veneur.
func activationConfig(fake *fakeDD) config {
	c := baseConfig("systemd:dogstatsd", "systemd:http", fake.URL())
	c["read_buffer_size_bytes"] = 4 << 20
	return c
}

// startActivated starts veneur with the held sockets as systemd passes them
// (LISTEN_FDS=2, LISTEN_FDNAMES=dogstatsd:http, LISTEN_PID its own pid, set
// by the shell it execs from), or through systemd-socket-activate when via
// names it, which passes them on the same way once a client is at the
// door.
func startActivated(t *testing.T, fake *fakeDD, h *heldSockets, via string) *daemon {
	t.Helper()
	cfg := activationConfig(fake)
	d, err := launch(t, fake, cfg, h.udp.LocalAddr().String(), h.http.Addr().String(), func(path string) *exec.Cmd {
		script := `LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=dogstatsd:http exec "$0" "$@"`
		args := []string{binPath(), "-f", path}
		if via != "" {
			// systemd-socket-activate passes the descriptors on
			// (with --fdname's names, not LISTEN_FDNAMES) and sets
			// LISTEN_PID to its own pid, which it keeps when it
			// execs veneur.
			script = `LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" "$@"`
			args = append([]string{via, "--fdname=dogstatsd:http"}, args...)
		}
		cmd := exec.Command("/bin/sh", append([]string{"-c", script}, args...)...)
		cmd.ExtraFiles = h.files
		return cmd
	})
	if err != nil {
		t.Fatalf("starting socket-activated veneur: %v", err)
	}
	t.Cleanup(func() {
		d.terminate(t, syscall.SIGTERM)
		if t.Failed() {
			d.logOutput(t)
		}
	})
	return d
}

// Socket activation: the test holds the sockets as systemd does and starts
// veneur on them, restarts it while a client sends counters over UDP
// (SIGTERM, then a new process, as systemctl restart does), and stops it.
// The old process drains its socket before it exits, the datagrams sent
// while no process runs wait in the socket, and the API gets every counter
// sent. Where systemd-socket-activate is installed, it starts veneur too.
func TestRestartUnderSocketActivation(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("socket activation is systemd's, on Linux")
	}
	vias := []string{""}
	if p, err := exec.LookPath("systemd-socket-activate"); err == nil {
		vias = append(vias, p)
	} else {
		t.Logf("systemd-socket-activate not found (%v): only the direct LISTEN_FDS start is tested", err)
	}
	for _, via := range vias {
		name := "LISTEN_FDS"
		if via != "" {
			name = "systemd-socket-activate"
		}
		t.Run(name, func(t *testing.T) {
			fake := newFakeDD(t)
			h := holdSockets(t)
			first := startActivated(t, fake, h, via)
			const total = 15000
			s := startSender(t, h.udp.LocalAddr().String(), 4, total, 1000)
			s.waitSent(t, total/3)
			first.terminate(t, syscall.SIGTERM)
			t.Logf("first veneur stopped at %d lines sent", s.sent.Load())
			second := startActivated(t, fake, h, via)
			t.Logf("second veneur up at %d lines sent", s.sent.Load())
			s.finish(t)
			second.terminate(t, syscall.SIGTERM)
			checkAllCounted(t, fake, total, 2)
			if !regexp.MustCompile(`udp="127\.0\.0\.1:\d+"`).MatchString(second.stderr.String()) {
				t.Errorf("the second veneur did not log the inherited UDP address:\n%s", second.stderr.String())
			}
		})
	}
}

// SO_REUSEPORT: a second veneur starts with -takeover on the same config
// (so the same udp_address and http_address) while the first runs and a
// client sends counters from many source ports; then the first gets
// SIGTERM. The first drains what its sockets hold, the kernel gives the
// rest to the second, and the API gets every counter sent.
func TestRestartWithTakeover(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("SO_REUSEPORT is used on Linux only")
	}
	fake := newFakeDD(t)
	first := startDaemon(t, fake, func(c config) { c["num_readers"] = 2 })
	// A second veneur without -takeover is refused: the addresses are
	// held.
	code, out := runVeneur(t, "-f", writeConfig(t, configOf(t, first)))
	if code != 1 || !strings.Contains(out, "address already in use") || !strings.Contains(out, "-takeover") {
		t.Errorf("a second veneur without -takeover: exit %d, want 1 with address already in use and the -takeover hint:\n%s", code, out)
	}

	const total = 15000
	s := startSender(t, first.udpAddr, 16, total, 1000)
	s.waitSent(t, total/3)
	second, err := launch(t, fake, configOf(t, first), first.udpAddr, first.httpAddr, func(path string) *exec.Cmd {
		return exec.Command(binPath(), "-f", path, "-takeover")
	})
	if err != nil {
		t.Fatalf("starting the second veneur: %v", err)
	}
	var once sync.Once
	stopSecond := func() { once.Do(func() { second.terminate(t, syscall.SIGTERM) }) }
	t.Cleanup(func() {
		stopSecond()
		if t.Failed() {
			second.logOutput(t)
		}
	})
	// /healthcheck on the shared port may be answered by either: the
	// second is up once it says so.
	second.waitOutput(t, startTimeout, 0, 0, regexp.MustCompile(`veneur started`))
	t.Logf("second veneur up at %d lines sent", s.sent.Load())
	s.waitSent(t, 2*total/3)
	first.terminate(t, syscall.SIGTERM)
	t.Logf("first veneur stopped at %d lines sent", s.sent.Load())
	s.finish(t)
	stopSecond()
	checkAllCounted(t, fake, total, 2)
}

// configOf reads back the config d runs with.
func configOf(t *testing.T, d *daemon) config {
	t.Helper()
	var c config
	if err := yaml.Unmarshal([]byte(d.config), &c); err != nil {
		t.Fatalf("reading back the daemon's config: %v", err)
	}
	return c
}
