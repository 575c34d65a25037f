// Package stdout prints what veneur would publish, one readable line per
// flushed value, event and service check, for a development instance with
// no destination configured. The lines are
//
//	flush 2026-11-25T03:40:00Z api.requests rate 0.7 interval=10 host=web1 tags=[code:200 env:dev]
//	flush 2026-11-25T03:40:00Z disk.used gauge 42 host=web1 device=sda tags=[env:dev]
//	event 2026-11-25T03:40:00Z "Deploy" "v42 is out" host=web1 alert_type=success tags=[env:dev]
//	check 2026-11-25T03:40:00Z db.up status=2 host=db1 message="primary down" tags=[env:dev]
//
// with times in UTC, the metric name with its aggregate suffix, values in
// the shortest form that reads back exactly, interval= (the flush interval
// in seconds) on rates only, the host of the series or event or else the
// configured hostname (omitted for a value when both are empty), device=
// when the series has one, and the item's tags followed by the configured
// ones. An event's aggregation_key, priority, source_type and alert_type
// appear when set. Titles, texts and messages are quoted as Go strings.
// Each flush prints its values first, then its events, then its checks.
package stdout

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// Sink prints batches to a writer.
type Sink struct {
	// mu keeps the lines of concurrent flushes apart.
	mu        sync.Mutex
	w         io.Writer
	common    plugins.Common
	intervalS int64
}

var _ plugins.Sink = (*Sink)(nil)

// New returns a Sink printing to w; nil means os.Stdout.
func New(w io.Writer, env plugins.Env) *Sink {
	if w == nil {
		w = os.Stdout
	}
	return &Sink{w: w, common: env.Common, intervalS: env.IntervalSeconds()}
}

// Name tags the sink's self-metrics.
func (p *Sink) Name() string { return "stdout" }

// Flush prints the batch's metrics, then its events and service checks.
// A failed write of the events and checks is marked as part "events"
// (plugins.Part); it is tried even when the metrics' write failed.
func (p *Sink) Flush(_ context.Context, b *plugins.Batch) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	bw := bufio.NewWriter(p.w)
	var metricsErr, eventsErr error
	if len(b.Metrics) > 0 {
		p.printMetrics(bw, b.Metrics)
		if metricsErr = bw.Flush(); metricsErr != nil {
			bw.Reset(p.w) // drop the lines left and the error
		}
	}
	if len(b.Events) > 0 || len(b.Checks) > 0 {
		p.printEvents(bw, b.Events, b.Checks)
		eventsErr = bw.Flush()
	}
	return errors.Join(metricsErr, plugins.Part("events", eventsErr))
}

func (p *Sink) printMetrics(bw *bufio.Writer, metrics []samplers.InterMetric) {
	var b []byte
	for i := range metrics {
		m := &metrics[i]
		b = append(b[:0], "flush "...)
		b = time.Unix(m.Timestamp, 0).UTC().AppendFormat(b, time.RFC3339)
		b = append(b, ' ')
		b = append(b, m.Name...)
		b = append(b, m.Suffix.String()...)
		b = append(b, ' ')
		b = append(b, m.Kind.String()...)
		b = append(b, ' ')
		b = strconv.AppendFloat(b, m.Value, 'g', -1, 64)
		if m.Kind == samplers.RateKind {
			b = append(b, " interval="...)
			b = strconv.AppendInt(b, p.intervalS, 10)
		}
		if host := p.common.Host(m.Host); host != "" {
			b = append(b, " host="...)
			b = append(b, host...)
		}
		if m.Device != "" {
			b = append(b, " device="...)
			b = append(b, m.Device...)
		}
		b = append(b, " tags=["...)
		n := 0
		for _, list := range [2][]string{m.Tags, p.common.Tags} {
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
}

func (p *Sink) printEvents(bw *bufio.Writer, events []samplers.Event, checks []samplers.ServiceCheck) {
	tags := func(t []string) string { return strings.Join(p.common.WithTags(t), " ") }
	when := func(ts int64) string { return time.Unix(ts, 0).UTC().Format(time.RFC3339) }
	for _, e := range events {
		fmt.Fprintf(bw, "event %s %q %q host=%s", when(e.Timestamp), e.Title, e.Text, p.common.Host(e.Host))
		for _, f := range [...][2]string{{"aggregation_key", e.AggregationKey}, {"priority", e.Priority}, {"source_type", e.SourceType}, {"alert_type", e.AlertType}} {
			if f[1] != "" {
				fmt.Fprintf(bw, " %s=%s", f[0], f[1])
			}
		}
		fmt.Fprintf(bw, " tags=[%s]\n", tags(e.Tags))
	}
	for _, c := range checks {
		fmt.Fprintf(bw, "check %s %s status=%d host=%s message=%q tags=[%s]\n",
			when(c.Timestamp), c.Name, c.Status, p.common.Host(c.Host), c.Message, tags(c.Tags))
	}
}
