// Package datadog publishes to Datadog.
//
// Sink posts the flushed metrics to the v1 series API,
// POST API/api/v1/series?api_key=KEY: JSON bodies
//
//	{"series":[{"metric":"a.b","points":[[UNIXTIME,VALUE]],"tags":[...],"host":"h","device_name":"d","type":"gauge"}, ...]}
//
// of at most flush_max_per_body series each, zlib-compressed
// (Content-Encoding: deflate), several posted at once. A rate series is
// "type":"rate" with "interval" (the flush interval in seconds); host is
// omitted when neither the series nor the config names one, device_name
// when the series has no device; values JSON cannot carry (NaN, ±Inf) are
// skipped. It posts each DogStatsD event, as one JSON object, to
// /api/v1/events and the service checks together, as one JSON array, to
// /api/v1/check_run.
//
// TraceSink puts the SSF trace spans to a Datadog trace agent's
// /v0.3/traces, as a JSON array of traces, each an array of spans.
package datadog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"

	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// Config sets up a Sink.
// DefaultMaxPerBody is flush_max_per_body when the config leaves it unset.
const DefaultMaxPerBody = 5000

type Config struct {
	// APIHostname is the base URL of the Datadog API (api_hostname),
	// such as https://app.datadoghq.com.
	APIHostname string
	// APIKey is the API key (key). It is sent in the query string and
	// kept out of every error.
	APIKey string
	// MaxPerBody is the most series in one body (flush_max_per_body).
	MaxPerBody int
	// Client sends the requests; nil means http.DefaultClient. Flush's
	// context bounds each request either way.
	Client *http.Client
}

// Sink publishes series, events and service checks to the Datadog API.
type Sink struct {
	seriesURL string // with the key
	apiBase   string // without a trailing slash
	key       string
	poster    plugins.Poster
	common    plugins.Common
	intervalS int64
	// maxPerBody is the most series in one body.
	maxPerBody int
	stats      statsd.ClientInterface
	// tagsJSON and hostJSON are the config tags (each preceded by a comma)
	// and the default host member, escaped once instead of per series.
	tagsJSON []byte
	hostJSON []byte
	bufs     sync.Pool // *bytes.Buffer, one per body being built
	scratch  sync.Pool // *[]byte, JSON on its way to the compressor
}

var _ plugins.Sink = (*Sink)(nil)

// New returns a Sink for cfg, or an error naming the config key at fault.
func New(cfg Config, env plugins.Env) (*Sink, error) {
	var errs []error
	errs = append(errs, plugins.CheckURL("api_hostname", cfg.APIHostname, "https://app.datadoghq.com"))
	if cfg.MaxPerBody <= 0 {
		errs = append(errs, fmt.Errorf("flush_max_per_body = %d: must be greater than 0; leave it unset for %d", cfg.MaxPerBody, DefaultMaxPerBody))
	}
	if err := errors.Join(errs...); err != nil {
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
	var tagsJSON, hostJSON []byte
	for _, t := range env.Tags {
		tagsJSON = appendJSONString(append(tagsJSON, ','), t)
	}
	if env.Hostname != "" {
		hostJSON = appendJSONString(append(hostJSON, `,"host":`...), env.Hostname)
	}
	base := strings.TrimRight(cfg.APIHostname, "/")
	return &Sink{
		seriesURL:  base + "/api/v1/series?api_key=" + cfg.APIKey,
		apiBase:    base,
		key:        cfg.APIKey,
		poster:     plugins.Poster{Client: client, Secret: cfg.APIKey},
		common:     env.Common,
		intervalS:  env.IntervalSeconds(),
		maxPerBody: cfg.MaxPerBody,
		stats:      stats,
		tagsJSON:   tagsJSON,
		hostJSON:   hostJSON,
		bufs:       sync.Pool{New: func() any { return new(bytes.Buffer) }},
		scratch: sync.Pool{New: func() any {
			b := make([]byte, 0, scratchFlush+4096)
			return &b
		}},
	}, nil
}

// Name tags the sink's self-metrics.
func (d *Sink) Name() string { return "datadog" }

// Flush posts the batch's metrics to the series API and, at the same time,
// its events and service checks; an empty part sends nothing. The error
// joins the failures of the series and, marked as part "events"
// (plugins.Part), those of the events and checks.
func (d *Sink) Flush(ctx context.Context, b *plugins.Batch) error {
	var eventsErr error
	var wg sync.WaitGroup
	if len(b.Events) > 0 || len(b.Checks) > 0 {
		wg.Go(func() { eventsErr = d.flushEvents(ctx, b.Events, b.Checks) })
	}
	var seriesErr error
	if len(b.Metrics) > 0 {
		seriesErr = d.flushSeries(ctx, b.Metrics)
	}
	wg.Wait()
	return errors.Join(seriesErr, plugins.Part("events", eventsErr))
}

// maxConcurrentPosts bounds the bodies built and posted at once. Each one
// holds a compressor and a compressed body, so a flush of a few hundred
// thousand series must not start them all together.
const maxConcurrentPosts = 4

// flushSeries posts metrics in chunks of at most flush_max_per_body
// series, several at once, and returns the errors of the chunks that
// failed.
func (d *Sink) flushSeries(ctx context.Context, metrics []samplers.InterMetric) error {
	start := time.Now()
	chunks := (len(metrics) + d.maxPerBody - 1) / d.maxPerBody
	d.stats.Count("flush.post_metrics_total", int64(len(metrics)), nil, 1)
	errs := make([]error, chunks)
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxConcurrentPosts)
	for i := range chunks {
		lo := i * d.maxPerBody
		hi := min(lo+d.maxPerBody, len(metrics))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = d.post(ctx, metrics[lo:hi])
		})
	}
	wg.Wait()
	d.stats.TimeInMilliseconds("flush.total_duration_ns", nanos(time.Since(start)), nil, 1)
	err := errors.Join(errs...)
	if err != nil {
		d.stats.Count("flush.error_total", 1, nil, 1)
	}
	return err
}

// post encodes one body of series straight into the compressor and posts
// it.
func (d *Sink) post(ctx context.Context, metrics []samplers.InterMetric) error {
	start := time.Now()
	body := d.bufs.Get().(*bytes.Buffer)
	defer d.bufs.Put(body)
	body.Reset()
	err := plugins.Compress(body, plugins.Deflate, func(w io.Writer) error {
		return d.writeSeries(w, metrics)
	})
	if err != nil {
		return fmt.Errorf("encoding %d series: %w", len(metrics), err)
	}
	d.stats.TimeInMilliseconds("flush.duration_ns", nanos(time.Since(start)), []string{"part:marshal"}, 1)
	d.stats.Histogram("flush.content_length_bytes", float64(body.Len()), nil, 1)

	start = time.Now()
	err = d.poster.Send(ctx, plugins.Request{
		Method: http.MethodPost, URL: d.seriesURL, What: "the Datadog API", Body: body.Bytes(),
		ContentType: "application/json", ContentEncoding: string(plugins.Deflate),
	})
	// The post is timed when the API answered, whatever it answered; a
	// request that got no answer is not.
	var se *plugins.StatusError
	if err == nil || errors.As(err, &se) {
		d.stats.TimeInMilliseconds("flush.duration_ns", nanos(time.Since(start)), []string{"part:post"}, 1)
	}
	if err != nil {
		return fmt.Errorf("posting %d series: %w", len(metrics), err)
	}
	return nil
}

// nanos gives a duration in nanoseconds for the *_duration_ns self-metrics,
// which are timers whose values are nanoseconds, as their names say.
func nanos(d time.Duration) float64 { return float64(d.Nanoseconds()) }
