package forward

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// The limits on an /import body are readers, each wrapping the one below:
//
//	r.Body → http.MaxBytesReader (compressed bytes)
//	       → deflate or gzip
//	       → capReader (decompressed bytes; errors of the reads below
//	         become readError)
//	       → spaceSqueezer (whitespace: each run squeezed to a byte, and
//	         a body mostly of it refused)
//	       → elementLimit (bytes of one array element)
//	       → json.Decoder
//
// A reader that refuses returns a *tooLargeError, and goes on returning
// it, so that the decoder reports it whichever of its calls meets it
// first.

// tooLargeError is the refusal of a limit: the request is answered 413.
type tooLargeError struct{ msg string }

func (e *tooLargeError) Error() string { return e.msg }

// readError is an error of reading the body itself (the connection, or
// the deflate or gzip stream), as opposed to what the body says: the
// request is answered 400, cause body.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// compressedCap is the cap on the compressed bytes of a body whose
// decompressed cap is maxBody. Deflate grows what does not compress by a
// few bytes per 64 KiB block, so a body that honestly fits maxBody is
// within maxBody/256 + 64 KiB more. This cap is what stops a stream that
// decompresses to little or nothing (empty blocks, or gzip members without
// data), which the decompressed cap never sees, from being read for as
// long as the sender likes.
func compressedCap(maxBody int64) int64 {
	slack := maxBody/256 + 64<<10
	if maxBody > math.MaxInt64-slack {
		return math.MaxInt64
	}
	return maxBody + slack
}

// capReader reads at most max bytes from r, and refuses a body that has
// more: it reads one byte past max to tell a body of exactly max bytes,
// which is accepted, from a longer one. Errors of r other than io.EOF are
// wrapped in readError.
type capReader struct {
	r    io.Reader
	max  int64
	left int64 // bytes still allowed; starts at max
	err  error // sticky
}

func newCapReader(r io.Reader, max int64) *capReader {
	return &capReader{r: r, max: max, left: max}
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > c.left {
		p = p[:c.left+1] // the byte past the cap, if any
	}
	n, err := c.r.Read(p)
	if int64(n) > c.left {
		n = int(c.left)
		c.left = 0
		c.err = &tooLargeError{fmt.Sprintf("body over %d bytes decompressed; send fewer metrics per request or raise import_max_body_bytes", c.max)}
		return n, c.err
	}
	c.left -= int64(n)
	if err != nil && err != io.EOF {
		err = &readError{err}
		c.err = err
	}
	return n, err
}

// whitespaceError is the refusal of a body that is mostly whitespace:
// the request is answered 400, cause whitespace.
type whitespaceError struct{ space, data int64 }

func (e *whitespaceError) Error() string {
	return fmt.Sprintf("body is mostly whitespace: %d bytes of it outside strings, beside %d bytes of JSON; send compact JSON", e.space, e.data)
}

// Whitespace allowed in a body, outside strings: whitespaceSlack bytes,
// and whitespaceRatio bytes per byte of anything else. JSON indented by
// hand or by an encoder (four spaces a level, one element a line) has
// about one byte of whitespace per byte of the rest, and the slack covers
// more at its start; compact JSON, what our locals and veneur 1.1.0's
// send, has none. A body of whitespace is refused after 64 KiB of it.
const (
	whitespaceSlack = 64 << 10
	whitespaceRatio = 4
)

// spaceSqueezer hands on what r reads, with each run of JSON whitespace
// (space, tab, newline, carriage return) outside a string replaced by one
// space. That leaves the JSON the same (whitespace only separates tokens,
// and one space does so as well as many), but a decoder, which keeps the
// whitespace before a token in its buffer, never holds more than a byte
// of it.
//
// It also refuses a body that is mostly whitespace, with a
// *whitespaceError, as soon as the whitespace outside strings passes
// slack bytes plus whitespaceRatio per byte of the rest: no sender writes
// such a body, and a deflated gigabyte of whitespace is a megabyte, so
// that refusing it after slack bytes spares reading the rest. (Whitespace
// costs no memory, as it is squeezed; only the time to read it.)
//
// It follows strings by their quotes and backslash escapes. In JSON that
// is not valid, it may lose track after the first error, which the
// decoder reports before any byte past it matters.
type spaceSqueezer struct {
	r      io.Reader
	slack  int64
	space  int64 // whitespace bytes read outside strings
	data   int64 // the other bytes read
	inRun  bool  // the last byte read was whitespace outside a string
	inStr  bool  // within a string
	escape bool  // within a string, after a backslash
	err    error // sticky
}

func (s *spaceSqueezer) Read(p []byte) (int, error) {
	for {
		if s.err != nil {
			return 0, s.err
		}
		n, err := s.r.Read(p)
		w, refused := s.squeeze(p[:n])
		if refused != nil {
			s.err = refused
			return w, s.err
		}
		if err != nil {
			s.err = err
		}
		// Read again rather than return nothing when every byte was
		// squeezed out.
		if w > 0 || err != nil || n == 0 {
			return w, err
		}
	}
}

// spaces8 is eight spaces read as a little-endian uint64.
const spaces8 = 0x2020202020202020

// squeeze squeezes p in place, and returns how many bytes it kept, or a
// *whitespaceError once the whitespace passes its allowance. It goes
// through strings and runs of spaces by more than a byte at a time: a
// body is mostly those.
func (s *spaceSqueezer) squeeze(p []byte) (int, error) {
	w := 0 // p[:w] is kept
	keep := func(from, to int) {
		w += copy(p[w:], p[from:to])
		s.data += int64(to - from)
	}
	for i := 0; i < len(p); {
		switch c := p[i]; {
		case s.escape: // the byte after a backslash, in a string
			s.escape = false
			keep(i, i+1)
			i++
		case s.inStr:
			j := quoteOrBackslash(p[i:])
			if j < 0 {
				keep(i, len(p))
				i = len(p)
				break
			}
			keep(i, i+j+1)
			if p[i+j] == '"' {
				s.inStr = false
			} else {
				s.escape = true
			}
			i += j + 1
		case isSpace(c):
			j := i
			for j < len(p) {
				if j+8 <= len(p) && binary.LittleEndian.Uint64(p[j:]) == spaces8 {
					j += 8
				} else if isSpace(p[j]) {
					j++
				} else {
					break
				}
			}
			if !s.inRun {
				p[w] = ' '
				w++
				s.inRun = true
			}
			s.space += int64(j - i)
			// data is at most the body's bytes, far from overflowing.
			if s.space > s.slack+whitespaceRatio*s.data {
				return w, &whitespaceError{space: s.space, data: s.data}
			}
			i = j
		default:
			s.inRun = false
			if c == '"' {
				s.inStr = true
			}
			keep(i, i+1)
			i++
		}
	}
	return w, nil
}

// isSpace reports whether c is JSON whitespace.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// quoteOrBackslash is the index of the first '"' or '\\' in b, or -1.
func quoteOrBackslash(b []byte) int {
	q := bytes.IndexByte(b, '"')
	if q < 0 {
		q = len(b)
	}
	if k := bytes.IndexByte(b[:q], '\\'); k >= 0 {
		return k
	}
	if q == len(b) {
		return -1
	}
	return q
}

// elementLimit lets a JSON decoder read at most max bytes past the offset
// given to from, which the decoder's caller sets to where each array
// element starts: the decoder's buffer then never holds more than one
// element (and the separator before it) of max bytes. A decoder that needs
// more to finish a value gets a *tooLargeError.
type elementLimit struct {
	r     io.Reader
	max   int64
	read  int64 // bytes handed to the decoder
	limit int64 // read never passes it
	err   error // sticky
}

// from allows max bytes past offset, a position in what was read.
func (l *elementLimit) from(offset int64) {
	l.limit = offset + l.max
}

func (l *elementLimit) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	left := l.limit - l.read
	if left <= 0 {
		return 0, &tooLargeError{fmt.Sprintf("a metric, with the separator before it, is over %d bytes", l.max)}
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	if err != nil {
		l.err = err
	}
	return n, err
}
