package forward

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/axiomhq/hyperloglog"

	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// digestOf is a digest of values, each of weight 1.
func digestOf(t testing.TB, values ...float64) *tdigest.TDigest {
	t.Helper()
	d := tdigest.New()
	for _, v := range values {
		if err := d.Add(v, 1); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// sketchOf is a sketch of members.
func sketchOf(members ...string) *hyperloglog.Sketch {
	s := hyperloglog.New14()
	for _, m := range members {
		s.Insert([]byte(m))
	}
	return s
}

func encode(t testing.TB, f samplers.Forwarded) JSONMetric {
	t.Helper()
	m, err := EncodeJSON(&f)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func counterBytes(v float64) []byte {
	return binary.LittleEndian.AppendUint64(nil, math.Float64bits(v))
}

func TestEncodeJSON(t *testing.T) {
	d := digestOf(t, 1, 2, 3)
	wantDigest, _ := digestOf(t, 1, 2, 3).MarshalBinary()
	s := sketchOf("a", "b")
	wantSketch, _ := sketchOf("a", "b").MarshalBinary()
	for _, c := range []struct {
		in   samplers.Forwarded
		want JSONMetric
	}{
		{samplers.Forwarded{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: "c", Counter: 2.5},
			JSONMetric{Name: "c", Type: "counter", Tags: []string{}, Value: counterBytes(2.5)}},
		{samplers.Forwarded{Type: samplers.HistogramMetric, Name: "h", Tags: []string{"a:1", "b"}, Digest: d},
			JSONMetric{Name: "h", Type: "histogram", Tags: []string{"a:1", "b"}, Value: wantDigest}},
		{samplers.Forwarded{Type: samplers.TimerMetric, Name: "t", Digest: d},
			JSONMetric{Name: "t", Type: "timer", Tags: []string{}, Value: wantDigest}},
		{samplers.Forwarded{Type: samplers.SetMetric, Name: "s", Set: s},
			JSONMetric{Name: "s", Type: "set", Tags: []string{}, Value: wantSketch}},
	} {
		got := encode(t, c.in)
		if got.Name != c.want.Name || got.Type != c.want.Type || !slices.Equal(got.Tags, c.want.Tags) || got.Tags == nil || !bytes.Equal(got.Value, c.want.Value) {
			t.Errorf("EncodeJSON(%+v) = %+v, want %+v", c.in, got, c.want)
		}
	}
	// Untagged series have [] in JSON, never null.
	b, _ := json.Marshal(encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Name: "c"}))
	if want := `{"name":"c","type":"counter","tags":[],"value":"AAAAAAAAAAA="}`; string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
}

func TestEncodeJSONRefuses(t *testing.T) {
	for _, f := range []samplers.Forwarded{
		{Type: samplers.GaugeMetric, Name: "g"},
		{Name: "untyped"},
		{Type: samplers.HistogramMetric, Name: "h"},
		{Type: samplers.TimerMetric, Name: "t"},
		{Type: samplers.SetMetric, Name: "s"},
	} {
		if m, err := EncodeJSON(&f); err == nil || !strings.Contains(err.Error(), f.Name) {
			t.Errorf("EncodeJSON(%+v) = %+v, %v; want an error naming the series", f, m, err)
		}
	}
}

// What EncodeJSON writes, DecodeJSON reads back: same name, sorted tags,
// the scope a global instance gives it, the same state.
func TestJSONRoundTrip(t *testing.T) {
	d := digestOf(t, 5, 1, 100, 7.25, 1e9)
	s := sketchOf("alice", "bob", "carol")
	for _, in := range []samplers.Forwarded{
		{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: "hits", Tags: []string{"z:1", "a:2"}, Counter: -3.75},
		{Type: samplers.HistogramMetric, Name: "lat", Tags: []string{"svc:a"}, Digest: d},
		{Type: samplers.TimerMetric, Name: "rt", Digest: d},
		{Type: samplers.SetMetric, Name: "users", Tags: []string{"b", "a"}, Set: s},
	} {
		m := encode(t, in)
		// Through the wire: JSON and back.
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var wire JSONMetric
		if err := json.Unmarshal(b, &wire); err != nil {
			t.Fatal(err)
		}
		out, err := DecodeJSON(&wire)
		if err != nil {
			t.Fatalf("%s: %v", in.Name, err)
		}
		wantScope := samplers.MixedScope
		if in.Type == samplers.CounterMetric {
			wantScope = samplers.GlobalOnly
		}
		wantTags := slices.Sorted(slices.Values(in.Tags))
		if out.Type != in.Type || out.Scope != wantScope || out.Name != in.Name || !slices.Equal(out.Tags, wantTags) ||
			math.Float64bits(out.Counter) != math.Float64bits(in.Counter) {
			t.Errorf("%s: decoded %+v from %+v", in.Name, out, in)
		}
		switch in.Type {
		case samplers.HistogramMetric, samplers.TimerMetric:
			if out.Digest == nil || out.Set != nil {
				t.Fatalf("%s: digest %v set %v", in.Name, out.Digest, out.Set)
			}
			if out.Digest.Count() != 5 || out.Digest.Min() != 1 || out.Digest.Max() != 1e9 || out.Digest.Sum() != d.Sum() || out.Digest.Quantile(0.5) != d.Quantile(0.5) {
				t.Errorf("%s: digest count %v min %v max %v sum %v median %v", in.Name, out.Digest.Count(), out.Digest.Min(), out.Digest.Max(), out.Digest.Sum(), out.Digest.Quantile(0.5))
			}
		case samplers.SetMetric:
			if out.Set == nil || out.Digest != nil {
				t.Fatalf("%s: digest %v set %v", in.Name, out.Digest, out.Set)
			}
			if n := out.Set.Estimate(); n != 3 {
				t.Errorf("%s: %d members, want 3", in.Name, n)
			}
		default:
			if out.Digest != nil || out.Set != nil {
				t.Errorf("%s: a counter with digest %v set %v", in.Name, out.Digest, out.Set)
			}
		}
		// A global instance that forwards in turn passes the state on
		// unchanged: the same bytes for counters and digests; for sets
		// (whose encoding depends on the sketch's sparse buffers) the
		// same members.
		again := encode(t, out)
		if in.Type == samplers.SetMetric {
			if back, err := DecodeJSON(&again); err != nil || back.Set.Estimate() != 3 {
				t.Errorf("%s: re-encoded set decodes to %v, %v", in.Name, back.Set, err)
			}
		} else if !bytes.Equal(again.Value, m.Value) {
			t.Errorf("%s: re-encoded value differs", in.Name)
		}
	}
}

// DecodeJSON sorts a copy of the tags, not the sender's slice.
func TestDecodeJSONCopiesTags(t *testing.T) {
	tags := []string{"b", "a"}
	f, err := DecodeJSON(&JSONMetric{Name: "c", Type: "counter", Tags: tags, Value: counterBytes(1)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.Tags, []string{"a", "b"}) || !slices.Equal(tags, []string{"b", "a"}) {
		t.Errorf("decoded tags %q, sender's now %q", f.Tags, tags)
	}
}

func TestDecodeJSONRefuses(t *testing.T) {
	digest, _ := digestOf(t, 1).MarshalBinary()
	wide, _ := hyperloglog.New16().MarshalBinary()
	long := strings.Repeat("x", maxName+1)
	many := make([]string, maxTags+1)
	for i := range many {
		many[i] = "t"
	}
	for _, c := range []struct {
		name string
		m    JSONMetric
		want error
	}{
		{"empty name", JSONMetric{Type: "counter", Value: counterBytes(1)}, ErrName},
		{"long name", JSONMetric{Name: long, Type: "counter", Value: counterBytes(1)}, ErrName},
		{"too many tags", JSONMetric{Name: "c", Type: "counter", Tags: many, Value: counterBytes(1)}, ErrTags},
		{"empty tag", JSONMetric{Name: "c", Type: "counter", Tags: []string{"a", ""}, Value: counterBytes(1)}, ErrTags},
		{"comma", JSONMetric{Name: "c", Type: "counter", Tags: []string{"a,b"}, Value: counterBytes(1)}, ErrTags},
		{"long tag", JSONMetric{Name: "c", Type: "counter", Tags: []string{long}, Value: counterBytes(1)}, ErrTags},
		{"gauge", JSONMetric{Name: "g", Type: "gauge", Value: counterBytes(1)}, ErrType},
		{"no type", JSONMetric{Name: "g", Value: counterBytes(1)}, ErrType},
		{"short counter", JSONMetric{Name: "c", Type: "counter", Value: counterBytes(1)[:7]}, ErrValue},
		{"NaN counter", JSONMetric{Name: "c", Type: "counter", Value: counterBytes(math.NaN())}, ErrValue},
		{"infinite counter", JSONMetric{Name: "c", Type: "counter", Value: counterBytes(math.Inf(-1))}, ErrValue},
		{"bad digest", JSONMetric{Name: "h", Type: "histogram", Value: []byte("nope")}, ErrValue},
		{"cut digest", JSONMetric{Name: "h", Type: "timer", Value: digest[:len(digest)-1]}, ErrValue},
		{"bad sketch", JSONMetric{Name: "s", Type: "set", Value: []byte{1, 2, 3}}, ErrValue},
		{"no sketch", JSONMetric{Name: "s", Type: "set"}, ErrValue},
		{"other precision", JSONMetric{Name: "s", Type: "set", Value: wide}, ErrValue},
	} {
		if _, err := DecodeJSON(&c.m); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// The array the client streams is, byte for byte, what encoding/json
// writes for the whole slice, as the forwarder wrote it before.
func TestWriteJSONArray(t *testing.T) {
	fwd := []samplers.Forwarded{
		{Type: samplers.CounterMetric, Name: "a<b>&c", Tags: []string{"x:é"}, Counter: 1},
		{Type: samplers.GaugeMetric, Name: "not forwarded"},
		{Type: samplers.TimerMetric, Name: "t", Digest: digestOf(t, 3, 4)},
		{Type: samplers.SetMetric, Name: "s", Set: sketchOf("m")},
	}
	var got bytes.Buffer
	n, skipped, err := writeJSONArray(&got, fwd)
	if err != nil || n != 3 || len(skipped) != 1 || !strings.Contains(skipped[0].Error(), "not forwarded") {
		t.Fatalf("n %d skipped %v err %v", n, skipped, err)
	}
	var want bytes.Buffer
	json.NewEncoder(&want).Encode([]JSONMetric{encode(t, fwd[0]), encode(t, fwd[2]), encode(t, fwd[3])})
	if got.String() != want.String() {
		t.Errorf("wrote\n%s\nwant\n%s", got.String(), want.String())
	}

	got.Reset()
	if n, skipped, err := writeJSONArray(&got, nil); n != 0 || skipped != nil || err != nil || got.String() != "[]\n" {
		t.Errorf("empty: %q, %d %v %v", got.String(), n, skipped, err)
	}
}
