//go:build linux

package listen

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/ssf"
)

// countIngester counts datagrams and splits them into lines as the real
// ingester does, without parsing: what the reader costs around the parser.
type countIngester struct {
	packets, lines atomic.Int64
	pendingP       int64
	pendingL       int64
}

func (c *countIngester) Packet(p []byte, _ bool) {
	c.pendingP++
	for len(p) > 0 {
		i := 0
		for i < len(p) && p[i] != '\n' {
			i++
		}
		if i > 0 {
			c.pendingL++
		}
		if i == len(p) {
			break
		}
		p = p[i+1:]
	}
}
func (c *countIngester) Line([]byte)                 { c.pendingL++ }
func (c *countIngester) Skip(error)                  {}
func (c *countIngester) Check(samplers.ServiceCheck) {}
func (c *countIngester) Span(*ssf.SSFSpan)           {}
func (c *countIngester) Flush() {
	c.packets.Add(c.pendingP)
	c.lines.Add(c.pendingL)
	c.pendingP, c.pendingL = 0, 0
}

// benchDatagram is a datagram of lines packed to at most size bytes, as
// datadog-go packs them.
func benchDatagram(size int) []byte {
	var b strings.Builder
	for i := 0; ; i++ {
		l := fmt.Sprintf("bench.counter.%d:1|c|#env:prod,route:/api/%d\n", i%1000, i%7)
		if b.Len()+len(l) > size {
			break
		}
		b.WriteString(l)
	}
	return []byte(b.String())
}

// sender sends copies of one datagram with sendmmsg on a connected socket.
type sender struct {
	fd   int
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
}

func newSender(tb testing.TB, addr net.Addr, dg []byte, batch int) *sender {
	tb.Helper()
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		tb.Fatal(err)
	}
	f, err := c.(*net.UDPConn).File()
	c.Close()
	if err != nil {
		tb.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		tb.Fatal(err)
	}
	unix.SetNonblock(fd, false)
	tb.Cleanup(func() { unix.Close(fd) })
	s := &sender{fd: fd, hdrs: make([]unix.Mmsghdr, batch), iovs: make([]unix.Iovec, batch)}
	for i := range s.hdrs {
		s.iovs[i].Base = &dg[0]
		s.iovs[i].SetLen(len(dg))
		s.hdrs[i].Hdr.Iov = &s.iovs[i]
		s.hdrs[i].Hdr.SetIovlen(1)
	}
	return s
}

// send sends n datagrams (n at most the batch size) and returns how many
// went out.
func (s *sender) send(tb testing.TB, n int) int {
	for {
		r, err := sendmmsg(s.fd, s.hdrs[:n])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			tb.Fatalf("sendmmsg: %v", err)
		}
		return r
	}
}

// BenchmarkReadUDP measures the UDP listener's reader from socket to
// Ingester: the sender keeps at most a window of datagrams in flight, so
// the kernel drops none, and the figure is time per datagram of the
// reader and the sender together (two goroutines). Datagrams of 1432
// bytes carry 28 lines, as datadog-go packs them over UDP; those of 8192
// bytes, 161 lines, as its Unix socket modes do.
func BenchmarkReadUDP(b *testing.B) {
	for _, size := range []int{1432, 8192} {
		b.Run(fmt.Sprintf("datagram=%d", size), func(b *testing.B) {
			dg := benchDatagram(size)
			in := &countIngester{}
			u, err := NewUDP(UDPConfig{Address: "127.0.0.1:0", Readers: 1, ReadBuffer: 8 << 20},
				func() Ingester { return in }, Options{Log: quietLog()})
			if err != nil {
				b.Fatal(err)
			}
			if err := u.Start(); err != nil {
				b.Fatal(err)
			}
			defer stop(b, u)
			s := newSender(b, u.Addr(), dg, 64)
			const window = 512
			b.SetBytes(int64(len(dg)))
			b.ResetTimer()
			sent := 0
			for sent < b.N {
				for int64(sent)-in.packets.Load() > window {
					time.Sleep(10 * time.Microsecond)
				}
				sent += s.send(b, min(64, b.N-sent))
			}
			for in.packets.Load() < int64(b.N) {
				time.Sleep(10 * time.Microsecond)
			}
			b.StopTimer()
			if got := in.lines.Load(); size <= 4096 && got != int64(b.N)*int64(strings.Count(string(dg), "\n")) {
				b.Fatalf("%d lines, want %d", got, b.N*strings.Count(string(dg), "\n"))
			}
		})
	}
}

// BenchmarkRecvBatch measures one reader round on one goroutine: the
// sender queues a batch of datagrams, one recvmmsg takes them and the
// ingester walks their lines. buf is the size of each receive buffer.
func BenchmarkRecvBatch(b *testing.B) {
	for _, buf := range []int{4097, 65536} {
		b.Run(fmt.Sprintf("buf=%d", buf), func(b *testing.B) {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			rc, _ := c.(*net.UDPConn).SyscallConn()
			var fd uintptr
			rc.Control(func(f uintptr) { fd = f })
			dg := benchDatagram(1432)
			s := newSender(b, c.LocalAddr(), dg, 32)
			rb := newRecvBatch(32, buf)
			in := &countIngester{}
			b.SetBytes(int64(len(dg)) * 32)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				want := s.send(b, 32)
				for got := 0; got < want; {
					n, errno := rb.recvmmsg(fd, unix.MSG_DONTWAIT)
					if errno != 0 {
						b.Fatalf("recvmmsg: %v", errno)
					}
					rb.handle(in, n)
					got += n
				}
				in.Flush()
			}
		})
	}
}
