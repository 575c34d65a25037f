package forward

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/axiomhq/hyperloglog"

	"github.com/veneur/veneur/samplers"
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
	// TagString is set only by veneur 1.1.0's locals, which always send
	// "tagstring" (empty for an untagged series) and encode values in
	// their own way (see legacy.go); ours never send it. It is a pointer
	// so that an empty one is told from none; omitempty leaves it out of
	// what we write.
	TagString *string `json:"tagstring,omitempty"`
}

// Limits on an imported metric, beyond which it is refused.
const (
	maxName = 65535 // bytes of a name, and of a tag
	maxTags = 1024
)

// Errors of DecodeJSON, one per cause of import.metric_error_total. A
// decoder of another format returns them too, so that its refusals are
// counted alike.
var (
	ErrName  = errors.New("imported metric: empty or oversized name")
	ErrType  = errors.New("imported metric: type is not counter, histogram, timer or set")
	ErrTags  = errors.New("imported metric: too many tags, an empty tag, or a tag with a comma")
	ErrValue = errors.New("imported metric: value does not decode for its type")
)

// EncodeJSON is the JSONMetric of f. Tags are never null in JSON (an
// untagged series has []). It fails for a type that is not forwarded
// (gauges) and for a histogram, timer or set without its state.
func EncodeJSON(f *samplers.Forwarded) (JSONMetric, error) {
	m := JSONMetric{Name: f.Name, Type: f.Type.String(), Tags: f.Tags}
	if m.Tags == nil {
		m.Tags = []string{}
	}
	var err error
	switch f.Type {
	case samplers.CounterMetric:
		m.Value = binary.LittleEndian.AppendUint64(nil, math.Float64bits(f.Counter))
	case samplers.HistogramMetric, samplers.TimerMetric:
		if f.Digest == nil {
			return JSONMetric{}, fmt.Errorf("forwarding %s %q: no digest", f.Type, f.Name)
		}
		m.Value, err = f.Digest.MarshalBinary()
	case samplers.SetMetric:
		if f.Set == nil {
			return JSONMetric{}, fmt.Errorf("forwarding set %q: no sketch", f.Name)
		}
		m.Value, err = f.Set.MarshalBinary()
	default:
		return JSONMetric{}, fmt.Errorf("forwarding %q: a %s is not forwarded", f.Name, f.Type)
	}
	if err != nil {
		return JSONMetric{}, fmt.Errorf("forwarding %s %q: %w", f.Type, f.Name, err)
	}
	return m, nil
}

// DecodeJSON checks m and decodes its state. Tags are sorted (a sender's
// order does not split series). Forwarded counters get the global scope,
// which is how they were sent (veneurglobalonly); histograms, timers and
// sets the mixed one, so that they merge with the receiver's own. Its
// errors wrap ErrName, ErrType, ErrTags or ErrValue.
func DecodeJSON(m *JSONMetric) (samplers.Forwarded, error) {
	f := samplers.Forwarded{Name: m.Name}
	if m.Name == "" || len(m.Name) > maxName {
		return f, ErrName
	}
	if len(m.Tags) > maxTags {
		return f, ErrTags
	}
	for _, t := range m.Tags {
		if t == "" || strings.IndexByte(t, ',') >= 0 || len(t) > maxName {
			return f, ErrTags
		}
	}
	f.Tags = slices.Clone(m.Tags)
	slices.Sort(f.Tags)
	// An element with "tagstring" is veneur 1.1.0's, whatever the others
	// in its array are: its values are decoded as 1.1.0 encodes them.
	if m.TagString != nil {
		return decodeLegacyJSON(m, f)
	}
	switch m.Type {
	case "counter":
		f.Type, f.Scope = samplers.CounterMetric, samplers.GlobalOnly
		if len(m.Value) != 8 {
			return f, fmt.Errorf("%w: a counter is 8 bytes, got %d", ErrValue, len(m.Value))
		}
		f.Counter = math.Float64frombits(binary.LittleEndian.Uint64(m.Value))
		if math.IsNaN(f.Counter) || math.IsInf(f.Counter, 0) {
			return f, fmt.Errorf("%w: counter is not finite", ErrValue)
		}
	case "histogram", "timer":
		f.Type = samplers.HistogramMetric
		if m.Type == "timer" {
			f.Type = samplers.TimerMetric
		}
		d := tdigest.New()
		if err := d.UnmarshalBinary(m.Value); err != nil {
			return f, fmt.Errorf("%w: %v", ErrValue, err)
		}
		f.Digest = d
	case "set":
		f.Type = samplers.SetMetric
		s, err := decodeSketch(m.Value)
		if err != nil {
			return f, fmt.Errorf("%w: %v", ErrValue, err)
		}
		f.Set = s
	default:
		return f, ErrType
	}
	return f, nil
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

// writeJSONArray writes fwd to w as one JSON array of JSONMetric, an
// element at a time, so that only one metric's encoding is in memory on top
// of what w keeps. A metric that does not encode is left out and its error
// is returned in skipped; the others are still written. n is how many were.
// The bytes are those of encoding/json encoding the array with an Encoder
// (a newline ends them).
func writeJSONArray(w io.Writer, fwd []samplers.Forwarded) (n int, skipped []error, err error) {
	var elem bytes.Buffer
	enc := json.NewEncoder(&elem)
	if _, err := io.WriteString(w, "["); err != nil {
		return 0, skipped, err
	}
	for i := range fwd {
		m, err := EncodeJSON(&fwd[i])
		if err == nil {
			elem.Reset()
			err = enc.Encode(&m)
		}
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		if n > 0 {
			if _, err := io.WriteString(w, ","); err != nil {
				return n, skipped, err
			}
		}
		// Encode ends the element with a newline; the array ends with
		// the only one.
		if _, err := w.Write(bytes.TrimSuffix(elem.Bytes(), []byte{'\n'})); err != nil {
			return n, skipped, err
		}
		n++
	}
	_, err = io.WriteString(w, "]\n")
	return n, skipped, err
}
