package samplers

import (
	"reflect"
	"testing"
)

func TestParseEvent(t *testing.T) {
	for _, c := range []struct {
		line string
		want Event
	}{
		{"_e{5,4}:title|text", Event{Title: "title", Text: "text"}},
		{"_e{5,0}:title|", Event{Title: "title"}},
		{`_e{7,11}:Deploy!|line\nline2|d:1700000000|h:web1|k:agg|p:low|s:jenkins|t:success|#b:2,a:1`,
			Event{Title: "Deploy!", Text: "line\nline2", Timestamp: 1700000000, Host: "web1", AggregationKey: "agg",
				Priority: "low", SourceType: "jenkins", AlertType: "success", Tags: []string{"a:1", "b:2"}}},
		{"_e{3,3}:a|b|c|d|t:error|c:ci-container", Event{Title: "a|b", Text: "c|d", AlertType: "error"}}, // pipes inside, unknown field
		{"_e{6,4}:héllo|text", Event{Title: "héllo", Text: "text"}},                                      // lengths in bytes
	} {
		got, err := ParseEvent([]byte(c.line))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseEvent(%q) = %+v, %v; want %+v", c.line, got, err, c.want)
		}
	}
	for _, bad := range []string{
		"_e{5,4}", "_e{x,4}:title|text", "_e{5,40}:title|text", "_e{0,4}:|text", "_e{5,4}:titl|etext",
		"_e{5,4}:title|textX", "_e{5,4}:title|text|d:soon", "_e{5,4}:title|text||", "_e{-1,4}:title|text", "_e5,4}:title|text",
	} {
		if _, err := ParseEvent([]byte(bad)); err != ErrBadEvent {
			t.Errorf("ParseEvent(%q) = %v, want ErrBadEvent", bad, err)
		}
	}
}

func TestParseServiceCheck(t *testing.T) {
	for _, c := range []struct {
		line string
		want ServiceCheck
	}{
		{"_sc|db.up|0", ServiceCheck{Name: "db.up", Status: 0}},
		{`_sc|db.up|2|d:1700000000|h:db1|#env:prod,role:primary|m:down: m\: see\nrunbook|x:y`,
			ServiceCheck{Name: "db.up", Status: 2, Timestamp: 1700000000, Host: "db1", Tags: []string{"env:prod", "role:primary"},
				Message: "down: m: see\nrunbook|x:y"}},
		{"_sc|q|3|#t|h:box", ServiceCheck{Name: "q", Status: 3, Host: "box", Tags: []string{"t"}}},
	} {
		got, err := ParseServiceCheck([]byte(c.line))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseServiceCheck(%q) = %+v, %v; want %+v", c.line, got, err, c.want)
		}
	}
	for _, bad := range []string{"_sc|", "_sc||0", "_sc|n|4", "_sc|n|ok", "_sc|n", "_sc|n|0|d:x", "_sc|n|0||", "_sc|n|01"} {
		if _, err := ParseServiceCheck([]byte(bad)); err != ErrBadServiceCheck {
			t.Errorf("ParseServiceCheck(%q) = %v, want ErrBadServiceCheck", bad, err)
		}
	}
}

func FuzzParseEventAndCheck(f *testing.F) {
	f.Add([]byte("_e{5,4}:title|text|d:1|#a"))
	f.Add([]byte("_sc|n|0|m:x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseEvent(b)
		ParseServiceCheck(b)
	})
}
