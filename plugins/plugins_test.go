package plugins

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestCommon(t *testing.T) {
	c := Common{Hostname: "box", Tags: []string{"env:dev"}, Interval: 1500 * time.Millisecond}
	if c.Host("") != "box" || c.Host("web1") != "web1" {
		t.Errorf("Host: %q %q", c.Host(""), c.Host("web1"))
	}
	own := []string{"a:1"}
	got := c.WithTags(own[:1:1])
	if strings.Join(got, ",") != "a:1,env:dev" || len(own) != 1 {
		t.Errorf("WithTags = %v", got)
	}
	for _, iv := range []struct {
		d    time.Duration
		want int64
	}{{0, 1}, {400 * time.Millisecond, 1}, {1500 * time.Millisecond, 2}, {10 * time.Second, 10}, {time.Hour, 3600}} {
		if got := (Common{Interval: iv.d}).IntervalSeconds(); got != iv.want {
			t.Errorf("IntervalSeconds of %v = %d, want %d", iv.d, got, iv.want)
		}
	}
}

func TestParts(t *testing.T) {
	a, b, c := errors.New("a"), errors.New("b"), errors.New("c")
	describe := func(parts []PartError) string {
		var out []string
		for _, p := range parts {
			out = append(out, fmt.Sprintf("%s=%s", p.Part, strings.ReplaceAll(p.Err.Error(), "\n", "+")))
		}
		return strings.Join(out, " ")
	}
	wrapped := fmt.Errorf("context: %w", Part("events", a))
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{Part("events", nil), ""},
		{a, "=a"},
		{errors.Join(a, b), "=a+b"},
		{Part("events", a), "events=a"},
		{errors.Join(a, Part("events", b)), "=a events=b"},
		{errors.Join(Part("events", b), a, Part("events", c)), "events=b+c =a"},
		{errors.Join(nil, Part("events", nil)), ""},
		// A wrapped mark marks the whole error.
		{wrapped, "events=context: a"},
		{errors.Join(wrapped, b), "events=context: a =b"},
	} {
		if got := describe(Parts(tc.err)); got != tc.want {
			t.Errorf("Parts(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	var pe *PartError
	if err := Part("events", a); !errors.As(err, &pe) || !errors.Is(err, a) || err.Error() != "a" {
		t.Errorf("Part: %v", err)
	}
}

func TestCheckURL(t *testing.T) {
	for _, c := range []struct{ value, want string }{
		{"http://x:1", ""},
		{"https://app.datadoghq.com/", ""},
		{"", `k is empty; use a URL such as http://e`},
		{"x:1", `k "x:1": not an absolute http(s) URL; use a URL such as http://e`},
		{"ftp://x", `k "ftp://x": not an absolute http(s) URL; use a URL such as http://e`},
		{"http://", `k "http://": not an absolute http(s) URL; use a URL such as http://e`},
		{"http://[::1", `k: parse "http://[::1": missing ']' in host; use an absolute URL such as http://e`},
	} {
		err := CheckURL("k", c.value, "http://e")
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("CheckURL(%q) = %q, want %q", c.value, got, c.want)
		}
	}
}
