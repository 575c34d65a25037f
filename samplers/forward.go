package samplers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/axiomhq/hyperloglog"

	"github.com/veneur/veneur/tdigest"
)

// JSONMetric is one series as a local instance forwards it to a global one
// (a JSON array of them is the body of POST /import). It carries the
// series' name, type and sorted tags, without host or device (global series
// belong to the instance that publishes them), and the sampler's state:
//
//   - counter: the sum of value/sample_rate over the interval, as 8 bytes
//     of a little-endian IEEE 754 double;
//   - histogram and timer: the t-digest, as tdigest's binary encoding;
//   - set: the HyperLogLog sketch, as its binary encoding.
//
// Value is base64 in JSON, as encoding/json writes []byte.
type JSONMetric struct {
	Name  string   `json:"name"`
	Type  string   `json:"type"`
	Tags  []string `json:"tags"`
	Value []byte   `json:"value"`
}

// Forwarded is the state of one series on its way from a local instance to
// a global one: built by the local's flush, encoded by the forward client,
// decoded by the global's importer and merged into its workers. Exactly one
// of Counter (for counters), Digest (histograms and timers) and Set is
// meaningful. Digest and Set are not copied: nobody may modify them once
// they are in a Forwarded.
type Forwarded struct {
	Type    MetricType
	Scope   MetricScope
	Name    string
	Tags    []string
	Counter float64
	Digest  *tdigest.TDigest
	Set     *hyperloglog.Sketch
}

// Limits on an imported metric, beyond which it is refused.
const (
	maxImportName = 65535
	maxImportTags = 1024
)

// Errors of DecodeJSONMetric; ImportCause names each for self-metrics.
var (
	ErrImportName  = errors.New("imported metric: empty or oversized name")
	ErrImportType  = errors.New("imported metric: type is not counter, histogram, timer or set")
	ErrImportTags  = errors.New("imported metric: too many tags, an empty tag, or a tag with a comma")
	ErrImportValue = errors.New("imported metric: value does not decode for its type")
)

// ImportCause is the cause tag of an error of DecodeJSONMetric.
func ImportCause(err error) string {
	switch {
	case errors.Is(err, ErrImportName):
		return "name"
	case errors.Is(err, ErrImportType):
		return "type"
	case errors.Is(err, ErrImportTags):
		return "tags"
	default:
		return "value"
	}
}

// ExportCounter is the JSONMetric of a counter's interval sum.
func ExportCounter(s *Series, sum float64) JSONMetric {
	return JSONMetric{Name: s.Name, Type: CounterMetric.String(), Tags: tagsOrEmpty(s.Tags), Value: binary.LittleEndian.AppendUint64(nil, math.Float64bits(sum))}
}

// ExportHisto is the JSONMetric of a histogram's or timer's digest.
func ExportHisto(s *Series, t MetricType, h *Histo) (JSONMetric, error) {
	b, err := h.Digest.MarshalBinary()
	if err != nil {
		return JSONMetric{}, err
	}
	return JSONMetric{Name: s.Name, Type: t.String(), Tags: tagsOrEmpty(s.Tags), Value: b}, nil
}

// ExportSet is the JSONMetric of a set's sketch.
func ExportSet(s *Series, set *Set) (JSONMetric, error) {
	b, err := set.Sketch.MarshalBinary()
	if err != nil {
		return JSONMetric{}, err
	}
	return JSONMetric{Name: s.Name, Type: SetMetric.String(), Tags: tagsOrEmpty(s.Tags), Value: b}, nil
}

func tagsOrEmpty(t []string) []string {
	if t == nil {
		return []string{}
	}
	return t
}

// DecodeJSONMetric checks m and decodes its state. Tags are sorted (a
// sender's order does not split series). Forwarded counters get the global
// scope, which is how they were sent (veneurglobalonly); histograms, timers
// and sets the mixed one, so that they merge with the receiver's own.
func DecodeJSONMetric(m *JSONMetric) (Forwarded, error) {
	im := Forwarded{Name: m.Name}
	if m.Name == "" || len(m.Name) > maxImportName {
		return im, ErrImportName
	}
	if len(m.Tags) > maxImportTags {
		return im, ErrImportTags
	}
	for _, t := range m.Tags {
		if t == "" || strings.IndexByte(t, ',') >= 0 || len(t) > maxImportName {
			return im, ErrImportTags
		}
	}
	im.Tags = slices.Clone(m.Tags)
	slices.Sort(im.Tags)
	switch m.Type {
	case "counter":
		im.Type, im.Scope = CounterMetric, GlobalOnly
		if len(m.Value) != 8 {
			return im, fmt.Errorf("%w: a counter is 8 bytes, got %d", ErrImportValue, len(m.Value))
		}
		im.Counter = math.Float64frombits(binary.LittleEndian.Uint64(m.Value))
		if math.IsNaN(im.Counter) || math.IsInf(im.Counter, 0) {
			return im, fmt.Errorf("%w: counter is not finite", ErrImportValue)
		}
	case "histogram", "timer":
		im.Type = HistogramMetric
		if m.Type == "timer" {
			im.Type = TimerMetric
		}
		d := tdigest.New()
		if err := d.UnmarshalBinary(m.Value); err != nil {
			return im, fmt.Errorf("%w: %v", ErrImportValue, err)
		}
		im.Digest = d
	case "set":
		im.Type = SetMetric
		s, err := decodeSketch(m.Value)
		if err != nil {
			return im, fmt.Errorf("%w: %v", ErrImportValue, err)
		}
		im.Set = s
	default:
		return im, ErrImportType
	}
	return im, nil
}

// decodeSketch decodes a HyperLogLog sketch that must merge into ours
// (same precision). The library trusts its input, so a panic while
// decoding counts as a bad value.
func decodeSketch(b []byte) (s *hyperloglog.Sketch, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("malformed sketch: %v", r)
		}
	}()
	s = hyperloglog.New14()
	if err := s.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	if err := hyperloglog.New14().Merge(s); err != nil {
		return nil, err
	}
	return s, nil
}
