package samplers

import (
	"bytes"
	"math"
	"testing"
)

// FuzzParseLine checks that no input makes the parser panic and that every
// accepted line satisfies what the workers rely on.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"a.b:1|c", "a:1|c|@0.5|#x:1,y", "a:1:2:3|h", "a:u|s|#host:h,device:d",
		"a:1|c|#veneurlocalonly", "a:1|g|T123|c:abc", "a:NaN|g", "_e{1,1}:a|b", ":|", "a:1|c|@0|#",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var p Parser
		var l Line
		orig := bytes.Clone(line)
		err := p.ParseLine(line, &l)
		if !bytes.Equal(orig, line) {
			t.Fatalf("ParseLine modified its input")
		}
		if err != nil {
			return
		}
		if len(l.Name) == 0 || bytes.IndexByte(l.Name, ':') >= 0 {
			t.Fatalf("accepted bad name %q", l.Name)
		}
		if !(l.SampleRate > 0 && l.SampleRate <= 1) {
			t.Fatalf("accepted rate %v", l.SampleRate)
		}
		if l.Type < CounterMetric || l.Type > SetMetric {
			t.Fatalf("accepted type %d", l.Type)
		}
		if l.Type != SetMetric {
			n := 0
			for v := l.Values; len(v) > 0; n++ {
				var x float64
				x, v = NextValue(v)
				if math.IsNaN(x) || math.IsInf(x, 0) {
					t.Fatalf("accepted value %v", x)
				}
			}
			if n == 0 {
				t.Fatalf("accepted a line without values")
			}
		}
		for i := 1; i < len(l.Tags); i++ {
			if bytes.Compare(l.Tags[i-1], l.Tags[i]) > 0 {
				t.Fatalf("tags not sorted: %q", l.Tags)
			}
		}
		k, err := DecodeKey(string(AppendKey(nil, &l)))
		if err != nil {
			t.Fatalf("key of an accepted line does not decode: %v", err)
		}
		if k.Name != string(l.Name) || k.Type != l.Type || k.Scope != l.Scope || k.Host != string(l.Host) || k.Device != string(l.Device) || len(k.Tags) != len(l.Tags) {
			t.Fatalf("key round trip: %+v from %q", k, line)
		}
	})
}
