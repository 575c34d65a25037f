package main

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// gapLabels are the le tags of veneur.listen.reader_gap_total, in order.
var gapLabels = [...]string{"1ms", "5ms", "20ms", "100ms", "+Inf"}

// gapFigures are a veneur's reader gaps over one trial, from its
// self-metrics: the longest gap of any report, and the gaps counted per
// bucket over all reports (cumulative, as veneur sends them).
type gapFigures struct {
	reports int // veneur.listen.reader_gap_max_ns values received
	max     time.Duration
	le      [len(gapLabels)]int64
	// flushMax and flushLe are the same of the gaps during a flush
	// (veneur.listen.reader_gap_flush_*), a part of the others.
	flushMax time.Duration
	flushLe  [len(gapLabels)]int64
}

// add takes one DogStatsD line of veneur's self-metrics; other lines are
// ignored.
func (g *gapFigures) add(line []byte) {
	name, rest, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		return
	}
	fields := strings.Split(string(rest), "|")
	if len(fields) < 2 {
		return
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return
	}
	counts := &g.le
	switch string(name) {
	case "veneur.listen.reader_gap_max_ns":
		g.reports++
		g.max = max(g.max, time.Duration(v))
		return
	case "veneur.listen.reader_gap_flush_max_ns":
		g.flushMax = max(g.flushMax, time.Duration(v))
		return
	case "veneur.listen.reader_gap_total":
	case "veneur.listen.reader_gap_flush_total":
		counts = &g.flushLe
	default:
		return
	}
	for _, f := range fields[2:] {
		tags, ok := strings.CutPrefix(f, "#")
		if !ok {
			continue
		}
		for t := range strings.SplitSeq(tags, ",") {
			if le, ok := strings.CutPrefix(t, "le:"); ok {
				for i, l := range gapLabels {
					if l == le {
						counts[i] += int64(v)
					}
				}
			}
		}
	}
}

// buckets are the gaps per bucket, not cumulative: up to 1ms, 1-5ms,
// 5-20ms, 20-100ms, over 100ms.
func (g gapFigures) buckets() [len(gapLabels)]int64 { return perBucket(g.le) }

// flushBuckets are the same of the gaps during a flush.
func (g gapFigures) flushBuckets() [len(gapLabels)]int64 { return perBucket(g.flushLe) }

func perBucket(le [len(gapLabels)]int64) [len(gapLabels)]int64 {
	var b [len(gapLabels)]int64
	for i := range le {
		b[i] = le[i]
		if i > 0 {
			b[i] -= le[i-1]
		}
	}
	return b
}

// String is a short form for progress lines: the longest gap and the gaps
// over 5 ms.
func (g gapFigures) String() string {
	if g.reports == 0 {
		return "no reader gaps reported"
	}
	return fmt.Sprintf("max reader gap %v (during a flush %v), %d gaps > 5ms of %d (during a flush %d)", g.max.Round(10*time.Microsecond), g.flushMax.Round(10*time.Microsecond), g.le[4]-g.le[1], g.le[4], g.flushLe[4]-g.flushLe[1])
}

// statsSink is the UDP socket veneur's stats_address points at during a
// trial: it keeps the reader-gap figures of what arrives.
type statsSink struct {
	conn net.PacketConn
	mu   sync.Mutex
	gaps gapFigures
	done chan struct{}
}

func newStatsSink() (*statsSink, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("self-metrics socket on 127.0.0.1:0: %w", err)
	}
	s := &statsSink{conn: c, done: make(chan struct{})}
	go s.read()
	return s, nil
}

func (s *statsSink) addr() string { return s.conn.LocalAddr().String() }

func (s *statsSink) read() {
	defer close(s.done)
	buf := make([]byte, 65536)
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		s.mu.Lock()
		for l := range bytes.SplitSeq(buf[:n], []byte("\n")) {
			s.gaps.add(l)
		}
		s.mu.Unlock()
	}
}

// close reads what is still queued (veneur sends its last self-metrics as
// it exits), closes the socket and returns the figures.
func (s *statsSink) close() gapFigures {
	s.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	<-s.done
	s.conn.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gaps
}
