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
//
// Both deliver through plugins.Queue: Flush encodes and enqueues, and
// returns; the queue retries what fails, in order of flush, within the
// bounds of a plugins.DeliveryConfig. Close delivers what still waits at
// shutdown; Report sends the delivery self-metrics.
package datadog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"

	"github.com/veneur/veneur/internal/yield"
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
	// Client sends the requests; nil means http.DefaultClient. The
	// delivery's Timeout bounds each request either way.
	Client *http.Client
	// Delivery bounds the retries and the spool of the series, and
	// apart, of the events and service checks; zero fields take their
	// defaults (plugins.DefaultDelivery).
	Delivery plugins.DeliveryConfig
}

// Sink publishes series, events and service checks to the Datadog API.
//
// Series and events have a queue each (destination:datadog and
// destination:datadog_events, both with the self-metric prefix flush):
// the events API taking one event per request, a backlog of events must
// neither hold up the next flush's series nor take their spool's room, and
// their counts (events and service checks) stay apart from the series'.
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
	// rateTail ends the object of a rate: its type and interval.
	rateTail []byte
	bufs     sync.Pool // *bytes.Buffer, one per body being built
	// bodies holds the memory of delivered bodies for the next ones: a
	// flush of 100,000 series sends 2 MB of them, most of what it
	// allocates, which would otherwise pace the GC.
	bodies  chan []byte
	scratch sync.Pool // *[]byte, JSON on its way to the compressor
	// series and events deliver the series bodies and the events and
	// checks.
	series, events *plugins.Queue
}

var (
	_ plugins.Sink     = (*Sink)(nil)
	_ plugins.Closer   = (*Sink)(nil)
	_ plugins.Reporter = (*Sink)(nil)
)

// New returns a Sink for cfg, or an error naming the config key at fault.
func New(cfg Config, env plugins.Env) (*Sink, error) {
	var errs []error
	errs = append(errs, plugins.CheckURL("api_hostname", cfg.APIHostname, "https://app.datadoghq.com"))
	if cfg.APIHostname != "" {
		errs = append(errs, checkKey(cfg.APIHostname, cfg.APIKey))
	}
	if cfg.MaxPerBody <= 0 {
		errs = append(errs, fmt.Errorf("flush_max_per_body = %d: must be greater than 0; leave it unset for %d", cfg.MaxPerBody, DefaultMaxPerBody))
	}
	errs = append(errs, cfg.Delivery.Validate())
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
	d := &Sink{
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
		rateTail:   fmt.Appendf(nil, `,"type":"rate","interval":%d}`, env.IntervalSeconds()),
		bufs:       sync.Pool{New: func() any { return new(bytes.Buffer) }},
		bodies:     make(chan []byte, maxFreeBodies),
		scratch: sync.Pool{New: func() any {
			b := make([]byte, 0, scratchFlush+4096)
			return &b
		}},
	}
	d.series = plugins.NewQueue("datadog", &d.poster, cfg.Delivery, env, "flush")
	d.events = plugins.NewQueue("datadog_events", &d.poster, cfg.Delivery, env, "flush")
	return d, nil
}

// Name tags the sink's self-metrics.
func (d *Sink) Name() string { return "datadog" }

// Flush encodes the batch's metrics into series bodies, and its events
// and service checks into their requests, and hands them to the delivery
// queues; an empty part sends nothing. It does not wait for the API. The
// error joins what failed to encode: series, and marked as part "events"
// (plugins.Part), events and checks.
func (d *Sink) Flush(ctx context.Context, b *plugins.Batch) error {
	var eventsErr error
	if len(b.Events) > 0 || len(b.Checks) > 0 {
		eventsErr = d.flushEvents(b.Events, b.Checks)
	}
	var seriesErr error
	if len(b.Metrics) > 0 {
		seriesErr = d.flushSeries(b.Metrics)
	}
	return errors.Join(seriesErr, plugins.Part("events", eventsErr))
}

// Close delivers what the queues hold until ctx ends, and drops the rest.
func (d *Sink) Close(ctx context.Context) error {
	var seriesErr, eventsErr error
	var wg sync.WaitGroup
	wg.Go(func() { eventsErr = d.events.Close(ctx) })
	seriesErr = d.series.Close(ctx)
	wg.Wait()
	return errors.Join(seriesErr, eventsErr)
}

// Report sends the delivery self-metrics of the series and of the events.
func (d *Sink) Report(stats statsd.ClientInterface) {
	d.series.Report(stats)
	d.events.Report(stats)
}

// maxConcurrentEncodes bounds the bodies encoded at once. Each one holds a
// compressor, so a flush of a few hundred thousand series must not start
// them all together.
const maxConcurrentEncodes = 4

// flushSeries encodes metrics in bodies of at most flush_max_per_body
// series and enqueues them as one generation. The bodies that fail to
// encode are left out, and their errors returned.
//
// The calling goroutine and at most maxConcurrentEncodes-1 others, no
// more than there are Ps, take the bodies in turn. A goroutine per body
// would starve the UDP readers when they share one P: each new goroutine
// runs before a reader that yielded, for as long as bodies remain. The
// encoders yield every yield.Slice instead (see writeSeries).
func (d *Sink) flushSeries(metrics []samplers.InterMetric) error {
	chunks := (len(metrics) + d.maxPerBody - 1) / d.maxPerBody
	out := make([]plugins.Delivery, chunks)
	errs := make([]error, chunks)
	var next atomic.Int64
	encodeAll := func() {
		var y yield.Slicer
		for {
			i := int(next.Add(1)) - 1
			if i >= chunks {
				return
			}
			lo := i * d.maxPerBody
			hi := min(lo+d.maxPerBody, len(metrics))
			out[i], errs[i] = d.encode(metrics[lo:hi], &y)
		}
	}
	var wg sync.WaitGroup
	for range min(maxConcurrentEncodes, runtime.GOMAXPROCS(0), chunks) - 1 {
		wg.Go(encodeAll)
	}
	encodeAll()
	wg.Wait()
	ds := out[:0]
	for _, o := range out {
		if o.Count > 0 {
			ds = append(ds, o)
		}
	}
	d.series.Send(ds...)
	return errors.Join(errs...)
}

// encode builds one body of series, encoded straight into the compressor,
// as a request of the series API. Its Count is the series the body holds
// (values JSON cannot carry are left out); 0 when there are none.
func (d *Sink) encode(metrics []samplers.InterMetric, y *yield.Slicer) (plugins.Delivery, error) {
	start := time.Now()
	buf := d.bufs.Get().(*bytes.Buffer)
	defer d.bufs.Put(buf)
	buf.Reset()
	var n int
	err := plugins.Compress(buf, plugins.Deflate, func(w io.Writer) error {
		var err error
		n, err = d.writeSeries(w, metrics, y)
		return err
	})
	if err != nil {
		return plugins.Delivery{}, fmt.Errorf("encoding %d series: %w", len(metrics), err)
	}
	d.stats.TimeInMilliseconds("flush.duration_ns", nanos(time.Since(start)), []string{"part:marshal"}, 1)
	d.stats.Histogram("flush.content_length_bytes", float64(buf.Len()), nil, 1)
	// The pooled buffer goes back; the body waits in the queue, in
	// memory of its own, which comes back once the queue is done with it.
	body := append(d.takeBody(buf.Len()), buf.Bytes()...)
	return plugins.Delivery{
		Request: plugins.Request{
			Method: http.MethodPost, URL: d.seriesURL, What: "the Datadog API", Body: body,
			ContentType: "application/json", ContentEncoding: string(plugins.Deflate),
		},
		Count:   n,
		Release: func() { d.putBody(body) },
	}, nil
}

// maxFreeBodies bounds the bodies' memory kept for reuse: the bodies of
// one flush of 320,000 values (at flush_max_per_body's default).
const maxFreeBodies = 64

// takeBody returns an empty slice with room for n bytes, from a body
// delivered before when one is large enough.
func (d *Sink) takeBody(n int) []byte {
	select {
	case b := <-d.bodies:
		if cap(b) >= n {
			return b[:0]
		}
	default:
	}
	// A little room over: the next bodies are about as large.
	return make([]byte, 0, n+n/8)
}

// putBody keeps b for a later body, unless enough are kept.
func (d *Sink) putBody(b []byte) {
	select {
	case d.bodies <- b:
	default:
	}
}

// nanos gives a duration in nanoseconds for the *_duration_ns self-metrics,
// which are timers whose values are nanoseconds, as their names say.
func nanos(d time.Duration) float64 { return float64(d.Nanoseconds()) }
