package listen

import (
	"bytes"
	"encoding/binary"
	"io"
	"slices"
	"testing"

	"github.com/veneur/veneur/samplers"
)

// FuzzReadStream reads an arbitrary stream, cut into reads at arbitrary
// places, as the TCP listener (readLines) and the unix stream listener
// (readUnixStream) read a connection, and compares the lines and skips with
// those of a model written from the framing's definition. How the stream is
// cut into reads must not change what is read.
func FuzzReadStream(f *testing.F) {
	f.Add([]byte("a:1|c\nb:2|c\n"), []byte{3, 1}, uint8(16))
	f.Add([]byte("a:1|c\nbbbbbbbbbbbbbbbbbbbbbbbb\nc:3|c"), []byte{}, uint8(8))
	f.Add([]byte(frame("a:1|c\nb:2|c")+frame("")+frame("c:3|c\n")+frame("dd")[:5]), []byte{1, 1, 1, 7}, uint8(16))
	f.Add([]byte(frame("0123456789abcdef0123")+frame("x\n")), []byte{2}, uint8(4))
	f.Fuzz(func(t *testing.T, data, cuts []byte, max uint8) {
		maxLen := int(max%64) + 1
		// The reads: the lengths in cuts, in turn, each 1 to 256 bytes.
		var parts []string
		for rest, i := data, 0; len(rest) > 0; i++ {
			n := len(rest)
			if len(cuts) > 0 {
				n = min(n, int(cuts[i%len(cuts)])+1)
			}
			parts = append(parts, string(rest[:n]))
			rest = rest[n:]
		}
		wantLines, wantSkips := modelLines(data, maxLen)
		check := func(name string, read func(io.Reader, Ingester) error, lines []string, skips []error) {
			snk := newSink(t)
			if err := read(&chunks{parts: slices.Clone(parts), err: io.EOF}, snk.newIngester()); err != nil {
				t.Fatalf("%s: %v at the end of the stream", name, err)
			}
			got := snk.get()
			if !slices.Equal(got.lines, lines) || !slices.Equal(got.skips, skips) {
				t.Fatalf("%s of %q in reads of %v bytes (maxLen %d):\nlines %q skips %v\nwant  %q skips %v",
					name, data, cuts, maxLen, got.lines, got.skips, lines, skips)
			}
		}
		check("readLines", func(r io.Reader, in Ingester) error { return readLines(r, in, maxLen, nil) }, wantLines, wantSkips)
		if len(data) >= 4 && data[3] == 0 {
			wantLines, wantSkips = modelLines(modelUnframe(data), maxLen)
		}
		check("readUnixStream", func(r io.Reader, in Ingester) error { return readUnixStream(r, in, maxLen, nil) }, wantLines, wantSkips)
	})
}

// modelLines is what reading text should give: each newline-terminated
// line that is not empty, a line longer than maxLen skipped as too long,
// and text after the last newline skipped as too long or unterminated.
func modelLines(text []byte, maxLen int) (lines []string, skips []error) {
	segs := bytes.Split(text, []byte("\n"))
	last := segs[len(segs)-1]
	for _, s := range segs[:len(segs)-1] {
		switch {
		case len(s) > maxLen:
			skips = append(skips, samplers.ErrTooLong)
		case len(s) > 0:
			lines = append(lines, string(s))
		}
	}
	switch {
	case len(last) > maxLen:
		skips = append(skips, samplers.ErrTooLong)
	case len(last) > 0:
		skips = append(skips, ErrUnterminated)
	}
	return lines, skips
}

// modelUnframe is the text of length-prefixed payloads: each whole payload
// and a newline after it; a payload cut by the end of the stream without
// one; a length cut by the end of the stream, nothing.
func modelUnframe(data []byte) []byte {
	var text []byte
	for len(data) >= 4 {
		n := uint64(binary.LittleEndian.Uint32(data))
		data = data[4:]
		if uint64(len(data)) < n {
			return append(text, data...)
		}
		if n > 0 {
			text = append(append(text, data[:n]...), '\n')
		}
		data = data[n:]
	}
	return text
}
