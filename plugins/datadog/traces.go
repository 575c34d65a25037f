package datadog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/DataDog/datadog-go/v5/statsd"

	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/ssf"
)

// TraceConfig sets up a TraceSink.
type TraceConfig struct {
	// Address is the trace agent's base URL (trace_api_address), such
	// as http://localhost:8126.
	Address string
	// Client sends the requests; nil means http.DefaultClient. The
	// delivery's Timeout bounds each request either way.
	Client *http.Client
	// Delivery bounds the retries and the spool; zero fields take their
	// defaults (plugins.DefaultDelivery).
	Delivery plugins.DeliveryConfig
}

// TraceSink puts SSF trace spans to a Datadog trace agent, through a
// delivery queue (destination:trace_api, self-metric prefix trace_api,
// whose items are spans).
type TraceSink struct {
	url    string
	poster plugins.Poster
	stats  statsd.ClientInterface
	queue  *plugins.Queue
}

var (
	_ plugins.Sink     = (*TraceSink)(nil)
	_ plugins.Closer   = (*TraceSink)(nil)
	_ plugins.Reporter = (*TraceSink)(nil)
)

// NewTraces returns a TraceSink for cfg, or an error naming the config key
// at fault.
func NewTraces(cfg TraceConfig, env plugins.Env) (*TraceSink, error) {
	err := errors.Join(
		plugins.CheckURL("trace_api_address", cfg.Address, "http://localhost:8126"),
		cfg.Delivery.Validate())
	if err != nil {
		return nil, err
	}
	client := cfg.Client
	if client == nil {
		client = http.DefaultClient
	}
	stats := env.Stats
	if stats == nil {
		stats = &statsd.NoOpClient{}
	}
	t := &TraceSink{
		url:    strings.TrimRight(cfg.Address, "/") + "/v0.3/traces",
		poster: plugins.Poster{Client: client},
		stats:  stats,
	}
	t.queue = plugins.NewQueue("trace_api", &t.poster, cfg.Delivery, env, "trace_api")
	return t, nil
}

// Name tags the sink's self-metrics.
func (t *TraceSink) Name() string { return "trace_api" }

// Flush encodes the batch's spans, grouped by trace, as one request and
// enqueues it; once the agent took it, the spans are counted in
// ssf.spans_flushed_total. With no spans it sends nothing. The body stays
// plain JSON: the agent's /v0.3/traces is on the same host, and it is not
// known to take compressed bodies.
func (t *TraceSink) Flush(ctx context.Context, b *plugins.Batch) error {
	if len(b.Spans) == 0 {
		return nil
	}
	body, err := json.Marshal(datadogTraces(b.Spans))
	if err != nil {
		return fmt.Errorf("encoding %d spans: %w", len(b.Spans), err)
	}
	n := int64(len(b.Spans))
	t.queue.Send(plugins.Delivery{
		Request: plugins.Request{Method: http.MethodPut, URL: t.url, What: t.url, Body: body, ContentType: "application/json"},
		Count:   len(b.Spans),
		OnAccepted: func() {
			t.stats.Count("ssf.spans_flushed_total", n, nil, 1)
		},
	})
	return nil
}

// Close delivers what the queue holds until ctx ends, and drops the rest.
func (t *TraceSink) Close(ctx context.Context) error { return t.queue.Close(ctx) }

// Report sends the delivery self-metrics.
func (t *TraceSink) Report(stats statsd.ClientInterface) { t.queue.Report(stats) }

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
