package tdigest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// checkInvariants verifies what every digest, however it was made, must
// satisfy.
func checkInvariants(t *testing.T, d *TDigest) {
	t.Helper()
	n := d.Count()
	if n == 0 {
		if !math.IsNaN(d.Quantile(0.5)) {
			t.Fatal("empty digest has a median")
		}
		return
	}
	if !(n > 0) || math.IsInf(n, 0) {
		t.Fatalf("Count %v", n)
	}
	mn, mx := d.Min(), d.Max()
	if !(mn <= mx) {
		t.Fatalf("Min %v > Max %v", mn, mx)
	}
	prev := math.Inf(-1)
	for i := 0; i <= 200; i++ {
		q := float64(i) / 200
		v := d.Quantile(q)
		if math.IsNaN(v) || v < mn || v > mx || v < prev {
			t.Fatalf("Quantile(%v) = %v (previous %v, range [%v, %v])", q, v, prev, mn, mx)
		}
		prev = v
		c := d.CDF(v)
		if math.IsNaN(c) || c < 0 || c > 1 {
			t.Fatalf("CDF(%v) = %v", v, c)
		}
	}
	if d.Quantile(0) != mn || d.Quantile(1) != mx {
		t.Fatal("Quantile(0) or Quantile(1) is not Min or Max")
	}
}

func fuzzSeeds() [][]byte {
	var seeds [][]byte
	add := func(d *TDigest) {
		b, _ := d.MarshalBinary()
		seeds = append(seeds, b)
	}
	add(New())
	one := New()
	one.Add(3.5, 1)
	add(one)
	few := NewWithCompression(50)
	for i, v := range []float64{1, 2, 2, 2, 9.75, -4} {
		few.Add(v, float64(i%3)+0.5)
	}
	add(few)
	ints := New()
	for i := 0; i < 3000; i++ {
		ints.Add(float64(i%21), 1)
	}
	add(ints)
	cont := NewWithCompression(30)
	for i := 0; i < 2000; i++ {
		cont.Add(math.Exp(float64(i%97)/10), 1)
	}
	add(cont)
	return seeds
}

func FuzzUnmarshalBinary(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
		for _, cut := range []int{1, 2, 3, len(s) / 2, len(s) - 1} {
			if cut < len(s) {
				f.Add(s[:cut])
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := New()
		if err := d.UnmarshalBinary(data); err != nil {
			if d.Count() != 0 {
				t.Fatal("failed decode left data in the digest")
			}
			return
		}
		// An allocation sized by the input never exceeds a small multiple
		// of it.
		if cap(d.cents) > len(data)/minCentroidBytes+1 {
			t.Fatalf("%d centroids allocated for %d bytes", cap(d.cents), len(data))
		}
		checkInvariants(t, d)
		// Re-encoding is canonical: encode(decode(encode(x))) == encode(x).
		b1, err := d.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		d2 := New()
		if err := d2.UnmarshalBinary(b1); err != nil {
			t.Fatalf("re-encoded digest does not decode: %v", err)
		}
		b2, _ := d2.MarshalBinary()
		if !bytes.Equal(b1, b2) {
			t.Fatal("encoding is not stable")
		}
		// The decoded digest is usable.
		m := New()
		m.Merge(d)
		d.Add(1, 1)
		d.Merge(d2)
		checkInvariants(t, d)
		checkInvariants(t, m)
	})
}

// FuzzAdd feeds arbitrary (value, weight) pairs, valid or not, to Add and
// Merge and checks the digest's invariants.
func FuzzAdd(f *testing.F) {
	f.Add([]byte{}, uint16(400))
	f.Add(binary.LittleEndian.AppendUint64(nil, math.Float64bits(1.5)), uint16(20))
	f.Add(bytes.Repeat([]byte{0x3f, 0xf0, 0, 0, 0, 0, 0, 1, 0x40}, 300), uint16(25))
	f.Fuzz(fuzzAddBody)
}

func fuzzAddBody(t *testing.T, data []byte, comp uint16) {
	{
		a, b := NewWithCompression(float64(comp)), NewWithCompression(float64(comp)/3)
		var count float64
		mn, mx := math.Inf(1), math.Inf(-1)
		for i := 0; len(data) >= 9; i++ {
			v := math.Float64frombits(binary.LittleEndian.Uint64(data))
			w := float64(data[8]%8) / 2
			data = data[9:]
			d := a
			if i%2 == 1 {
				d = b
			}
			err := d.Add(v, w)
			valid := !math.IsNaN(v) && !math.IsInf(v, 0) && w > 0
			if (err == nil) != valid {
				t.Fatalf("Add(%v, %v) = %v", v, w, err)
			}
			if valid {
				count += w
				mn, mx = math.Min(mn, v), math.Max(mx, v)
			}
		}
		a.Merge(b)
		checkInvariants(t, a)
		if a.Count() != count {
			t.Fatalf("Count %v, want %v", a.Count(), count)
		}
		if count > 0 && (a.Min() != mn || a.Max() != mx) {
			t.Fatalf("Min/Max %v %v, want %v %v", a.Min(), a.Max(), mn, mx)
		}
		rt := New()
		enc, _ := a.MarshalBinary()
		if err := rt.UnmarshalBinary(enc); err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if rt.Count() != a.Count() || rt.Quantile(0.5) != a.Quantile(0.5) && !(math.IsNaN(rt.Quantile(0.5)) && math.IsNaN(a.Quantile(0.5))) {
			t.Fatal("round trip changed the digest")
		}
	}
}

// TestDecodeRejects covers specific hostile inputs.
func TestDecodeRejects(t *testing.T) {
	valid := func() []byte {
		d := New()
		for _, v := range []float64{1, 2, 3} {
			d.Add(v, 1)
		}
		b, _ := d.MarshalBinary()
		return b
	}
	f64 := func(v float64) []byte { return binary.LittleEndian.AppendUint64(nil, math.Float64bits(v)) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	cases := map[string][]byte{
		"nil":            nil,
		"version 0":      {0, 0, 0},
		"version 2":      append([]byte{2}, valid()[1:]...),
		"unknown flag":   {1, 0x80, 0},
		"trailing byte":  append(valid(), 0),
		"huge count":     cat([]byte{1, 0}, binary.AppendUvarint(nil, 1<<62), f64(1), []byte{4}),
		"count too big":  cat([]byte{1, 0, 3}, f64(1), []byte{4}, f64(2), []byte{4}),
		"bad varint":     {1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"NaN mean":       cat([]byte{1, 0, 1}, f64(math.NaN()), []byte{4}),
		"Inf mean":       cat([]byte{1, 0, 1}, f64(math.Inf(1)), []byte{4}),
		"zero weight":    cat([]byte{1, 0, 1}, f64(1), []byte{0}),
		"negative w":     cat([]byte{1, 0, 1}, f64(1), []byte{1}, f64(-1)),
		"NaN weight":     cat([]byte{1, 0, 1}, f64(1), []byte{1}, f64(math.NaN())),
		"Inf weight":     cat([]byte{1, 0, 1}, f64(1), []byte{1}, f64(math.Inf(1))),
		"bad tag":        cat([]byte{1, 0, 1}, f64(1), []byte{5}, f64(1)),
		"out of order":   cat([]byte{1, 0, 2}, f64(2), []byte{4}, f64(1), []byte{4}),
		"min above mean": cat([]byte{1, flagMin, 1}, f64(2), f64(1), []byte{4}),
		"max below mean": cat([]byte{1, flagMax, 1}, f64(0), f64(1), []byte{4}),
		"NaN min":        cat([]byte{1, flagMin, 1}, f64(math.NaN()), f64(1), []byte{4}),
		"NaN sum":        cat([]byte{1, flagSum, 1}, f64(math.NaN()), f64(1), []byte{4}),
		"bad count":      cat([]byte{1, flagCount, 1}, f64(7), f64(1), []byte{4}),
		"compression":    cat([]byte{1, flagCompression}, f64(1e12), []byte{0}),
		"NaN compress":   cat([]byte{1, flagCompression}, f64(math.NaN()), []byte{0}),
		"empty with min": cat([]byte{1, flagMin, 0}, f64(1)),
		"overflow":       cat([]byte{1, 0, 2}, f64(1), []byte{1}, f64(math.MaxFloat64), f64(2), []byte{1}, f64(math.MaxFloat64)),
		"truncated":      valid()[:len(valid())-1],
	}
	for name, data := range cases {
		d := New()
		d.Add(5, 1)
		if err := d.UnmarshalBinary(data); err == nil {
			t.Errorf("%s: accepted", name)
		} else if d.Count() != 0 {
			t.Errorf("%s: failed decode left the digest non-empty", name)
		}
	}
	// Every prefix of a valid encoding is rejected.
	for _, s := range fuzzSeeds() {
		for i := 0; i < len(s); i++ {
			if err := New().UnmarshalBinary(s[:i]); err == nil {
				t.Errorf("prefix %d of %d bytes accepted", i, len(s))
			}
		}
	}
}

// TestWriteFuzzCorpus regenerates the committed seed corpus of valid,
// truncated and corrupted encodings:
//
//	TDIGEST_WRITE_CORPUS=1 go test -run TestWriteFuzzCorpus ./tdigest/
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("TDIGEST_WRITE_CORPUS") == "" {
		t.Skip("set TDIGEST_WRITE_CORPUS=1 to regenerate testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzUnmarshalBinary")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	names := []string{"empty", "one", "few-weighted", "integers", "continuous"}
	for i, s := range fuzzSeeds() {
		write("valid-"+names[i], s)
		if len(s) > 4 {
			write("truncated-"+names[i], s[:len(s)*2/3])
			c := bytes.Clone(s)
			c[len(c)/2] ^= 0x80 // flip a sign or varint continuation bit
			write("corrupt-"+names[i], c)
		}
	}
	// A mean swapped out of order, and a NaN weight.
	d := New()
	d.Add(1, 1)
	d.Add(2, 1.5)
	b, _ := d.MarshalBinary()
	write("valid-fractional-weight", b)
	nan := bytes.Clone(b)
	copy(nan[len(nan)-8:], binary.LittleEndian.AppendUint64(nil, math.Float64bits(math.NaN())))
	write("corrupt-nan-weight", nan)
	swapped := bytes.Clone(b)
	copy(swapped[3:11], b[len(b)-17:len(b)-9])
	copy(swapped[len(b)-17:len(b)-9], b[3:11])
	write("corrupt-out-of-order", swapped)
	big := append([]byte{1, 0}, binary.AppendUvarint(nil, 1<<40)...)
	write("corrupt-huge-count", append(big, make([]byte, 20)...))
}
