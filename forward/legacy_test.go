package forward

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"encoding/json"
	"errors"
	"math"
	"math/bits"
	"slices"
	"strings"
	"testing"

	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// The encoders below write values as veneur 1.1.0 does, from the formats
// described in legacy.go: they build golden payloads independently of the
// decoder under test.

// legacyCounter is a 1.1.0 counter value: a little-endian int64.
func legacyCounter(v int64) []byte {
	return binary.LittleEndian.AppendUint64(nil, uint64(v))
}

// goldCentroid has the fields of 1.1.0's tdigest.Centroid.
type goldCentroid struct {
	Mean    float64
	Weight  float64
	Samples []float64
}

// legacyDigest is 1.1.0's gob digest: centroids, compression, min, max,
// four gob values from one encoder.
func legacyDigest(t testing.TB, cents []goldCentroid, lo, hi float64) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	for _, v := range []any{cents, 100.0, lo, hi} {
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// mix64 is splitmix64's finaliser: the 64-bit hashes of the test members.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func hashes(n int) []uint64 {
	h := make([]uint64, n)
	for i := range h {
		h[i] = mix64(uint64(i) + 1)
	}
	return h
}

// sparseKey is the library's sparse key of hash x at precision 18: the
// 25-bit index, and when its 7 bits past the 18-bit index are zero, the
// count of zeros after the 25 bits plus one, and a low 1 bit.
func sparseKey(x uint64) uint32 {
	idx := uint32(x >> 39)
	if idx&0x7f == 0 {
		zeros := uint32(bits.LeadingZeros64(x<<25|1<<24)) + 1
		return idx<<7 | zeros<<1 | 1
	}
	return idx << 1
}

// legacySet is 1.1.0's gob sketch of the hashes hs. dense writes the
// 2^18 registers; otherwise the sparse keys go to the unmerged set, or,
// with merged, to the delta-varint list.
func legacySet(t testing.TB, hs []uint64, dense, merged bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	put := func(v any) {
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
	}
	if dense {
		reg := make([]uint8, 1<<18)
		for _, x := range hs {
			i := x >> 46
			r := uint8(bits.LeadingZeros64(x<<18|1<<17)) + 1
			reg[i] = max(reg[i], r)
		}
		put(reg)
		put(uint32(1 << 18))
		put(uint8(18))
		put(false)
		return buf.Bytes()
	}
	put([]uint8(nil))
	put(uint32(1 << 18))
	put(uint8(18))
	put(true)
	tmp := map[uint32]bool{}
	var keys []uint32
	for _, x := range hs {
		if merged {
			keys = append(keys, sparseKey(x))
		} else {
			tmp[sparseKey(x)] = true
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var list []uint8
	var last uint32
	for _, k := range keys {
		for d := k - last; ; d >>= 7 {
			if d < 0x80 {
				list = append(list, uint8(d))
				break
			}
			list = append(list, uint8(d&0x7f|0x80))
		}
		last = k
	}
	put(tmp)
	put(uint32(len(keys)))
	put(list)
	put(last)
	return buf.Bytes()
}

// ourRegisters are the precision-14 registers of the hashes hs, as our
// sketch would compute them from the same hashes.
func ourRegisters(hs []uint64) []byte {
	reg := make([]byte, 1<<14)
	for _, x := range hs {
		i := x >> 50
		r := uint8(bits.LeadingZeros64(x<<14|1<<13)) + 1
		reg[i] = max(reg[i], r)
	}
	return reg
}

// legacy is a 1.1.0 element.
func legacy(typ string, tags []string, value []byte) *JSONMetric {
	ts := strings.Join(tags, ",")
	return &JSONMetric{Name: "m", Type: typ, Tags: tags, TagString: &ts, Value: value}
}

func TestLegacyCounter(t *testing.T) {
	for _, v := range []int64{42, 0, -7, 1 << 40} {
		f, err := DecodeJSON(legacy("counter", []string{"a:1", "b:2"}, legacyCounter(v)))
		if err != nil {
			t.Fatal(err)
		}
		if f.Type != samplers.CounterMetric || f.Scope != samplers.GlobalOnly || f.Counter != float64(v) {
			t.Errorf("counter %d decodes as %+v", v, f)
		}
	}
	// The same bytes without tagstring are ours: a double.
	f, err := DecodeJSON(&JSONMetric{Name: "m", Type: "counter", Value: legacyCounter(42)})
	if err != nil || f.Counter == 42 {
		t.Errorf("our counter of the same bytes = %v, %v", f.Counter, err)
	}
}

// TestLegacyJSON decodes 1.1.0's JSON (an untagged element has "tags":null
// and "tagstring":"") beside ours in one array.
func TestLegacyJSON(t *testing.T) {
	body := `[{"name":"old","type":"counter","tagstring":"","tags":null,"value":"KgAAAAAAAAA="},` +
		`{"name":"old.t","type":"counter","tagstring":"a:1,b:2","tags":["b:2","a:1"],"value":"KgAAAAAAAAA="},` +
		`{"name":"new","type":"counter","tags":[],"value":"AAAAAAAARUA="}]`
	var ms []JSONMetric
	if err := json.Unmarshal([]byte(body), &ms); err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		f, err := DecodeJSON(&m)
		if err != nil || f.Counter != 42 {
			t.Errorf("element %d: %v, %v", i, f.Counter, err)
		}
	}
	if ms[2].TagString != nil {
		t.Errorf("our element has a tagstring")
	}
	// A tagstring that is not the tags joined is refused.
	bad := "a:1"
	_, err := DecodeJSON(&JSONMetric{Name: "m", Type: "counter", Tags: []string{"a:1", "b:2"}, TagString: &bad, Value: legacyCounter(1)})
	if !errors.Is(err, ErrTags) {
		t.Errorf("mismatched tagstring: %v", err)
	}
	// What we write has no tagstring.
	out, err := json.Marshal(encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Name: "c", Counter: 1}))
	if err != nil || bytes.Contains(out, []byte("tagstring")) {
		t.Errorf("we write %s, %v", out, err)
	}
}

func TestLegacyHistogram(t *testing.T) {
	samples := []float64{1, 2, 7, 8, 100}
	var cents []goldCentroid
	for _, v := range samples {
		cents = append(cents, goldCentroid{Mean: v, Weight: 1})
	}
	for _, typ := range []string{"histogram", "timer"} {
		f, err := DecodeJSON(legacy(typ, nil, legacyDigest(t, cents, 1, 100)))
		if err != nil {
			t.Fatal(err)
		}
		if f.Type.String() != typ {
			t.Errorf("type %v, want %s", f.Type, typ)
		}
		d, want := f.Digest, digestOf(t, samples...)
		if d.Count() != 5 || d.Min() != 1 || d.Max() != 100 {
			t.Errorf("count %v min %v max %v, want 5, 1, 100", d.Count(), d.Min(), d.Max())
		}
		for _, q := range []float64{0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1} {
			if got, w := d.Quantile(q), want.Quantile(q); got != w {
				t.Errorf("%s quantile %v = %v, our digest of the samples gives %v", typ, q, got, w)
			}
		}
	}
	// Weights are kept: one centroid of weight 3.
	f, err := DecodeJSON(legacy("histogram", nil, legacyDigest(t, []goldCentroid{{Mean: 5, Weight: 3, Samples: []float64{4, 5, 6}}}, 4, 6)))
	if err != nil || f.Digest.Count() != 3 || f.Digest.Min() != 4 || f.Digest.Max() != 6 {
		t.Errorf("weighted centroid: %v", err)
	}
	// An empty 1.1.0 digest has infinite min and max, and is empty here.
	f, err = DecodeJSON(legacy("histogram", nil, legacyDigest(t, nil, math.Inf(1), math.Inf(-1))))
	if err != nil || f.Digest.Count() != 0 {
		t.Errorf("empty digest: %v", err)
	}
}

func TestLegacySet(t *testing.T) {
	for _, c := range []struct {
		name          string
		n             int
		dense, merged bool
	}{
		{"sparse unmerged 30", 30, false, false},
		{"sparse merged 30", 30, false, true},
		{"sparse merged 5000", 5000, false, true},
		{"dense 30", 30, true, false},
		{"dense 300000", 300000, true, false},
	} {
		hs := hashes(c.n)
		f, err := DecodeJSON(legacy("set", []string{"a:1"}, legacySet(t, hs, c.dense, c.merged)))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if f.Type != samplers.SetMetric || f.Scope != samplers.MixedScope {
			t.Errorf("%s: %v %v", c.name, f.Type, f.Scope)
		}
		// The folded registers are exactly those of the same hashes at
		// precision 14 (our sketch is dense: its registers follow an
		// 8-byte header).
		enc, err := f.Set.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc[8:], ourRegisters(hs)) {
			t.Errorf("%s: registers differ from precision 14 of the same hashes", c.name)
		}
		if c.n == 30 {
			if e := f.Set.Estimate(); e < 29 || e > 31 {
				t.Errorf("%s: estimate %d, want 30±1", c.name, e)
			}
		}
	}
}

func TestLegacyMalformed(t *testing.T) {
	digest := legacyDigest(t, []goldCentroid{{Mean: 1, Weight: 1}, {Mean: 2, Weight: 1}}, 1, 2)
	set := legacySet(t, hashes(30), false, true)
	many := make([]goldCentroid, maxLegacyCentroids+1)
	for i := range many {
		many[i] = goldCentroid{Mean: float64(i), Weight: 1}
	}
	var p16 bytes.Buffer
	enc := gob.NewEncoder(&p16)
	for _, v := range []any{[]uint8(nil), uint32(1 << 16), uint8(16), true, map[uint32]bool{}, uint32(0), []uint8{}, uint32(0)} {
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
	}
	// More unmerged keys than the library ever keeps, each valid.
	bigTmp := map[uint32]bool{}
	for _, x := range hashes(maxLegacyTmpSet + 100) {
		bigTmp[sparseKey(x)] = true
	}
	var tmpBuf bytes.Buffer
	enc = gob.NewEncoder(&tmpBuf)
	for _, v := range []any{[]uint8(nil), uint32(1 << 18), uint8(18), true, bigTmp, uint32(0), []uint8{}, uint32(0)} {
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name, typ string
		value     []byte
	}{
		{"short counter", "counter", []byte{1, 2, 3}},
		{"digest garbage", "histogram", []byte("not a gob")},
		{"digest empty", "timer", nil},
		{"digest cut", "histogram", digest[:len(digest)-3]},
		{"digest cut early", "histogram", digest[:len(digest)/2]},
		{"digest too many centroids", "histogram", legacyDigest(t, many, 0, 1)},
		{"digest too long", "histogram", make([]byte, maxLegacyValue+1)},
		{"digest NaN mean", "histogram", legacyDigest(t, []goldCentroid{{Mean: math.NaN(), Weight: 1}}, 0, 1)},
		{"digest zero weight", "histogram", legacyDigest(t, []goldCentroid{{Mean: 1, Weight: 0}}, 1, 1)},
		{"set garbage", "set", []byte{0xff, 0xff, 0xff}},
		{"set cut", "set", set[:len(set)-2]},
		{"set precision 16", "set", p16.Bytes()},
		{"set big tmp set", "set", tmpBuf.Bytes()},
		{"set dense short", "set", func() []byte {
			b := legacySet(t, hashes(3), true, false)
			return b[:len(b)/2]
		}()},
	} {
		_, err := DecodeJSON(legacy(c.typ, nil, c.value))
		if !errors.Is(err, ErrValue) {
			t.Errorf("%s: %v, want ErrValue", c.name, err)
		}
	}
	if _, err := DecodeJSON(legacy("gauge", nil, legacyCounter(1))); !errors.Is(err, ErrType) {
		t.Errorf("gauge: %v", err)
	}
}

// The accuracy of the global aggregation of 1.1.0 locals: 16 local
// digests, each sent as 1.1.0's gob t-digest in a 1.1.0 /import element
// (written as 1.1.0 writes it, decoded by DecodeJSON) and merged, keep
// quantiles within the bounds our t-digest is tested to, and the exact
// count (the centroids' weights), min and max. gob carries no mark of a
// single-valued centroid (one of weight under 2 is taken as one sample),
// so integer data keeps its rank bounds but not every quantile an exact
// sample value, as it does over our JSON and gRPC.
func TestLegacyMergeAccuracy(t *testing.T) {
	checkMergeAccuracy(t, false, func(t *testing.T, d *tdigest.TDigest) *tdigest.TDigest {
		var cents []goldCentroid
		for _, c := range d.AppendCentroids(nil) {
			cents = append(cents, goldCentroid{Mean: c.Mean, Weight: c.Weight})
		}
		f, err := DecodeJSON(legacy("histogram", []string{"svc:api"}, legacyDigest(t, cents, d.Min(), d.Max())))
		if err != nil {
			t.Fatal(err)
		}
		return f.Digest
	})
}
