//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// tailBuffer keeps the last bytes written to it, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}

// child is a server process under test. It gets SIGKILL if the driver dies,
// and kill stops it on every exit path of the driver.
type child struct {
	cmd     *exec.Cmd
	output  *tailBuffer
	done    chan struct{} // closed when the process has been waited for
	waitErr error
}

// startChild starts argv pinned to cpu with taskset when cpu >= 0.
func startChild(argv []string, cpu int, setup func(*exec.Cmd) error) (*child, error) {
	if cpu >= 0 {
		argv = append([]string{"taskset", "-c", fmt.Sprint(cpu)}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{cmd: cmd, output: &tailBuffer{max: 16 << 10}, done: make(chan struct{})}
	cmd.Stderr = c.output
	if setup != nil {
		if err := setup(cmd); err != nil {
			return nil, err
		}
	}
	if cmd.Stdout == nil {
		cmd.Stdout = c.output
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the process to exit.
func (c *child) wait(timeout time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// kill ends the process if it still runs and waits for it.
func (c *child) kill() {
	if c.exited() {
		return
	}
	_ = c.cmd.Process.Kill()
	c.wait(10 * time.Second)
}

// cpuAndRSS returns the CPU seconds and peak RSS in bytes of an exited
// process, from its rusage.
func (c *child) cpuAndRSS() (float64, uint64, error) {
	ru, ok := c.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok || ru == nil {
		return 0, 0, fmt.Errorf("no rusage for pid %d", c.pid())
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return cpu.Seconds(), uint64(ru.Maxrss) * 1024, nil
}

// lineReader delivers a child's stdout lines on a channel.
func lineReader(r io.Reader) <-chan string {
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

// readLine waits up to timeout for the next line.
func readLine(ch <-chan string, timeout time.Duration) (string, error) {
	select {
	case l, ok := <-ch:
		if !ok {
			return "", fmt.Errorf("the process closed its output")
		}
		return l, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("no answer within %v", timeout)
	}
}

// freeUDPPort and freeTCPPort return a loopback port that was free a moment
// ago; the caller retries when a server then finds it taken.
func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free UDP port: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free TCP port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
