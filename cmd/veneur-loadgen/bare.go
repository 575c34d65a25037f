package main

import "bytes"

// countLines counts the non-empty newline-separated lines of a datagram, the
// way a DogStatsD server splits one: a missing final newline still ends a
// line, empty lines count for nothing.
func countLines(b []byte) int {
	n := 0
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return n + 1
		}
		if i > 0 {
			n++
		}
		b = b[i+1:]
	}
	return n
}

// bareStats is what the bare reader reports on request.
type bareStats struct {
	lines, datagrams, bytes, truncated uint64
}
