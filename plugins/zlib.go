package plugins

import (
	"encoding/binary"
	"io"

	"github.com/klauspost/compress/flate"
)

// zlibWriter writes the zlib format (RFC 1950) at the fastest deflate
// level, as compress/zlib and klauspost's zlib do, with an Adler-32 of its
// own: theirs (hash/adler32) costs about half as much CPU as the deflate
// itself on a Datadog body.
type zlibWriter struct {
	w       io.Writer
	fw      *flate.Writer
	adler   uint32
	started bool
	err     error
}

// zlibHeader is CMF 0x78 (deflate, 32 KiB window) and FLG 0x01 (fastest
// level, no dictionary, and the check bits that make 0x7801 a multiple of
// 31).
var zlibHeader = [2]byte{0x78, 0x01}

func newZlibWriter(w io.Writer) *zlibWriter {
	// The level is valid, so there is no error.
	fw, _ := flate.NewWriter(w, flate.BestSpeed)
	return &zlibWriter{w: w, fw: fw, adler: 1}
}

// Reset discards the writer's state and makes it write to w.
func (z *zlibWriter) Reset(w io.Writer) {
	z.w = w
	z.fw.Reset(w)
	z.adler = 1
	z.started = false
	z.err = nil
}

func (z *zlibWriter) start() {
	if !z.started {
		z.started = true
		_, z.err = z.w.Write(zlibHeader[:])
	}
}

func (z *zlibWriter) Write(p []byte) (int, error) {
	z.start()
	if z.err != nil {
		return 0, z.err
	}
	var n int
	n, z.err = z.fw.Write(p)
	z.adler = adler32(z.adler, p[:n])
	return n, z.err
}

// Close writes the rest of the deflate stream and the checksum.
func (z *zlibWriter) Close() error {
	z.start()
	if z.err != nil {
		return z.err
	}
	if z.err = z.fw.Close(); z.err != nil {
		return z.err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], z.adler)
	_, z.err = z.w.Write(sum[:])
	return z.err
}

// adlerMod is the Adler-32 modulus, the largest prime below 2^16.
const adlerMod = 65521

// adlerBlock is how many bytes adler32 sums before it reduces its 64-bit
// sums: s2 grows by at most 255·n²/2 over n bytes, far from 2^64.
const adlerBlock = 1 << 20

// Lane masks and multipliers of adler32. A product's top 16-bit lane
// holds lane i of one factor times lane 3-i of the other, summed over i.
const (
	lanes   = 0x00ff00ff00ff00ff        // bytes 0, 2, 4, 6 of a word in 16-bit lanes
	ones    = 0x0001000100010001        // top lane: the sum of the lanes
	weightE = 8<<48 | 6<<32 | 4<<16 | 2 // top lane: the even bytes weighted 8, 6, 4, 2
	weightO = 7<<48 | 5<<32 | 3<<16 | 1 // top lane: the odd bytes weighted 7, 5, 3, 1
)

// adler32 returns the Adler-32 checksum adler (1 for none) updated with p,
// as hash/adler32 computes it, in about a third of its instructions.
// Over n bytes b[1..n], s1 gains their sum and s2 gains n·s1 plus b[i]
// weighted n-i+1. adler32 takes 32 bytes (four words) at a time: for word
// j, the 8-byte weights (8 down to 1) plus 8·(3-j) times the word's sum.
// The sums run over the bytes spread in 16-bit lanes, each reduced with
// one multiplication; no lane exceeds 16 bits.
func adler32(adler uint32, p []byte) uint32 {
	s1, s2 := uint64(adler&0xffff), uint64(adler>>16)
	for len(p) > 0 {
		n := min(len(p), adlerBlock)
		q := p[:n]
		p = p[n:]
		i := 0
		for ; i+32 <= len(q); i += 32 {
			w := q[i : i+32 : i+32]
			x0 := binary.LittleEndian.Uint64(w[0:])
			x1 := binary.LittleEndian.Uint64(w[8:])
			x2 := binary.LittleEndian.Uint64(w[16:])
			x3 := binary.LittleEndian.Uint64(w[24:])
			e0, o0 := x0&lanes, (x0>>8)&lanes
			e1, o1 := x1&lanes, (x1>>8)&lanes
			e2, o2 := x2&lanes, (x2>>8)&lanes
			e3, o3 := x3&lanes, (x3>>8)&lanes
			p1 := e0 + o0 // word 0's bytes, pairwise
			p2 := p1 + e1 + o1
			p3 := p2 + e2 + o2
			sum := (p3 + e3 + o3) * ones >> 48
			earlier := (p1 + p2 + p3) * ones >> 48 // Σ (3-j)·sum of word j
			weighted := ((e0+e1+e2+e3)*weightE)>>48 + ((o0+o1+o2+o3)*weightO)>>48
			s2 += s1<<5 + earlier<<3 + weighted
			s1 += sum
		}
		for _, c := range q[i:] {
			s1 += uint64(c)
			s2 += s1
		}
		s1 %= adlerMod
		s2 %= adlerMod
	}
	return uint32(s2<<16 | s1)
}
