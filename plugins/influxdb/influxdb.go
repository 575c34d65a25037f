// Package influxdb publishes flushed metrics to an InfluxDB 1.x server
// through its HTTP /write endpoint, in line protocol: gzip-compressed POSTs
// to /write with the query db=DATABASE, precision=s and, when configured,
// consistency, of at most Config.Batch points each. The writes of a flush
// go through a plugins.Queue (destination:influxdb, self-metric prefix
// influxdb, whose items are points): retried when the server fails or is
// unreachable, dropped when it refuses them (a 4xx, such as a missing
// database or a field type conflict), in order of flush.
//
// Each value is one point: the measurement is the metric name, the field is
// value (a float), the timestamp is the flush time in seconds. A DogStatsD
// tag key:value becomes the InfluxDB tag key=value, and a tag without a
// value becomes key=true; when a key repeats, its first value (in sorted
// tag order) is kept. The series' host (or the configured hostname) and
// device become the tags host and device, and the configured tags are
// added after the metric's own.
package influxdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/DataDog/datadog-go/v5/statsd"

	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// DefaultBatch is how many points one write request carries at most.
const DefaultBatch = 5000

// Config sets up a Sink. The hostname and the configured tags come from
// plugins.Env.
type Config struct {
	// Address is the server's base URL (influx_address), e.g.
	// http://influx:8086.
	Address string
	// Database is the database written to (influx_db_name); it must
	// exist.
	Database string
	// Consistency is any, one, quorum or all, or empty for the server's
	// default (influx_consistency).
	Consistency string
	// Batch is the most points per request; 0 means DefaultBatch.
	Batch int
	// Client posts the requests; nil means http.DefaultClient. The
	// delivery's Timeout bounds each request either way.
	Client *http.Client
	// Delivery bounds the retries and the spool; zero fields take their
	// defaults (plugins.DefaultDelivery).
	Delivery plugins.DeliveryConfig
}

// Sink writes to one InfluxDB database.
type Sink struct {
	url      string
	batch    int
	hostname string
	extra    []tag // the configured tags, parsed
	poster   plugins.Poster
	what     string // names the server in errors
	queue    *plugins.Queue
}

var (
	_ plugins.Sink     = (*Sink)(nil)
	_ plugins.Closer   = (*Sink)(nil)
	_ plugins.Reporter = (*Sink)(nil)
)

// New returns a Sink for cfg, or an error naming each config key at fault
// and its fix.
func New(cfg Config, env plugins.Env) (*Sink, error) {
	errs := []error{plugins.CheckURL("influx_address", cfg.Address, "http://influxdb:8086")}
	if cfg.Database == "" {
		errs = append(errs, errors.New("influx_address is set but influx_db_name is empty; name the database to write to"))
	}
	switch cfg.Consistency {
	case "", "any", "one", "quorum", "all":
	default:
		errs = append(errs, fmt.Errorf("influx_consistency %q: must be one of any, one, quorum, all, or empty for the server's default", cfg.Consistency))
	}
	errs = append(errs, cfg.Delivery.Validate())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	q := url.Values{"db": {cfg.Database}, "precision": {"s"}}
	if cfg.Consistency != "" {
		q.Set("consistency", cfg.Consistency)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Client == nil {
		cfg.Client = http.DefaultClient
	}
	// Errors name the server by its address without the password it may
	// carry, and the password is replaced wherever else it shows.
	u, _ := url.Parse(cfg.Address) // checked above
	password, _ := u.User.Password()
	p := &Sink{
		url:      strings.TrimRight(cfg.Address, "/") + "/write?" + q.Encode(),
		batch:    cfg.Batch,
		hostname: env.Hostname,
		extra:    parseTags(nil, env.Tags),
		poster:   plugins.Poster{Client: cfg.Client, Secret: password},
		what:     "InfluxDB at " + u.Redacted(),
	}
	p.queue = plugins.NewQueue("influxdb", &p.poster, cfg.Delivery, env, "influxdb")
	return p, nil
}

// Name tags the sink's self-metrics.
func (p *Sink) Name() string { return "influxdb" }

// Flush encodes the batch's metrics in requests of at most Batch points
// and enqueues them as one generation; it does not wait for the server.
// The error is that of the requests that failed to compress, left out.
func (p *Sink) Flush(ctx context.Context, b *plugins.Batch) error {
	metrics := b.Metrics
	var errs []error
	var e encoder
	var ds []plugins.Delivery
	for start := 0; start < len(metrics); start += p.batch {
		end := min(start+p.batch, len(metrics))
		lines := e.encode(metrics[start:end], p.hostname, p.extra)
		n := bytes.Count(lines, []byte{'\n'})
		if n == 0 {
			continue
		}
		var body bytes.Buffer
		err := plugins.Compress(&body, plugins.Gzip, func(w io.Writer) error {
			_, err := w.Write(lines)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("points %d-%d of %d: %w", start+1, end, len(metrics), err))
			continue
		}
		ds = append(ds, plugins.Delivery{
			Request: plugins.Request{
				Method: http.MethodPost, URL: p.url, What: p.what, Body: body.Bytes(),
				ContentType: "text/plain; charset=utf-8", ContentEncoding: string(plugins.Gzip),
			},
			Count: n,
		})
	}
	p.queue.Send(ds...)
	return errors.Join(errs...)
}

// Close delivers what the queue holds until ctx ends, and drops the rest.
func (p *Sink) Close(ctx context.Context) error { return p.queue.Close(ctx) }

// Report sends the delivery self-metrics.
func (p *Sink) Report(stats statsd.ClientInterface) { p.queue.Report(stats) }

// tag is one InfluxDB tag, escaped.
type tag struct{ key, value string }

// parseTags appends the DogStatsD tags to dst as InfluxDB tags.
func parseTags(dst []tag, tags []string) []tag {
	for _, t := range tags {
		k, v, _ := strings.Cut(t, ":")
		if k = escape(k); k == "" {
			continue
		}
		if v = escape(v); v == "" {
			v = "true"
		}
		dst = append(dst, tag{k, v})
	}
	return dst
}

// encoder builds line protocol, reusing its buffers across batches.
type encoder struct {
	buf  []byte
	tags []tag
}

func (e *encoder) encode(metrics []samplers.InterMetric, hostname string, extra []tag) []byte {
	e.buf = e.buf[:0]
	for i := range metrics {
		m := &metrics[i]
		start := len(e.buf)
		e.buf = appendEscaped(e.buf, m.Name, false)
		e.buf = appendEscaped(e.buf, m.Suffix.String(), false)
		if len(e.buf) == start {
			continue // a name of backslashes only
		}
		host := m.Host
		if host == "" {
			host = hostname
		}
		e.tags = parseTags(e.tags[:0], m.Tags)
		e.tags = append(e.tags, extra...)
		if host != "" {
			e.tags = append(e.tags, tag{"host", escape(host)})
		}
		if m.Device != "" {
			e.tags = append(e.tags, tag{"device", escape(m.Device)})
		}
		// Sorted keys are what InfluxDB stores fastest; a repeated key
		// keeps its first value.
		slices.SortStableFunc(e.tags, func(a, b tag) int { return strings.Compare(a.key, b.key) })
		for j, t := range e.tags {
			if j > 0 && t.key == e.tags[j-1].key {
				continue
			}
			e.buf = append(e.buf, ',')
			e.buf = append(e.buf, t.key...)
			e.buf = append(e.buf, '=')
			e.buf = append(e.buf, t.value...)
		}
		e.buf = append(e.buf, " value="...)
		e.buf = strconv.AppendFloat(e.buf, m.Value, 'f', -1, 64)
		e.buf = append(e.buf, ' ')
		e.buf = strconv.AppendInt(e.buf, m.Timestamp, 10)
		e.buf = append(e.buf, '\n')
	}
	return e.buf
}

// appendEscaped appends s to b with the characters line protocol gives a
// meaning escaped: commas and spaces, and in tag keys and values equals
// signs too. A trailing backslash is dropped: line protocol would read it
// as escaping the separator after it. (DogStatsD lines hold no newlines.)
func appendEscaped(b []byte, s string, isTag bool) []byte {
	s = strings.TrimRight(s, "\\")
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ',', ' ':
			b = append(b, '\\', c)
		case '=':
			if isTag {
				b = append(b, '\\')
			}
			b = append(b, c)
		default:
			b = append(b, c)
		}
	}
	return b
}

// escape is appendEscaped for a tag key or value, allocating only when s
// needs escaping.
func escape(s string) string {
	if !strings.ContainsAny(s, ", =") && !strings.HasSuffix(s, "\\") {
		return s
	}
	return string(appendEscaped(nil, s, true))
}
