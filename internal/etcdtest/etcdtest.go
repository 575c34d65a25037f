// Package etcdtest runs a real etcd for tests: Debian's etcd-server
// binary, one member, on loopback ports of its own, with its data in the
// test's temporary directory.
package etcdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary is where Debian's etcd-server package installs etcd.
const Binary = "/usr/bin/etcd"

// RequireEnv is the variable that, set to 1, makes a missing etcd binary
// fail the tests that need one instead of skipping them (make test and CI
// set it, after installing etcd-server).
const RequireEnv = "VENEUR_REQUIRE_ETCD"

// startTries is how many times Start picks new ports when etcd could not
// bind the ones it picked (another process took them in between).
const startTries = 4

// healthyWithin bounds how long Start waits for etcd to answer.
const healthyWithin = 20 * time.Second

// Server is a running etcd. Its methods are for the test that started it.
type Server struct {
	t       testing.TB
	bin     string
	dir     string // data directory
	logPath string
	client  string // http://127.0.0.1:port
	peer    string

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd has exited
}

// Start runs an etcd for t and waits until it is healthy; t's cleanup
// kills it. When the etcd binary is missing it skips t, or fails it when
// VENEUR_REQUIRE_ETCD=1.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary
	if _, err := os.Stat(bin); err != nil {
		if p, lerr := exec.LookPath("etcd"); lerr == nil {
			bin = p
		} else if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("etcd: %v; install Debian's etcd-server (%s=1 requires it)", err, RequireEnv)
		} else {
			t.Skipf("etcd: %v; install Debian's etcd-server to run this test", err)
		}
	}
	dir := t.TempDir()
	s := &Server{t: t, bin: bin, dir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "etcd.log")}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			s.dumpLog()
		}
	})
	var err error
	for range startTries {
		var ports [2]int
		if ports, err = freePorts(); err != nil {
			continue
		}
		s.client = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		s.peer = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		if err = s.start(); err == nil {
			return s
		}
		s.Kill()
		os.RemoveAll(s.dir)
	}
	s.dumpLog()
	t.Fatalf("etcd: did not start after %d tries: %v", startTries, err)
	return nil
}

// Endpoint is the client URL, such as http://127.0.0.1:41234.
func (s *Server) Endpoint() string { return s.client }

// Restart starts etcd again, with the same ports and data, after Stop or
// Kill, and waits until it is healthy.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.dumpLog()
		s.t.Fatalf("etcd: restart: %v", err)
	}
}

// Stop stops etcd with SIGTERM and waits for it to exit.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

// Kill kills etcd with SIGKILL and waits for it to exit. It does nothing
// when etcd is not running.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-exit:
	case <-time.After(healthyWithin):
		cmd.Process.Kill()
		<-exit
	}
}

// start runs the binary and waits until it answers /health, or exits.
func (s *Server) start() error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin,
		"--name", "etcdtest",
		"--data-dir", s.dir,
		"--listen-client-urls", s.client,
		"--advertise-client-urls", s.client,
		"--listen-peer-urls", s.peer,
		"--initial-advertise-peer-urls", s.peer,
		"--initial-cluster", "etcdtest="+s.peer,
		"--initial-cluster-state", "new",
		// Fast elections, so that a start or restart is quick and the
		// shortest lease etcd grants is 1s (it is 1.5 election timeouts).
		"--heartbeat-interval", "10",
		"--election-timeout", "100",
		"--logger", "zap",
		"--log-outputs", "stderr",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, and killed with the test process on Linux.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exit := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exit)
	}()
	s.mu.Lock()
	s.cmd, s.exit = cmd, exit
	s.mu.Unlock()

	deadline := time.Now().Add(healthyWithin)
	c := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-exit:
			return fmt.Errorf("etcd exited at start (%s); its log: %s", cmd.ProcessState, s.logTail())
		default:
		}
		if healthy(c, s.client) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd at %s not healthy within %s", s.client, healthyWithin)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// healthy reports whether GET /health says {"health":"true"}.
func healthy(c *http.Client, base string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health", nil)
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	return resp.StatusCode == http.StatusOK && bytes.Contains(b, []byte(`"health":"true"`))
}

// freePorts picks two ports that were free a moment ago, by binding
// 127.0.0.1:0 and closing.
func freePorts() ([2]int, error) {
	var ports [2]int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return ports, err
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return err.Error()
	}
	const max = 4 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

func (s *Server) dumpLog() {
	if _, err := os.Stat(s.logPath); errors.Is(err, os.ErrNotExist) {
		return
	}
	s.t.Logf("etcd log (tail):\n%s", s.logTail())
}
