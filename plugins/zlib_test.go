package plugins

import (
	"bytes"
	"compress/zlib"
	stdadler "hash/adler32"
	"io"
	"math/rand/v2"
	"testing"
)

// adler32 agrees with hash/adler32 on every length around its 8-byte
// steps and its block size, on bytes that make its sums largest (0xff),
// and when a checksum is continued over several writes.
func TestAdler32(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 3*adlerBlock+77)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	ff := bytes.Repeat([]byte{0xff}, 2*adlerBlock+13)
	for _, data := range [][]byte{random, ff} {
		for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 63, 5552, 5553, adlerBlock - 1, adlerBlock, adlerBlock + 9, len(data)} {
			if got, want := adler32(1, data[:n]), stdadler.Checksum(data[:n]); got != want {
				t.Errorf("%d bytes (first %#x): %#x, want %#x", n, data[0], got, want)
			}
		}
		// In pieces of odd sizes.
		sum, rest := uint32(1), data
		for i := 1; len(rest) > 0; i = i*3 + 1 {
			k := min(i, len(rest))
			sum = adler32(sum, rest[:k])
			rest = rest[k:]
		}
		if want := stdadler.Checksum(data); sum != want {
			t.Errorf("in pieces: %#x, want %#x", sum, want)
		}
	}
}

func FuzzAdler32(f *testing.F) {
	f.Add([]byte("Wikipedia"), 3)
	f.Add(bytes.Repeat([]byte{0xff}, 100), 0)
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		if split < 0 || split > len(data) {
			split = len(data) / 2
		}
		got := adler32(adler32(1, data[:split]), data[split:])
		if want := stdadler.Checksum(data); got != want {
			t.Fatalf("%#x, want %#x", got, want)
		}
	})
}

// zlibWriter writes what compress/zlib reads back, with the header the
// fastest level has, after a Reset too, and keeps an error it met.
func TestZlibWriter(t *testing.T) {
	var a, b bytes.Buffer
	z := newZlibWriter(&a)
	for i, dst := range []*bytes.Buffer{&a, &b} {
		z.Reset(dst)
		want := bytes.Repeat([]byte("{\"metric\":\"a.b\",\"points\":[[1700000000,1]]}"), 2000*(i+1))
		for p := want; len(p) > 0; p = p[min(len(p), 4097):] {
			if _, err := z.Write(p[:min(len(p), 4097)]); err != nil {
				t.Fatal(err)
			}
		}
		if err := z.Close(); err != nil {
			t.Fatal(err)
		}
		if got := dst.Bytes()[:2]; got[0] != 0x78 || got[1] != 0x01 {
			t.Errorf("header %x, want 7801", got)
		}
		zr, err := zlib.NewReader(dst)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("round %d: %d bytes back, want %d", i, len(got), len(want))
		}
	}
	z.Reset(failWriter{})
	if _, err := z.Write([]byte("x")); err == nil {
		t.Error("a failing destination gave no error")
	}
	if err := z.Close(); err == nil {
		t.Error("Close after a failed write gave no error")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func BenchmarkAdler32(b *testing.B) {
	data := bytes.Repeat([]byte(`{"metric":"lg.t.11000.50percentile","points":[[1700000000,339]],"tags":["env:load","shard:8","svc:api"]},`), 320)
	b.Run("ours", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			adler32(1, data)
		}
	})
	b.Run("hash/adler32", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			stdadler.Checksum(data)
		}
	})
}
