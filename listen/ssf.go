package listen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/internal/counter"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/ssf"
)

// SSF errors, by the cause tag of ssf.error_total: the indexes of the
// causes in SSF.errs.
const (
	ssfErrDecode = iota
	ssfErrTooLong
	ssfErrMetric
)

// ssfErrCauses names the causes, in the order of the indexes above.
var ssfErrCauses = [...]string{ssfErrDecode: "decode", ssfErrTooLong: "too_long", ssfErrMetric: "invalid_metric"}

// SSFConfig are the settings of the SSF span listener.
type SSFConfig struct {
	// Address is trace_address, host:port.
	Address string
	// MaxLength is trace_max_length_bytes: longer datagrams are skipped.
	MaxLength int
}

// SSF reads one SSF span per UDP datagram. The span's metrics go to the
// Ingester as DogStatsD lines (STATUS samples as service checks), and a
// span with trace ids and times goes to it as a span.
type SSF struct {
	cfg         SSFConfig
	newIngester NewIngester
	opts        Options
	log         *logrus.Logger

	life     stopper
	conn     *net.UDPConn
	addr     atomic.Pointer[net.Addr]
	stopping atomic.Bool
	reader   sync.WaitGroup

	received atomic.Uint64
	readErrs atomic.Uint64
	errs     *counter.ByCause
}

var _ Listener = (*SSF)(nil)

// NewSSF returns an SSF listener on cfg. It binds nothing.
func NewSSF(cfg SSFConfig, newIngester NewIngester, opts Options) (*SSF, error) {
	if err := checkConfig("ssf", cfg.Address, cfg.MaxLength, newIngester); err != nil {
		return nil, err
	}
	return &SSF{
		cfg:         cfg,
		newIngester: newIngester,
		opts:        opts,
		log:         opts.logger(),
		errs:        counter.New(ssfErrCauses[:]...),
	}, nil
}

// Start binds the address and starts the reader goroutine.
func (s *SSF) Start() error {
	return s.life.start("ssf", func() error {
		ua, err := net.ResolveUDPAddr("udp", s.cfg.Address)
		if err == nil {
			s.conn, err = net.ListenUDP("udp", ua)
		}
		if err != nil {
			return fmt.Errorf("trace_address %q: %w", s.cfg.Address, err)
		}
		a := s.conn.LocalAddr()
		s.addr.Store(&a)
		in := s.newIngester()
		s.reader.Add(1)
		go func() {
			defer s.reader.Done()
			defer s.opts.guard()()
			s.read(in)
		}()
		return nil
	})
}

// Stop lets the reader take what is already queued until a read deadline
// tcpDrainIdle away, then closes the socket once it has returned.
func (s *SSF) Stop(ctx context.Context) error {
	return s.life.stop(ctx, "ssf", func(done chan<- struct{}) {
		s.stopping.Store(true)
		s.conn.SetReadDeadline(time.Now().Add(tcpDrainIdle))
		go func() {
			defer close(done)
			defer s.opts.guard()()
			s.reader.Wait()
			s.conn.Close()
		}()
	})
}

// Addr is the bound address, nil before Start.
func (s *SSF) Addr() net.Addr {
	if a := s.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Report sends ssf.received_total (datagrams), ssf.error_total by cause
// and packet.read_error_total (failed socket reads).
func (s *SSF) Report(stats statsd.ClientInterface) {
	if n := s.received.Swap(0); n > 0 {
		stats.Count("ssf.received_total", int64(n), nil, 1)
	}
	s.errs.Report(stats, "ssf.error_total")
	if n := s.readErrs.Swap(0); n > 0 {
		stats.Count("packet.read_error_total", int64(n), nil, 1)
	}
}

// read reads one SSF span per datagram until the stop flag is set and the
// read woken by the deadline. The span's metrics go through the DogStatsD
// path as lines, its STATUS samples as service checks; a span with trace
// ids and times goes to Span. The ingester is flushed after every span.
func (s *SSF) read(in Ingester) {
	maxLen := s.cfg.MaxLength
	buf := make([]byte, maxLen+1)
	var line []byte
	for {
		n, _, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.readErrs.Add(1)
			continue
		}
		s.received.Add(1)
		if n > maxLen {
			s.errs.Add(ssfErrTooLong, 1)
			continue
		}
		line = s.handle(in, buf[:n], line)
	}
}

// handle decodes one SSF datagram and hands its metrics, checks and span to
// in, then flushes in. line is scratch space for the DogStatsD lines; handle
// returns it for the next datagram.
func (s *SSF) handle(in Ingester, data, line []byte) []byte {
	span := new(ssf.SSFSpan)
	if err := proto.Unmarshal(data, span); err != nil {
		s.errs.Add(ssfErrDecode, 1)
		return line
	}
	for _, m := range span.Metrics {
		if m.Metric == ssf.SSFSample_STATUS {
			if m.Name == "" {
				s.errs.Add(ssfErrMetric, 1)
				continue
			}
			in.Check(samplers.ServiceCheck{
				Name: m.Name, Status: int(m.Status) & 3, Timestamp: secondsOr(m.Timestamp), Message: m.Message, Tags: ssfTags(m.Tags),
			})
			continue
		}
		var ok bool
		if line, ok = appendSSFLine(line[:0], m); !ok {
			s.errs.Add(ssfErrMetric, 1)
			continue
		}
		in.Line(line)
	}
	if span.Id != 0 && span.TraceId != 0 && span.StartTimestamp != 0 && span.EndTimestamp != 0 {
		in.Span(span)
	}
	in.Flush()
	return line
}

// secondsOr turns SSF's nanosecond timestamp into unix seconds, or now.
func secondsOr(ns int64) int64 {
	if ns <= 0 {
		return time.Now().Unix()
	}
	return ns / int64(time.Second)
}

// appendSSFLine renders an SSF metric as the DogStatsD line with the same
// meaning, so that it takes the same path as any other line. It refuses
// names and set members DogStatsD cannot carry: a name with a separator
// (':', '|', newline) or that starts as an event does ("_e{"), a member
// with '|' or a newline or that ends in '\r' (a line's trailing '\r' is
// dropped). In tags, ',', '|', '\n' and '\r' become '_'.
func appendSSFLine(b []byte, m *ssf.SSFSample) ([]byte, bool) {
	if m.Name == "" || strings.ContainsAny(m.Name, ":|\n") || strings.HasPrefix(m.Name, "_e{") {
		return b, false
	}
	b = append(b, m.Name...)
	b = append(b, ':')
	switch m.Metric {
	case ssf.SSFSample_SET:
		if m.Message == "" || strings.ContainsAny(m.Message, "|\n") || strings.HasSuffix(m.Message, "\r") {
			return b, false
		}
		b = append(b, m.Message...)
		b = append(b, "|s"...)
	case ssf.SSFSample_COUNTER, ssf.SSFSample_GAUGE, ssf.SSFSample_HISTOGRAM:
		v := float64(m.Value)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return b, false
		}
		b = strconv.AppendFloat(b, v, 'g', -1, 32)
		b = append(b, '|', "cgh"[m.Metric])
		if r := m.SampleRate; r > 0 && r < 1 {
			b = append(b, "|@"...)
			b = strconv.AppendFloat(b, float64(r), 'g', -1, 32)
		}
	default:
		return b, false
	}
	if len(m.Tags) > 0 {
		b = append(b, "|#"...)
		for i, t := range ssfTags(m.Tags) {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, t...)
		}
	}
	return b, true
}

// ssfTagCleaner replaces the DogStatsD separators in SSF tags. It is built
// once and never changed; a strings.Replacer is safe for concurrent use.
var ssfTagCleaner = strings.NewReplacer(",", "_", "|", "_", "\n", "_", "\r", "_")

// ssfTags turns an SSF tag map into sorted DogStatsD tags: key:value, or
// key alone when the value is empty.
func ssfTags(tags map[string]string) []string {
	out := make([]string, 0, len(tags))
	for k, v := range tags {
		if k == "" {
			continue
		}
		if v == "" {
			out = append(out, ssfTagCleaner.Replace(k))
		} else {
			out = append(out, ssfTagCleaner.Replace(k)+":"+ssfTagCleaner.Replace(v))
		}
	}
	slices.Sort(out)
	return out
}
