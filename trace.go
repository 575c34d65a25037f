package veneur

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/ssf"
)

// maxSpansPerInterval bounds the trace spans one interval keeps; more are
// dropped and counted.
const maxSpansPerInterval = 10_000

// SSF errors, by the cause tag of veneur.ssf.error_total.
const (
	ssfErrDecode = iota
	ssfErrTooLong
	ssfErrMetric
)

var ssfErrCauses = [...]string{"decode", "too_long", "invalid_metric"}

// traceStats are the SSF counters the flusher reports.
type traceStats struct {
	received atomic.Uint64
	errs     [len(ssfErrCauses)]atomic.Uint64
}

// spanBuffer keeps the trace spans of the interval.
type spanBuffer struct {
	mu      sync.Mutex
	spans   []*ssf.SSFSpan
	dropped uint64
}

func (b *spanBuffer) add(sp *ssf.SSFSpan) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.spans) >= maxSpansPerInterval {
		b.dropped++
		return
	}
	b.spans = append(b.spans, sp)
}

func (b *spanBuffer) swap() ([]*ssf.SSFSpan, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	spans, dropped := b.spans, b.dropped
	b.spans, b.dropped = nil, 0
	return spans, dropped
}

// readTraces reads one SSF span per datagram from conn until the stop flag
// is set and the read woken. The span's metrics go through the DogStatsD
// path (in); a span with trace ids and times is kept for the trace API.
func (s *Server) readTraces(conn *net.UDPConn, in *ingester) {
	buf := make([]byte, s.cfg.TraceMaxLengthBytes+1)
	var line []byte
	for {
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.ingest.readErrors.Add(1)
			continue
		}
		s.traces.received.Add(1)
		if n > s.cfg.TraceMaxLengthBytes {
			s.traces.errs[ssfErrTooLong].Add(1)
			continue
		}
		span := new(ssf.SSFSpan)
		if err := proto.Unmarshal(buf[:n], span); err != nil {
			s.traces.errs[ssfErrDecode].Add(1)
			continue
		}
		for _, m := range span.Metrics {
			if m.Metric == ssf.SSFSample_STATUS {
				if m.Name == "" {
					s.traces.errs[ssfErrMetric].Add(1)
					continue
				}
				in.events.addCheck(samplers.ServiceCheck{
					Name: m.Name, Status: int(m.Status) & 3, Timestamp: secondsOr(m.Timestamp), Message: m.Message, Tags: ssfTags(m.Tags),
				})
				continue
			}
			var ok bool
			if line, ok = appendSSFLine(line[:0], m); !ok {
				s.traces.errs[ssfErrMetric].Add(1)
				continue
			}
			in.handleLine(line)
		}
		in.flush()
		if span.Id != 0 && span.TraceId != 0 && span.StartTimestamp != 0 && span.EndTimestamp != 0 {
			s.spans.add(span)
		}
	}
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
// names and set members DogStatsD cannot carry; in tags, the DogStatsD
// separators ',' and '|' become '_'.
func appendSSFLine(b []byte, m *ssf.SSFSample) ([]byte, bool) {
	if m.Name == "" || strings.ContainsAny(m.Name, ":|\n") {
		return b, false
	}
	b = append(b, m.Name...)
	b = append(b, ':')
	switch m.Metric {
	case ssf.SSFSample_SET:
		if m.Message == "" || strings.ContainsAny(m.Message, "|\n") {
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

// ssfTagCleaner replaces the DogStatsD separators in SSF tags.
var ssfTagCleaner = strings.NewReplacer(",", "_", "|", "_", "\n", "_")

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

// ddSpan is a span in the body of the Datadog trace agent's /v0.3/traces.
type ddSpan struct {
	TraceID  int64              `json:"trace_id"`
	SpanID   int64              `json:"span_id"`
	ParentID int64              `json:"parent_id,omitempty"`
	Name     string             `json:"name"`
	Resource string             `json:"resource,omitempty"`
	Service  string             `json:"service"`
	Type     string             `json:"type"`
	Start    int64              `json:"start"`
	Duration int64              `json:"duration"`
	Error    int64              `json:"error"`
	Meta     map[string]string  `json:"meta"`
	Metrics  map[string]float64 `json:"metrics"`
}

// datadogTraces groups spans by trace, in the agent's format. The span's
// tags become meta; the tags name (when the span has none), resource and
// type fill those fields and leave meta.
func datadogTraces(spans []*ssf.SSFSpan) [][]ddSpan {
	var traces [][]ddSpan
	index := map[int64]int{}
	for _, sp := range spans {
		meta := make(map[string]string, len(sp.Tags)+1)
		for k, v := range sp.Tags {
			meta[k] = v
		}
		name := sp.Name
		if name == "" {
			name = meta["name"]
		}
		delete(meta, "name")
		resource, typ := meta["resource"], meta["type"]
		delete(meta, "resource")
		delete(meta, "type")
		if resource == "" {
			resource = name
		}
		if typ == "" {
			typ = "custom"
		}
		if sp.Indicator {
			meta["indicator"] = "true"
		}
		d := ddSpan{
			TraceID: sp.TraceId, SpanID: sp.Id, ParentID: sp.ParentId, Name: name, Resource: resource,
			Service: sp.Service, Type: typ, Start: sp.StartTimestamp, Duration: sp.EndTimestamp - sp.StartTimestamp,
			Meta: meta, Metrics: map[string]float64{},
		}
		if sp.Error {
			d.Error = 1
		}
		i, ok := index[sp.TraceId]
		if !ok {
			i = len(traces)
			index[sp.TraceId] = i
			traces = append(traces, nil)
		}
		traces[i] = append(traces[i], d)
	}
	return traces
}

// flushSpans reports the SSF counters and puts the interval's spans to the
// trace agent at trace_api_address, in the background.
func (s *Server) flushSpans(ctx context.Context) {
	st := &s.traces
	if n := st.received.Swap(0); n > 0 {
		s.stats.Count("ssf.received_total", int64(n), nil, 1)
	}
	for i := range st.errs {
		if n := st.errs[i].Swap(0); n > 0 {
			s.stats.Count("ssf.error_total", int64(n), []string{"cause:" + ssfErrCauses[i]}, 1)
		}
	}
	spans, dropped := s.spans.swap()
	if dropped > 0 {
		s.stats.Count("ssf.spans_dropped_total", int64(dropped), nil, 1)
		s.log.WithField("dropped", dropped).Warn("more trace spans than one interval keeps; the rest were dropped")
	}
	if len(spans) == 0 || s.cfg.TraceAPIAddress == "" {
		return
	}
	s.background(ctx, func(fctx context.Context) {
		if err := s.putTraces(fctx, spans); err != nil {
			s.stats.Count("sink.error_total", 1, []string{"sink:trace_api"}, 1)
			s.log.WithError(err).WithField("spans", len(spans)).Error("sending trace spans failed")
			return
		}
		s.stats.Count("ssf.spans_flushed_total", int64(len(spans)), nil, 1)
	})
}

func (s *Server) putTraces(ctx context.Context, spans []*ssf.SSFSpan) error {
	url := strings.TrimRight(s.cfg.TraceAPIAddress, "/") + "/v0.3/traces"
	return sendJSON(ctx, s.traceClient, http.MethodPut, url, url, datadogTraces(spans))
}
