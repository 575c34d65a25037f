package listen

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
)

// ErrTruncated is a line cut by the end of its datagram's receive buffer:
// the datagram was longer than max_datagram_bytes. The lines after it in
// the datagram are lost too, uncounted, since the kernel discards them.
// The ingester passes it to Skip for the cut line.
var ErrTruncated = errors.New("datagram longer than max_datagram_bytes cut inside this line")

// readUnixStream reads one connection of the unix stream listener, in one
// of two framings, told apart by the connection's first four bytes:
//
//   - length-prefixed: each payload follows its length, a 4-byte
//     little-endian integer, as the Datadog agent's stream socket reads it
//     and datadog-go's unixstream mode writes it. A payload is a run of
//     DogStatsD lines, the last of which may lack its newline: the end of
//     the payload ends it.
//   - newline-terminated lines, as over TCP.
//
// A first payload shorter than 16 MiB has a length whose fourth byte is 0,
// while DogStatsD text never holds a NUL byte: a connection whose fourth
// byte is 0 is read as length-prefixed payloads, any other as lines. One
// that ends before its fourth byte is read as lines.
//
// Payloads of any length are read, in pieces: metric_max_length (maxLen)
// applies to each line, as readLines applies it. beforeRead, if not nil,
// runs before every read.
func readUnixStream(r io.Reader, in Ingester, maxLen int, beforeRead func()) error {
	br := bufio.NewReaderSize(r, 4096)
	if beforeRead != nil {
		beforeRead()
	}
	// An error here (the stream ended, a deadline) leaves what was read
	// in br; readLines reads it and then meets the error again.
	var src io.Reader = br
	if head, _ := br.Peek(4); len(head) == 4 && head[3] == 0 {
		src = &frameReader{r: br}
	}
	return readLines(src, in, maxLen, beforeRead)
}

// frameReader turns length-prefixed payloads into newline-terminated text:
// it drops each length and ends each payload with a newline (an empty line,
// which readLines skips, when the payload ended with one already). A
// stream that ends inside a length or a payload reads as io.EOF there:
// readLines then counts a cut line as unterminated.
type frameReader struct {
	r io.Reader
	// left is what remains of the current payload.
	left uint64
	// nl says the current payload has ended and its newline is due.
	nl  bool
	hdr [4]byte
	// have is how much of the next length hdr holds.
	have int
}

func (f *frameReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if f.nl {
		p[0] = '\n'
		f.nl = false
		return 1, nil
	}
	for f.left == 0 {
		n, err := f.r.Read(f.hdr[f.have:])
		f.have += n
		if f.have == len(f.hdr) {
			f.left = uint64(binary.LittleEndian.Uint32(f.hdr[:]))
			f.have = 0
			// An empty payload: go on to the next length.
			continue
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			return 0, err
		}
	}
	q := p
	if uint64(len(q)) > f.left {
		q = q[:f.left]
	}
	n, err := f.r.Read(q)
	f.left -= uint64(n)
	if f.left == 0 && n > 0 {
		if n < len(p) {
			p[n] = '\n'
			n++
		} else {
			f.nl = true
		}
	}
	return n, err
}
