// Package influxdb publishes flushed metrics to an InfluxDB 1.x server
// through its HTTP /write endpoint, in line protocol.
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

	"github.com/klauspost/compress/gzip"

	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// DefaultBatch is how many points one write request carries at most.
const DefaultBatch = 5000

// Config sets up a Plugin.
type Config struct {
	// Address is the server's base URL, e.g. http://influx:8086.
	Address string
	// Database is the database written to; it must exist.
	Database string
	// Consistency is any, one, quorum or all, or empty for the server's
	// default.
	Consistency string
	// Hostname tags series that carry no host of their own.
	Hostname string
	// Tags are added to every point, as DogStatsD tags.
	Tags []string
	// Batch is the most points per request; 0 means DefaultBatch.
	Batch int
	// Client posts the requests; nil means http.DefaultClient.
	Client *http.Client
}

// Plugin writes to one InfluxDB database.
type Plugin struct {
	cfg   Config
	url   string
	extra []tag // the configured tags, parsed
}

var _ plugins.Plugin = (*Plugin)(nil)

// New returns a Plugin for cfg.
func New(cfg Config) (*Plugin, error) {
	u, err := url.Parse(cfg.Address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("influx_address %q: want an http(s) URL such as http://influx:8086", cfg.Address)
	}
	if cfg.Database == "" {
		return nil, errors.New("influx_db_name is empty; name the database to write to")
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
	return &Plugin{
		cfg:   cfg,
		url:   strings.TrimRight(cfg.Address, "/") + "/write?" + q.Encode(),
		extra: parseTags(nil, cfg.Tags),
	}, nil
}

// Name names the plugin in logs and self-metrics.
func (p *Plugin) Name() string { return "influxdb" }

// Flush writes metrics in requests of at most Batch points, one after the
// other, and returns the errors of the requests that failed.
func (p *Plugin) Flush(ctx context.Context, metrics []samplers.InterMetric) error {
	var errs []error
	var e encoder
	for start := 0; start < len(metrics); start += p.cfg.Batch {
		end := min(start+p.cfg.Batch, len(metrics))
		body := e.encode(metrics[start:end], p.cfg.Hostname, p.extra)
		if err := p.post(ctx, body); err != nil {
			errs = append(errs, fmt.Errorf("points %d-%d of %d: %w", start+1, end, len(metrics), err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

func (p *Plugin) post(ctx context.Context, lines []byte) error {
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write(lines)
	if err := zw.Close(); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, &zb)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("writing to InfluxDB at %s: %w", p.cfg.Address, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return fmt.Errorf("InfluxDB at %s answered %s: %s", p.cfg.Address, resp.Status, bytes.TrimSpace(msg))
}

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
		e.buf = appendEscaped(e.buf, m.Suffix, false)
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
