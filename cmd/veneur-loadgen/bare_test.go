package main

import "testing"

func TestCountLines(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", 0},
		{"\n", 0},
		{"\n\n\n", 0},
		{"a:1|c", 1},
		{"a:1|c\n", 1},
		{"a:1|c\nb:2|g", 2},
		{"a:1|c\nb:2|g\n", 2},
		{"a:1|c\n\nb:2|g\n\n", 2},
		{"\na:1|c", 1},
		{"x\ny\nz\n", 3},
	}
	for _, tc := range tests {
		if got := countLines([]byte(tc.in)); got != tc.want {
			t.Errorf("countLines(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
