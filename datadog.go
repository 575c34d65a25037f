package veneur

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/klauspost/compress/zlib"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/samplers"
)

// datadogSink posts series to Datadog's v1 series API: JSON bodies of at
// most flush_max_per_body series, zlib-compressed, posted concurrently.
type datadogSink struct {
	url        string
	client     *http.Client
	intervalS  int64
	maxPerBody int
	log        *logrus.Logger
	stats      statsd.ClientInterface
	scratch    sync.Pool // *[]byte, JSON on its way to the compressor
	// tagsJSON and hostJSON are the config tags (each preceded by a comma)
	// and the default host, escaped once instead of per series.
	tagsJSON []byte
	hostJSON []byte
	// For events and service checks: the API base URL, key, default host
	// and config tags.
	apiBase, key, hostname string
	tags                   []string
	bufs                   sync.Pool // *bytes.Buffer, one per body being built
	zws                    sync.Pool // *zlib.Writer
}

func newDatadogSink(cfg Config, interval time.Duration, client *http.Client, log *logrus.Logger, stats statsd.ClientInterface) *datadogSink {
	secs := int64(math.Round(interval.Seconds()))
	if secs < 1 {
		secs = 1
	}
	var tagsJSON, hostJSON []byte
	for _, t := range cfg.Tags {
		tagsJSON = appendJSONString2(append(tagsJSON, ','), t, "")
	}
	if cfg.Hostname != "" {
		hostJSON = appendJSONString2(append(hostJSON, `,"host":`...), cfg.Hostname, "")
	}
	return &datadogSink{
		tagsJSON:   tagsJSON,
		hostJSON:   hostJSON,
		url:        strings.TrimRight(cfg.APIHostname, "/") + "/api/v1/series?api_key=" + cfg.Key,
		apiBase:    strings.TrimRight(cfg.APIHostname, "/"),
		key:        cfg.Key,
		hostname:   cfg.Hostname,
		tags:       cfg.Tags,
		client:     client,
		intervalS:  secs,
		maxPerBody: cfg.FlushMaxPerBody,
		log:        log,
		stats:      stats,
		bufs:       sync.Pool{New: func() any { return new(bytes.Buffer) }},
		scratch: sync.Pool{New: func() any {
			b := make([]byte, 0, scratchFlush+4096)
			return &b
		}},
	}
}

func (d *datadogSink) Name() string { return "datadog" }

// maxConcurrentPosts bounds the bodies built and posted at once. Each one
// holds a compressor and a compressed body, so a flush of a few hundred
// thousand series must not start them all together.
const maxConcurrentPosts = 4

// Flush posts metrics in chunks of at most flush_max_per_body series,
// several at once, and returns the errors of the chunks that failed.
func (d *datadogSink) Flush(ctx context.Context, metrics []samplers.InterMetric) error {
	start := time.Now()
	chunks := (len(metrics) + d.maxPerBody - 1) / d.maxPerBody
	d.stats.Count("flush.post_metrics_total", int64(len(metrics)), nil, 1)
	errs := make([]error, chunks)
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxConcurrentPosts)
	for i := 0; i < chunks; i++ {
		lo := i * d.maxPerBody
		hi := min(lo+d.maxPerBody, len(metrics))
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = d.post(ctx, metrics[lo:hi])
		}()
	}
	wg.Wait()
	d.stats.TimeInMilliseconds("flush.total_duration_ns", nanos(time.Since(start)), nil, 1)
	err := errors.Join(errs...)
	if err != nil {
		d.stats.Count("flush.error_total", 1, nil, 1)
	}
	return err
}

func (d *datadogSink) post(ctx context.Context, metrics []samplers.InterMetric) error {
	start := time.Now()
	body := d.bufs.Get().(*bytes.Buffer)
	defer d.bufs.Put(body)
	body.Reset()
	zw, _ := d.zws.Get().(*zlib.Writer)
	if zw == nil {
		var err error
		if zw, err = zlib.NewWriterLevel(body, zlib.BestSpeed); err != nil {
			return err
		}
	} else {
		zw.Reset(body)
	}
	defer d.zws.Put(zw)
	// The JSON goes to the compressor in small pieces, so the whole
	// uncompressed body never sits in memory.
	scratch := d.scratch.Get().(*[]byte)
	defer d.scratch.Put(scratch)
	b := append((*scratch)[:0], `{"series":[`...)
	enc := d.newEncoder()
	for i := range metrics {
		b = enc.appendOne(b, &metrics[i])
		if len(b) >= scratchFlush {
			if _, err := zw.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	b = append(b, "]}"...)
	_, err := zw.Write(b)
	*scratch = b
	if err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	d.stats.TimeInMilliseconds("flush.duration_ns", nanos(time.Since(start)), []string{"part:marshal"}, 1)
	d.stats.Histogram("flush.content_length_bytes", float64(body.Len()), nil, 1)

	start = time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(body.Bytes()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "deflate")
	resp, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("posting %d series to Datadog: %w", len(metrics), redactKey(err))
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	d.stats.TimeInMilliseconds("flush.duration_ns", nanos(time.Since(start)), []string{"part:post"}, 1)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("the Datadog API answered %s to %d series: %q", resp.Status, len(metrics), snippet)
	}
	return nil
}

// redactKey keeps the API key, which is in the URL, out of logged errors.
func redactKey(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// scratchFlush is how much JSON collects before it goes to the compressor.
const scratchFlush = 32 << 10

// appendSeries encodes {"series":[...]} without reflection.
func (d *datadogSink) appendSeries(b []byte, metrics []samplers.InterMetric) []byte {
	b = append(b, `{"series":[`...)
	enc := d.newEncoder()
	for i := range metrics {
		b = enc.appendOne(b, &metrics[i])
	}
	return append(b, "]}"...)
}

// seriesEncoder writes series objects. The values of one series come
// together (a histogram flushes several), so it keeps the encoded name and
// the tags, host and device part of the last series and copies them for
// the next value of the same series instead of escaping them again. One
// encoder serves one body at a time.
type seriesEncoder struct {
	d     *datadogSink
	last  *samplers.Series
	name  []byte // `"` + escaped name, without the closing quote
	frag  []byte // `,"tags":[...]` and host and device members
	first bool
}

func (d *datadogSink) newEncoder() *seriesEncoder {
	return &seriesEncoder{d: d, first: true}
}

// appendOne encodes one series object, preceded by a comma unless it is the
// first. Values JSON cannot carry (NaN, ±Inf) are skipped.
func (e *seriesEncoder) appendOne(b []byte, m *samplers.InterMetric) []byte {
	if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
		return b
	}
	if m.Series != e.last {
		e.encodeSeries(m.Series)
	}
	if !e.first {
		b = append(b, ',')
	}
	e.first = false
	b = append(b, `{"metric":`...)
	b = append(b, e.name...)
	b = appendJSONEscaped(b, m.Suffix)
	b = append(b, `","points":[[`...)
	b = strconv.AppendInt(b, m.Timestamp, 10)
	b = append(b, ',')
	b = appendNumber(b, m.Value)
	b = append(b, "]]"...)
	b = append(b, e.frag...)
	if m.Kind == samplers.RateKind {
		b = append(b, `,"type":"rate","interval":`...)
		b = strconv.AppendInt(b, e.d.intervalS, 10)
	} else {
		b = append(b, `,"type":"gauge"`...)
	}
	return append(b, '}')
}

// encodeSeries caches the JSON of what the values of s share.
func (e *seriesEncoder) encodeSeries(s *samplers.Series) {
	e.last = s
	e.name = appendJSONEscaped(append(e.name[:0], '"'), s.Name)
	f := append(e.frag[:0], `,"tags":[`...)
	for i, t := range s.Tags {
		if i > 0 {
			f = append(f, ',')
		}
		f = appendJSONString2(f, t, "")
	}
	if len(s.Tags) > 0 || len(e.d.tagsJSON) == 0 {
		f = append(f, e.d.tagsJSON...)
	} else {
		f = append(f, e.d.tagsJSON[1:]...) // no leading comma
	}
	f = append(f, ']')
	if s.Host != "" {
		f = append(f, `,"host":`...)
		f = appendJSONString2(f, s.Host, "")
	} else {
		f = append(f, e.d.hostJSON...)
	}
	if s.Device != "" {
		f = append(f, `,"device_name":`...)
		f = appendJSONString2(f, s.Device, "")
	}
	e.frag = f
}

// appendNumber writes v as a JSON number: whole numbers (most counts and
// gauges) through the cheaper integer formatter, the rest in the shortest
// form that reads back exactly.
func appendNumber(b []byte, v float64) []byte {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

const hexDigits = "0123456789abcdef"

// appendJSONString2 appends the JSON string of a+b.
func appendJSONString2(dst []byte, a, b string) []byte {
	dst = append(dst, '"')
	dst = appendJSONEscaped(dst, a)
	dst = appendJSONEscaped(dst, b)
	return append(dst, '"')
}

// jsonSafe marks the ASCII bytes that JSON strings carry as they are.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func appendJSONEscaped(dst []byte, s string) []byte {
	// Metric names and tags are nearly always plain ASCII: find the
	// first byte that needs work, and copy everything before it at once.
	i := 0
	for i < len(s) && s[i] < utf8.RuneSelf && jsonSafe[s[i]] {
		i++
	}
	if i == len(s) {
		return append(dst, s...)
	}
	start := 0
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf && jsonSafe[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\r':
				dst = append(dst, '\\', 'r')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}
