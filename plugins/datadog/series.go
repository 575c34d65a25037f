package datadog

import (
	"io"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/veneur/veneur/internal/yield"
	"github.com/veneur/veneur/samplers"
)

// scratchFlush is how much JSON collects before it goes to the compressor.
const scratchFlush = 32 << 10

// writeSeries writes the body {"series":[...]} of metrics to w in pieces
// of about scratchFlush bytes, so that the whole uncompressed body never
// sits in memory, and returns how many series it holds. It encodes without
// reflection. After each piece it lets y yield the P, so that the encoding
// shares a P with UDP readers in slices of yield.Slice.
func (d *Sink) writeSeries(w io.Writer, metrics []samplers.InterMetric, y *yield.Slicer) (int, error) {
	scratch := d.scratch.Get().(*[]byte)
	defer d.scratch.Put(scratch)
	b := append((*scratch)[:0], `{"series":[`...)
	enc := seriesEncoder{d: d, first: true}
	for i := range metrics {
		b = enc.appendOne(b, &metrics[i])
		if len(b) >= scratchFlush {
			if _, err := w.Write(b); err != nil {
				*scratch = b
				return enc.n, err
			}
			b = b[:0]
			y.Tick()
		}
	}
	b = append(b, "]}"...)
	_, err := w.Write(b)
	*scratch = b
	return enc.n, err
}

// seriesEncoder writes series objects. The values of one series come
// together (a histogram flushes several), so it keeps the encoded name and
// the tags, host and device part of the last series and copies them for
// the next value of the same series instead of escaping them again. One
// encoder serves one body at a time.
type seriesEncoder struct {
	d     *Sink
	last  *samplers.Series
	name  []byte // `"` + escaped name, without the closing quote
	frag  []byte // `,"tags":[...]` and host and device members
	first bool
	n     int // series written
	// points is `","points":[[` and the timestamp ts with a comma: every
	// value of a flush has the same.
	points []byte
	ts     int64
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
	e.n++
	if e.points == nil || m.Timestamp != e.ts {
		e.ts = m.Timestamp
		e.points = append(strconv.AppendInt(append(e.points[:0], `","points":[[`...), m.Timestamp, 10), ',')
	}
	b = append(b, `{"metric":`...)
	b = append(b, e.name...)
	b = appendJSONEscaped(b, m.Suffix.String())
	b = append(b, e.points...)
	b = appendNumber(b, m.Value)
	b = append(b, "]]"...)
	b = append(b, e.frag...)
	if m.Kind == samplers.RateKind {
		return append(b, e.d.rateTail...)
	}
	return append(b, `,"type":"gauge"}`...)
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
		f = appendJSONString(f, t)
	}
	if len(s.Tags) > 0 || len(e.d.tagsJSON) == 0 {
		f = append(f, e.d.tagsJSON...)
	} else {
		f = append(f, e.d.tagsJSON[1:]...) // no leading comma
	}
	f = append(f, ']')
	if s.Host != "" {
		f = append(f, `,"host":`...)
		f = appendJSONString(f, s.Host)
	} else {
		f = append(f, e.d.hostJSON...)
	}
	if s.Device != "" {
		f = append(f, `,"device_name":`...)
		f = appendJSONString(f, s.Device)
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

// appendJSONString appends s as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = appendJSONEscaped(dst, s)
	return append(dst, '"')
}

// jsonSafe says whether JSON strings carry the byte c as it is: printable
// ASCII other than the quote and the backslash.
func jsonSafe(c byte) bool { return safeBytes[c] }

var safeBytes = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONEscaped appends s escaped for the inside of a JSON string:
// quotes, backslashes and control characters escaped, invalid UTF-8
// replaced by U+FFFD.
func appendJSONEscaped(dst []byte, s string) []byte {
	// Metric names and tags are nearly always plain ASCII: find the
	// first byte that needs work, and copy everything before it at once.
	i := 0
	for i < len(s) && jsonSafe(s[i]) {
		i++
	}
	if i == len(s) {
		return append(dst, s...)
	}
	start := 0
	for i < len(s) {
		c := s[i]
		if jsonSafe(c) {
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
