package main

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const sendBatchMax = 64 // datagrams per sendmmsg call

// sender sends a workload's ring of datagrams to one UDP port with sendmmsg.
type sender struct {
	fd   int
	r    *ring
	iovs []unix.Iovec
	msgs []unix.Mmsghdr
	pos  int // next datagram of the ring
}

// newSender connects a UDP socket to 127.0.0.1:port and prepares one message
// header per datagram of the ring.
func newSender(r *ring, port int) (*sender, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sender socket: %w", err)
	}
	// A large send buffer keeps sendmmsg from blocking on a burst.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sender SO_SNDBUF: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sender connect 127.0.0.1:%d: %w", port, err)
	}
	s := &sender{fd: fd, r: r, iovs: make([]unix.Iovec, r.len()), msgs: make([]unix.Mmsghdr, r.len())}
	for i := range s.msgs {
		d := r.datagram(i)
		s.iovs[i].Base = &d[0]
		s.iovs[i].SetLen(len(d))
		s.msgs[i].Hdr.Iov = &s.iovs[i]
		s.msgs[i].Hdr.SetIovlen(1)
	}
	return s, nil
}

func (s *sender) close() { unix.Close(s.fd) }

// run sends at rate lines per second for d, or until ctx ends. The ring is
// walked in order and wraps, so each stretch of a workload's series count of
// lines touches every series.
func (s *sender) run(ctx context.Context, rate float64, d time.Duration) (sendStats, error) {
	var st sendStats
	p := pacer{rate: rate, perDgram: s.r.lines[0], maxBatch: sendBatchMax}
	start := time.Now()
	deadline := start.Add(d)
	for iter := 0; ; iter++ {
		now := time.Now()
		if !now.Before(deadline) {
			break
		}
		if iter%256 == 0 && ctx.Err() != nil {
			st.elapsed = now.Sub(start)
			return st, ctx.Err()
		}
		n, wait := p.next(now.Sub(start), st.lines)
		if n == 0 {
			time.Sleep(min(wait, deadline.Sub(now)))
			continue
		}
		n = min(n, s.r.len()-s.pos)
		sent, err := s.sendmmsg(s.pos, n)
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.EAGAIN) {
				st.errors++
				if st.errors > 100_000 {
					st.elapsed = time.Since(start)
					return st, fmt.Errorf("sendmmsg failing repeatedly: %w; is the server still running?", err)
				}
				continue
			}
			st.elapsed = time.Since(start)
			return st, fmt.Errorf("sendmmsg: %w", err)
		}
		for i := s.pos; i < s.pos+sent; i++ {
			st.lines += int64(s.r.lines[i])
			st.counters += int64(s.r.counters[i])
		}
		st.datagrams += int64(sent)
		s.pos = (s.pos + sent) % s.r.len()
	}
	st.elapsed = time.Since(start)
	return st, nil
}

// sendmmsg sends datagrams [from, from+n) of the ring and returns how many
// went out.
func (s *sender) sendmmsg(from, n int) (int, error) {
	for {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msgs[from])), uintptr(n), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(r), nil
	}
}
