package datadog

import (
	"strings"
	"testing"
)

func TestKeyWarning(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want string // "" means no warning
	}{
		{"", ""},
		{"0123456789abcdef0123456789abcdef", ""},
		{"0123456789ABCDEF0123456789ABCDEF", ""},
		// example.yaml's placeholder, and the usual stand-ins.
		{"your-datadog-api-key", `placeholder (it contains "your")`},
		{"YOUR_API_KEY", `placeholder (it contains "your")`},
		{"changeme", `placeholder (it contains "changeme")`},
		{"<DD_API_KEY>", "placeholder"},
		{"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", `placeholder (it contains "xxx")`},
		{"00000000000000000000000000000000", "one character repeated"},
		{"f", "one character repeated"},
		{"${DD_API_KEY}", "variable reference"},
		{"$DD_API_KEY", "does not expand"},
		// Real-looking keys of the wrong form.
		{"0123456789abcdef0123456789abcde", "has 31 characters, not the 32 hexadecimal characters"},
		{"0123456789abcdef0123456789abcdef01234567", "an application key has 40"},
		{"0123456789abcdef0123456789abcdeg", "has 32 characters, not the 32 hexadecimal"},
		{"0123456789abcdef 123456789abcdef", "without spaces"},
		{"0123456789abcdef0123456789abcdef\n", "has 33 characters"},
	} {
		got := KeyWarning(tc.key)
		switch {
		case tc.want == "" && got != "":
			t.Errorf("KeyWarning(%q) = %q, want none", tc.key, got)
		case tc.want != "" && !strings.Contains(got, tc.want):
			t.Errorf("KeyWarning(%q) = %q, want it to contain %q", tc.key, got, tc.want)
		}
		if got != "" {
			if !strings.HasPrefix(got, "key ") {
				t.Errorf("KeyWarning(%q) = %q does not name the key", tc.key, got)
			}
			// A warning quotes at most the placeholder word it found.
			if len(tc.key) > 8 && strings.Contains(got, tc.key) {
				t.Errorf("KeyWarning(%q) = %q repeats the key", tc.key, got)
			}
		}
	}
}

// No placeholder word can occur in a real key, which is made of
// hexadecimal characters only.
func TestPlaceholderWordsAreNotHex(t *testing.T) {
	for _, w := range placeholderWords {
		if strings.TrimLeft(w, "0123456789abcdef") == "" {
			t.Errorf("placeholder word %q could be part of a real key", w)
		}
	}
}
