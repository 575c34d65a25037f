package veneur

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/veneur/veneur/samplers"
)

// printSink writes one readable line per series to standard output. It is
// the sink when api_hostname is empty, so a development instance shows what
// it would send.
type printSink struct {
	mu        sync.Mutex
	w         io.Writer
	hostname  string
	tags      []string
	intervalS int64
}

func newPrintSink(w io.Writer, cfg Config, interval time.Duration) *printSink {
	if w == nil {
		w = os.Stdout
	}
	secs := int64(math.Round(interval.Seconds()))
	if secs < 1 {
		secs = 1
	}
	return &printSink{w: w, hostname: cfg.Hostname, tags: cfg.Tags, intervalS: secs}
}

func (p *printSink) Name() string { return "stdout" }

// Flush prints lines such as
//
//	flush 2026-11-25T03:40:00Z api.requests rate 0.7 host=web1 tags=[code:200 env:dev]
func (p *printSink) Flush(_ context.Context, metrics []samplers.InterMetric) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	bw := bufio.NewWriter(p.w)
	var b []byte
	for i := range metrics {
		m := &metrics[i]
		b = append(b[:0], "flush "...)
		b = time.Unix(m.Timestamp, 0).UTC().AppendFormat(b, time.RFC3339)
		b = append(b, ' ')
		b = append(b, m.Name...)
		b = append(b, m.Suffix...)
		b = append(b, ' ')
		b = append(b, m.Kind.String()...)
		b = append(b, ' ')
		b = strconv.AppendFloat(b, m.Value, 'g', -1, 64)
		if m.Kind == samplers.RateKind {
			b = append(b, " interval="...)
			b = strconv.AppendInt(b, p.intervalS, 10)
		}
		host := m.Host
		if host == "" {
			host = p.hostname
		}
		if host != "" {
			b = append(b, " host="...)
			b = append(b, host...)
		}
		if m.Device != "" {
			b = append(b, " device="...)
			b = append(b, m.Device...)
		}
		b = append(b, " tags=["...)
		n := 0
		for _, list := range [2][]string{m.Tags, p.tags} {
			for _, t := range list {
				if n > 0 {
					b = append(b, ' ')
				}
				b = append(b, t...)
				n++
			}
		}
		b = append(b, "]\n"...)
		bw.Write(b)
	}
	return bw.Flush()
}

// FlushEvents prints lines such as
//
//	event 2026-11-25T03:40:00Z "Deploy" "v42 is out" host=web1 alert_type=success tags=[env:dev]
//	check 2026-11-25T03:40:00Z db.up status=2 host=db1 message="primary down" tags=[env:dev]
func (p *printSink) FlushEvents(_ context.Context, events []samplers.Event, checks []samplers.ServiceCheck) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	bw := bufio.NewWriter(p.w)
	host := func(h string) string {
		if h == "" {
			return p.hostname
		}
		return h
	}
	tags := func(t []string) string {
		return strings.Join(append(append([]string{}, t...), p.tags...), " ")
	}
	when := func(ts int64) string { return time.Unix(ts, 0).UTC().Format(time.RFC3339) }
	for _, e := range events {
		fmt.Fprintf(bw, "event %s %q %q host=%s", when(e.Timestamp), e.Title, e.Text, host(e.Host))
		for _, f := range [][2]string{{"aggregation_key", e.AggregationKey}, {"priority", e.Priority}, {"source_type", e.SourceType}, {"alert_type", e.AlertType}} {
			if f[1] != "" {
				fmt.Fprintf(bw, " %s=%s", f[0], f[1])
			}
		}
		fmt.Fprintf(bw, " tags=[%s]\n", tags(e.Tags))
	}
	for _, c := range checks {
		fmt.Fprintf(bw, "check %s %s status=%d host=%s message=%q tags=[%s]\n", when(c.Timestamp), c.Name, c.Status, host(c.Host), c.Message, tags(c.Tags))
	}
	return bw.Flush()
}
