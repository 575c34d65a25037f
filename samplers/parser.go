// Package samplers holds veneur's DogStatsD parser, the metric key, the
// per-series samplers (counter, gauge, histogram, set) and the wire types
// that leave a worker at flush time.
package samplers

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"unsafe"
)

// MetricType is the DogStatsD type of a metric line.
type MetricType uint8

// The metric types veneur aggregates. The zero value is not a valid type.
const (
	CounterMetric MetricType = iota + 1
	GaugeMetric
	HistogramMetric
	TimerMetric
	SetMetric
)

// String returns the DogStatsD name of the type ("counter", "gauge", ...).
func (t MetricType) String() string {
	switch t {
	case CounterMetric:
		return "counter"
	case GaugeMetric:
		return "gauge"
	case HistogramMetric:
		return "histogram"
	case TimerMetric:
		return "timer"
	case SetMetric:
		return "set"
	}
	return "unknown"
}

// MetricScope says where a metric is published: by this instance, by the
// global instance it forwards to, or split between them (the default).
type MetricScope uint8

// Scopes, set by the magic tags veneurlocalonly and veneurglobalonly.
const (
	MixedScope MetricScope = iota
	LocalOnly
	GlobalOnly
)

// Parse errors. Each malformed line is rejected with exactly one of these, so
// that callers can count them by cause without allocating.
var (
	ErrNoColon        = errors.New("metric line has no ':' between name and value")
	ErrEmptyName      = errors.New("metric line has an empty name")
	ErrEmptyValue     = errors.New("metric line has an empty value")
	ErrNoType         = errors.New("metric line has no '|type' section")
	ErrUnknownType    = errors.New("metric line has an unknown type; use c, g, h, ms, d or s")
	ErrBadValue       = errors.New("metric value is not a number")
	ErrNonFiniteValue = errors.New("metric value is NaN or infinite")
	ErrEmptySection   = errors.New("metric line has an empty '|' section")
	ErrBadSampleRate  = errors.New("sample rate is not a number in (0,1]")
	ErrRepeatedRate   = errors.New("metric line has more than one '|@' sample rate section")
	ErrRepeatedTags   = errors.New("metric line has more than one '|#' tag section")
	ErrTooLong        = errors.New("metric line component is longer than 65535 bytes")
	ErrEventNotMetric = errors.New("line is an event (_e), not a metric")
	ErrServiceCheck   = errors.New("line is a service check (_sc), not a metric")
	ErrTooManyTags    = errors.New("metric line has more than 1024 tags")
)

// maxTags bounds the tags of one line, so a hostile line cannot make the
// parser's scratch space grow without limit.
const maxTags = 1024

// Magic tags. They never reach a sink.
const (
	tagLocalOnly  = "veneurlocalonly"
	tagGlobalOnly = "veneurglobalonly"
	tagHostPrefix = "host:"
	tagDevPrefix  = "device:"
)

// Line is one parsed DogStatsD metric line. Its byte slices alias the input
// and the Parser's scratch space: they are valid until the next ParseLine call
// on the same Parser, and must be copied to outlive it.
type Line struct {
	Name []byte
	// Values holds the raw value field. For sets it is the member; for
	// other types it may hold several ':'-separated numbers (DogStatsD 1.1
	// packed values), which NextValue walks.
	Values []byte
	// Value is the first number of Values (not set for sets); Packed says
	// whether more follow.
	Value      float64
	Packed     bool
	Type       MetricType
	Scope      MetricScope
	SampleRate float64
	Host       []byte
	Device     []byte
	// Tags are sorted, without the magic and host/device tags.
	Tags [][]byte
}

// Parser parses DogStatsD lines. Its zero value is ready to use. A Parser
// is not safe for concurrent use; each reader owns one.
type Parser struct {
	tags [][]byte
}

// ParseLine parses one DogStatsD metric line (without its trailing newline)
// into out. On error out is left in an unspecified state.
func (p *Parser) ParseLine(line []byte, out *Line) error {
	tags, err := p.ParseHead(line, out)
	if err != nil {
		return err
	}
	return p.ParseTags(tags, out)
}

// ParseHead is the part of ParseLine that differs from line to line of one
// series: it checks the whole line and sets out's name, values, type and
// sample rate, and returns the tag section (without its '#'; nil when there
// is none) unparsed. ParseTags finishes the line from that section. The
// name, the type and the tag section decide the series entirely, so a
// caller that has seen them before may skip ParseTags (and the key).
func (p *Parser) ParseHead(line []byte, out *Line) (tags []byte, err error) {
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	if len(line) >= 3 && line[0] == '_' {
		if line[1] == 'e' && line[2] == '{' {
			return nil, ErrEventNotMetric
		}
		if line[1] == 's' && line[2] == 'c' && (len(line) == 3 || line[3] == '|') {
			return nil, ErrServiceCheck
		}
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return nil, ErrNoColon
	}
	if colon == 0 {
		return nil, ErrEmptyName
	}
	out.Name = line[:colon]
	rest := line[colon+1:]
	pipe := indexByte(rest, '|')
	if pipe < 0 {
		return nil, ErrNoType
	}
	out.Values = rest[:pipe]
	if len(out.Values) == 0 {
		return nil, ErrEmptyValue
	}
	rest = rest[pipe+1:]

	// The type runs to the next '|' or the end of the line.
	var typ []byte
	if pipe = indexByte(rest, '|'); pipe < 0 {
		typ, rest = rest, nil
	} else {
		typ, rest = rest[:pipe], rest[pipe+1:]
		if len(rest) == 0 {
			return nil, ErrEmptySection
		}
	}
	switch {
	case len(typ) == 1 && typ[0] == 'c':
		out.Type = CounterMetric
	case len(typ) == 1 && typ[0] == 'g':
		out.Type = GaugeMetric
	case len(typ) == 1 && (typ[0] == 'h' || typ[0] == 'd'):
		out.Type = HistogramMetric
	case len(typ) == 2 && typ[0] == 'm' && typ[1] == 's':
		out.Type = TimerMetric
	case len(typ) == 1 && typ[0] == 's':
		out.Type = SetMetric
	case len(typ) == 0:
		return nil, ErrNoType
	default:
		return nil, ErrUnknownType
	}

	out.SampleRate = 1
	var haveRate, haveTags bool
	for rest != nil {
		var sec []byte
		if pipe = bytes.IndexByte(rest, '|'); pipe < 0 {
			sec, rest = rest, nil
		} else {
			sec, rest = rest[:pipe], rest[pipe+1:]
			if len(rest) == 0 {
				return nil, ErrEmptySection
			}
		}
		if len(sec) == 0 {
			return nil, ErrEmptySection
		}
		switch sec[0] {
		case '@':
			if haveRate {
				return nil, ErrRepeatedRate
			}
			haveRate = true
			r, err := parseFloat(sec[1:])
			if err != nil || !(r > 0 && r <= 1) {
				return nil, ErrBadSampleRate
			}
			out.SampleRate = r
		case '#':
			if haveTags {
				return nil, ErrRepeatedTags
			}
			haveTags = true
			tags = sec[1:]
		default:
			// Fields of newer protocol versions (|c:container, |T<unix>,
			// |e:external data, |card:cardinality) and any other unknown
			// section are skipped so that new clients keep working.
		}
	}

	if out.Type != SetMetric {
		// Validate every packed value now, so a line is accepted or
		// rejected as a whole.
		v := out.Values
		out.Packed = false
		for first := true; len(v) > 0; first = false {
			var field []byte
			if i := indexByte(v, ':'); i >= 0 {
				field, v = v[:i], v[i+1:]
				if len(v) == 0 {
					return nil, ErrEmptyValue
				}
			} else {
				field, v = v, nil
			}
			f, err := parseFloat(field)
			if err != nil {
				return nil, ErrBadValue
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, ErrNonFiniteValue
			}
			if first {
				out.Value = f
			} else {
				out.Packed = true
			}
		}
	}
	if len(out.Name) > math.MaxUint16 {
		return nil, ErrTooLong
	}
	return tags, nil
}

// ParseTags parses a tag section returned by ParseHead into out's scope,
// host, device and sorted tags.
func (p *Parser) ParseTags(sec []byte, out *Line) error {
	out.Scope = MixedScope
	out.Host = nil
	out.Device = nil
	p.tags = p.tags[:0]
	if err := p.parseTags(sec, out); err != nil {
		return err
	}
	if len(out.Host) > math.MaxUint16 || len(out.Device) > math.MaxUint16 {
		return ErrTooLong
	}
	sortTags(p.tags)
	out.Tags = p.tags
	return nil
}

// indexByte is bytes.IndexByte for the short spans of a metric line
// (values, types, single tags), where a plain loop the compiler inlines
// beats the call into the vectorised version. The name and the sections
// after the type, which run to tens of bytes (a tag section of five tags,
// say), are searched with bytes.IndexByte.
func indexByte(b []byte, c byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// NextValue returns the first of the ':'-separated numbers in vals and the
// remainder. It is only valid on a Line that ParseLine accepted.
func NextValue(vals []byte) (float64, []byte) {
	var field []byte
	if i := bytes.IndexByte(vals, ':'); i >= 0 {
		field, vals = vals[:i], vals[i+1:]
	} else {
		field, vals = vals, nil
	}
	f, _ := parseFloat(field)
	return f, vals
}

func (p *Parser) parseTags(sec []byte, out *Line) error {
	for len(sec) > 0 {
		var tag []byte
		if i := indexByte(sec, ','); i >= 0 {
			tag, sec = sec[:i], sec[i+1:]
		} else {
			tag, sec = sec, nil
		}
		switch {
		case len(tag) == 0:
			// "a,,b" or a trailing comma: nothing to keep.
		case tag[0] != 'v' && tag[0] != 'h' && tag[0] != 'd':
			// Not a magic tag: the common case, decided by one byte.
			if len(p.tags) >= maxTags {
				return ErrTooManyTags
			}
			p.tags = append(p.tags, tag)
		case bytes.HasPrefix(tag, []byte(tagLocalOnly)) && (len(tag) == len(tagLocalOnly) || tag[len(tagLocalOnly)] == ':'):
			out.Scope = LocalOnly
		case bytes.HasPrefix(tag, []byte(tagGlobalOnly)) && (len(tag) == len(tagGlobalOnly) || tag[len(tagGlobalOnly)] == ':'):
			// Local-only wins when both are present: the metric is still
			// published, just not forwarded.
			if out.Scope != LocalOnly {
				out.Scope = GlobalOnly
			}
		case bytes.HasPrefix(tag, []byte(tagHostPrefix)):
			out.Host = tag[len(tagHostPrefix):]
		case bytes.HasPrefix(tag, []byte(tagDevPrefix)):
			out.Device = tag[len(tagDevPrefix):]
		default:
			if len(p.tags) >= maxTags {
				return ErrTooManyTags
			}
			p.tags = append(p.tags, tag)
		}
	}
	return nil
}

// sortTags sorts in place. Lines carry a handful of tags, where insertion
// sort beats sort.Slice and allocates nothing.
func sortTags(tags [][]byte) {
	if len(tags) > 24 {
		sortTagsHeap(tags)
		return
	}
	for i := 1; i < len(tags); i++ {
		t := tags[i]
		j := i
		for ; j > 0 && bytes.Compare(tags[j-1], t) > 0; j-- {
			tags[j] = tags[j-1]
		}
		tags[j] = t
	}
}

// sortTagsHeap is heapsort, for the rare line with many tags.
func sortTagsHeap(tags [][]byte) {
	n := len(tags)
	sift := func(root, end int) {
		for {
			child := 2*root + 1
			if child >= end {
				return
			}
			if child+1 < end && bytes.Compare(tags[child], tags[child+1]) < 0 {
				child++
			}
			if bytes.Compare(tags[root], tags[child]) >= 0 {
				return
			}
			tags[root], tags[child] = tags[child], tags[root]
			root = child
		}
	}
	for i := n/2 - 1; i >= 0; i-- {
		sift(i, n)
	}
	for end := n - 1; end > 0; end-- {
		tags[0], tags[end] = tags[end], tags[0]
		sift(0, end)
	}
}

// parseFloat parses b without copying it. The fast path handles plain
// decimal numbers, which is what clients send; anything else goes to
// strconv, which copies the text into any error it returns, so the view of b
// does not escape.
func parseFloat(b []byte) (float64, error) {
	if f, ok := parseSimpleDecimal(b); ok {
		return f, nil
	}
	if len(b) == 0 {
		return 0, ErrBadValue
	}
	return strconv.ParseFloat(unsafe.String(&b[0], len(b)), 64)
}

// pow10 holds the exactly representable powers of ten.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseSimpleDecimal handles [-+]digits[.digits] with at most 15 significant
// digits, where mantissa / 10^k is correctly rounded because both operands
// are exact in float64 (the classic fast path of decimal conversion).
func parseSimpleDecimal(b []byte) (float64, bool) {
	i := 0
	neg := false
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		neg = b[0] == '-'
		i = 1
	}
	if i == len(b) {
		return 0, false
	}
	var mant uint64
	digits, frac := 0, 0
	seenDot, sawDigit := false, false
	for ; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= '0' && c <= '9':
			sawDigit = true
			if digits > 0 || c != '0' {
				digits++
			}
			mant = mant*10 + uint64(c-'0')
			if seenDot {
				frac++
			}
		case c == '.' && !seenDot:
			seenDot = true
		default:
			return 0, false
		}
		if digits > 15 {
			return 0, false
		}
	}
	if !sawDigit {
		return 0, false // "." or "-."
	}
	f := float64(mant)
	if frac > 0 {
		if frac >= len(pow10) {
			return 0, false
		}
		f /= pow10[frac]
	}
	if neg {
		f = -f
	}
	return f, true
}
