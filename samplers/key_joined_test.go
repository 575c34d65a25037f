package samplers

import (
	"bytes"
	"strings"
	"testing"
)

// AppendKeyJoined lays out the key AppendForwardedKey gives for the same
// series, which DecodeKey reads back.
func TestAppendKeyJoined(t *testing.T) {
	for _, f := range []Forwarded{
		{Type: CounterMetric, Scope: GlobalOnly, Name: "requests", Tags: []string{"a:1", "b:2"}},
		{Type: HistogramMetric, Scope: MixedScope, Name: "latency"},
		{Type: TimerMetric, Scope: MixedScope, Name: strings.Repeat("n", 300), Tags: []string{"x"}},
		{Type: SetMetric, Scope: MixedScope, Name: "users", Tags: []string{"env:prod", "region:eu", "shard:3"}},
	} {
		want := AppendForwardedKey([]byte("prefix"), &f)
		got := AppendKeyJoined([]byte("prefix"), f.Type, f.Scope, []byte(f.Name), []byte(strings.Join(f.Tags, ",")))
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %q, want %q", f.Name, got, want)
		}
		k, err := DecodeKey(string(got[len("prefix"):]))
		if err != nil || k.Name != f.Name || k.Type != f.Type || k.Scope != f.Scope || strings.Join(k.Tags, ",") != strings.Join(f.Tags, ",") {
			t.Errorf("%s: decoded %+v, %v", f.Name, k, err)
		}
	}
}
