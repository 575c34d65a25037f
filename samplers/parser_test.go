package samplers

import (
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

type parsed struct {
	name   string
	values []float64
	member string
	typ    MetricType
	scope  MetricScope
	rate   float64
	host   string
	device string
	tags   []string
}

func toParsed(l *Line) parsed {
	p := parsed{
		name:   string(l.Name),
		typ:    l.Type,
		scope:  l.Scope,
		rate:   l.SampleRate,
		host:   string(l.Host),
		device: string(l.Device),
	}
	if l.Type == SetMetric {
		p.member = string(l.Values)
	} else {
		for v := l.Values; len(v) > 0; {
			var f float64
			f, v = NextValue(v)
			p.values = append(p.values, f)
		}
	}
	for _, t := range l.Tags {
		p.tags = append(p.tags, string(t))
	}
	return p
}

func TestParseLine(t *testing.T) {
	tests := []struct {
		line string
		want parsed
	}{
		{"a.b:1|c", parsed{name: "a.b", values: []float64{1}, typ: CounterMetric, rate: 1}},
		{"a.b:1|c\r", parsed{name: "a.b", values: []float64{1}, typ: CounterMetric, rate: 1}},
		{"a:-2.5|g", parsed{name: "a", values: []float64{-2.5}, typ: GaugeMetric, rate: 1}},
		{"a:+7|g", parsed{name: "a", values: []float64{7}, typ: GaugeMetric, rate: 1}},
		{"a:1e3|h", parsed{name: "a", values: []float64{1000}, typ: HistogramMetric, rate: 1}},
		{"a:0.001|d", parsed{name: "a", values: []float64{0.001}, typ: HistogramMetric, rate: 1}},
		{"a:12|ms", parsed{name: "a", values: []float64{12}, typ: TimerMetric, rate: 1}},
		{"a:user-42|s", parsed{name: "a", member: "user-42", typ: SetMetric, rate: 1}},
		{"a:x:y|s", parsed{name: "a", member: "x:y", typ: SetMetric, rate: 1}},
		{"a:1:2:3.5|h", parsed{name: "a", values: []float64{1, 2, 3.5}, typ: HistogramMetric, rate: 1}},
		{"a:3|c|@0.5", parsed{name: "a", values: []float64{3}, typ: CounterMetric, rate: 0.5}},
		{"a:3|c|@1", parsed{name: "a", values: []float64{3}, typ: CounterMetric, rate: 1}},
		{"a:3|c|@1e-9", parsed{name: "a", values: []float64{3}, typ: CounterMetric, rate: 1e-9}},
		{"a:1|c|#b:2,a:1", parsed{name: "a", values: []float64{1}, typ: CounterMetric, rate: 1, tags: []string{"a:1", "b:2"}}},
		{"a:1|c|@0.1|#z,y", parsed{name: "a", values: []float64{1}, typ: CounterMetric, rate: 0.1, tags: []string{"y", "z"}}},
		{"a:1|c|#z,y|@0.1", parsed{name: "a", values: []float64{1}, typ: CounterMetric, rate: 0.1, tags: []string{"y", "z"}}},
		{"a:1|c|#a,,b,", parsed{name: "a", values: []float64{1}, typ: CounterMetric, rate: 1, tags: []string{"a", "b"}}},
		{"a:1|c|#", parsed{name: "a", values: []float64{1}, typ: CounterMetric, rate: 1}},
		// Magic tags.
		{"a:1|h|#veneurlocalonly,x", parsed{name: "a", values: []float64{1}, typ: HistogramMetric, rate: 1, scope: LocalOnly, tags: []string{"x"}}},
		{"a:1|c|#veneurglobalonly", parsed{name: "a", values: []float64{1}, typ: CounterMetric, rate: 1, scope: GlobalOnly}},
		{"a:1|c|#veneurglobalonly:true,veneurlocalonly", parsed{name: "a", values: []float64{1}, typ: CounterMetric, rate: 1, scope: LocalOnly}},
		{"a:1|c|#veneurlocalonlyish", parsed{name: "a", values: []float64{1}, typ: CounterMetric, rate: 1, tags: []string{"veneurlocalonlyish"}}},
		// Host and device overrides, alone, together, with other tags.
		{"a:1|g|#host:web1", parsed{name: "a", values: []float64{1}, typ: GaugeMetric, rate: 1, host: "web1"}},
		{"a:1|g|#device:sda", parsed{name: "a", values: []float64{1}, typ: GaugeMetric, rate: 1, device: "sda"}},
		{"a:1|g|#device:sda,host:web1", parsed{name: "a", values: []float64{1}, typ: GaugeMetric, rate: 1, host: "web1", device: "sda"}},
		{"a:1|g|#z:1,host:web1,a:2,device:sda", parsed{name: "a", values: []float64{1}, typ: GaugeMetric, rate: 1, host: "web1", device: "sda", tags: []string{"a:2", "z:1"}}},
		{"a:1|g|#hostname:x", parsed{name: "a", values: []float64{1}, typ: GaugeMetric, rate: 1, tags: []string{"hostname:x"}}},
		// Newer protocol fields are skipped.
		{"a:1|c|c:abc123", parsed{name: "a", values: []float64{1}, typ: CounterMetric, rate: 1}},
		{"a:1|c|T1700000000|#x", parsed{name: "a", values: []float64{1}, typ: CounterMetric, rate: 1, tags: []string{"x"}}},
		{"a:1|c|e:it-false,cn-x|card:high|@0.5", parsed{name: "a", values: []float64{1}, typ: CounterMetric, rate: 0.5}},
		// Names may hold anything but ':', '|' and newlines.
		{"a b/c-d_e:1|c", parsed{name: "a b/c-d_e", values: []float64{1}, typ: CounterMetric, rate: 1}},
	}
	var p Parser
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			var l Line
			if err := p.ParseLine([]byte(tt.line), &l); err != nil {
				t.Fatalf("ParseLine(%q) = %v", tt.line, err)
			}
			if got := toParsed(&l); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseLine(%q)\n got  %+v\n want %+v", tt.line, got, tt.want)
			}
		})
	}
}

func TestParseLineErrors(t *testing.T) {
	tests := []struct {
		line string
		want error
	}{
		{"", ErrNoColon},
		{"abc", ErrNoColon},
		{"abc|c", ErrNoColon},
		{":1|c", ErrEmptyName},
		{"a:|c", ErrEmptyValue},
		{"a:1", ErrNoType},
		{"a:1|", ErrNoType},
		{"a:1||@0.5", ErrNoType},
		{"a:1|x", ErrUnknownType},
		{"a:1|cc", ErrUnknownType},
		{"a:1|m", ErrUnknownType},
		{"a:abc|c", ErrBadValue},
		{"a:1.2.3|g", ErrBadValue},
		{"a:0x|g", ErrBadValue},
		{"a:-|g", ErrBadValue},
		{"a:.|g", ErrBadValue},
		{"a:1:|h", ErrEmptyValue},
		{"a:1::2|h", ErrBadValue},
		{"a:NaN|g", ErrNonFiniteValue},
		{"a:nan|h", ErrNonFiniteValue},
		{"a:Inf|c", ErrNonFiniteValue},
		{"a:-inf|ms", ErrNonFiniteValue},
		{"a:1e400|g", ErrBadValue},
		{"a:1|c|", ErrEmptySection},
		{"a:1|c||#x", ErrEmptySection},
		{"a:1|c|#x|", ErrEmptySection},
		{"a:1|c|@", ErrBadSampleRate},
		{"a:1|c|@0", ErrBadSampleRate},
		{"a:1|c|@-0.5", ErrBadSampleRate},
		{"a:1|c|@1.5", ErrBadSampleRate},
		{"a:1|c|@NaN", ErrBadSampleRate},
		{"a:1|c|@x", ErrBadSampleRate},
		{"a:1|c|@0.5|@0.5", ErrRepeatedRate},
		{"a:1|c|#x|#y", ErrRepeatedTags},
		{"_e{5,4}:title|text", ErrEventNotMetric},
		{"_sc|check|0", ErrServiceCheck},
		{"a:1|c|#" + strings.Repeat("t,", maxTags+1), ErrTooManyTags},
	}
	var p Parser
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			var l Line
			if err := p.ParseLine([]byte(tt.line), &l); !errors.Is(err, tt.want) {
				t.Errorf("ParseLine(%q) = %v, want %v", tt.line, err, tt.want)
			}
		})
	}
}

func TestParseFloat(t *testing.T) {
	for _, s := range []string{"0", "1", "-1", "+1", "3.14159", "0.1", "0.3", "100.25", "123456789012345",
		"1234567890123456789", "0.000000000000000000001", "1e10", "1E-5", ".5", "5.", "-0", "9007199254740993",
		"0.1234567890123456789", "179769313486231570000000000000000000000000000000000000000"} {
		got, err := parseFloat([]byte(s))
		if err != nil {
			t.Errorf("parseFloat(%q) error %v", s, err)
			continue
		}
		want, _ := parseFloatStd(s)
		if got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Errorf("parseFloat(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestParseLineAllocs(t *testing.T) {
	var p Parser
	var l Line
	line := []byte("api.request.duration:12.5|ms|@0.5|#route:/users,code:200,host:web1")
	p.ParseLine(line, &l) // warm the tag scratch space
	allocs := testing.AllocsPerRun(100, func() {
		if err := p.ParseLine(line, &l); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("ParseLine allocates %v times per line, want 0", allocs)
	}
}

func TestKeyRoundTrip(t *testing.T) {
	var p Parser
	var l Line
	if err := p.ParseLine([]byte("n.a:1|h|#z:1,host:h1,veneurlocalonly,device:d,a:2"), &l); err != nil {
		t.Fatal(err)
	}
	key := AppendKey(nil, &l)
	k, err := DecodeKey(string(key))
	if err != nil {
		t.Fatal(err)
	}
	want := Key{Series: Series{Name: "n.a", Host: "h1", Device: "d", Tags: []string{"a:2", "z:1"}}, Type: HistogramMetric, Scope: LocalOnly, JoinedTags: "a:2,z:1"}
	if !reflect.DeepEqual(k, want) {
		t.Errorf("DecodeKey = %+v, want %+v", k, want)
	}
	// A forwarded series has the key of a line of the same series.
	var g Line
	if err := p.ParseLine([]byte("n.b:1|c|#veneurglobalonly,z:1,a:2"), &g); err != nil {
		t.Fatal(err)
	}
	f := Forwarded{Name: "n.b", Type: CounterMetric, Scope: GlobalOnly, Tags: []string{"a:2", "z:1"}}
	if got, want := AppendForwardedKey(nil, &f), AppendKey(nil, &g); string(got) != string(want) {
		t.Errorf("AppendForwardedKey = %q, want %q", got, want)
	}
	// Same name and tags but another type, scope or host are other keys.
	for _, other := range []string{"n.a:1|ms|#z:1,host:h1,veneurlocalonly,device:d,a:2", "n.a:1|h|#z:1,host:h1,device:d,a:2", "n.a:1|h|#z:1,host:h2,veneurlocalonly,device:d,a:2"} {
		var o Line
		if err := p.ParseLine([]byte(other), &o); err != nil {
			t.Fatal(err)
		}
		if string(AppendKey(nil, &o)) == string(key) {
			t.Errorf("%q has the same key as the original line", other)
		}
	}
	for _, bad := range []string{"", "\x01", "\x01\x00\x05ab", "\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"} {
		if _, err := DecodeKey(bad); err == nil {
			t.Errorf("DecodeKey(%q) accepted a malformed key", bad)
		}
	}
}

func TestSortTagsHeap(t *testing.T) {
	var tags [][]byte
	for i := 0; i < 100; i++ {
		tags = append(tags, []byte{byte('a' + (i*37)%26), byte('a' + i%7)})
	}
	sortTags(tags)
	for i := 1; i < len(tags); i++ {
		if string(tags[i-1]) > string(tags[i]) {
			t.Fatalf("not sorted at %d: %q > %q", i, tags[i-1], tags[i])
		}
	}
}

func parseFloatStd(s string) (float64, error) { return strconv.ParseFloat(s, 64) }

func TestKeyName(t *testing.T) {
	key := AppendKey(nil, &Line{Type: GaugeMetric, Name: []byte("svc.latency"), Host: []byte("h"), Tags: [][]byte{[]byte("a:b")}})
	if name, ok := KeyName(key); !ok || string(name) != "svc.latency" {
		t.Errorf("KeyName = %q, %v", name, ok)
	}
	for _, bad := range [][]byte{nil, {1}, {1, 0, 5, 'a'}, {1, 0, 0x80}} {
		if name, ok := KeyName(bad); ok {
			t.Errorf("KeyName(%v) = %q, want refused", bad, name)
		}
	}
}
