package forward

import (
	"errors"
	"math"
	"testing"

	"github.com/axiomhq/hyperloglog"
)

// legacyTypes are the types FuzzDecodeLegacy picks from by its kind
// argument.
var legacyTypes = []string{"counter", "histogram", "timer", "set"}

// FuzzDecodeLegacy feeds arbitrary values to the decoder of veneur 1.1.0's
// elements. It must never panic, must refuse with ErrValue only, and what
// it accepts must be usable: a finite counter, a digest with a finite
// count and min <= max, a sketch that merges into ours. Its committed
// corpus (testdata/fuzz/FuzzDecodeLegacy) holds golden values of each type
// and some cut or corrupted ones.
func FuzzDecodeLegacy(f *testing.F) {
	f.Add(uint8(0), legacyCounter(42))
	f.Add(uint8(1), legacyDigest(f, []goldCentroid{{Mean: 1, Weight: 1}, {Mean: 2, Weight: 3}}, 1, 2))
	f.Add(uint8(3), legacySet(f, hashes(30), false, false))
	f.Add(uint8(3), legacySet(f, hashes(30), false, true))
	f.Fuzz(func(t *testing.T, kind uint8, value []byte) {
		typ := legacyTypes[int(kind)%len(legacyTypes)]
		got, err := DecodeJSON(legacy(typ, []string{"a:1"}, value))
		if err != nil {
			if !errors.Is(err, ErrValue) {
				t.Fatalf("%s %x: error %v is not ErrValue", typ, value, err)
			}
			return
		}
		switch typ {
		case "counter":
			if math.IsNaN(got.Counter) || math.IsInf(got.Counter, 0) {
				t.Fatalf("counter %v", got.Counter)
			}
		case "histogram", "timer":
			d := got.Digest
			if c := d.Count(); !(c >= 0) || math.IsInf(c, 0) {
				t.Fatalf("digest count %v", c)
			}
			if d.Count() > 0 && !(d.Min() <= d.Max()) {
				t.Fatalf("digest min %v > max %v", d.Min(), d.Max())
			}
			_ = d.Quantile(0.5)
		case "set":
			if err := hyperloglog.New14().Merge(got.Set); err != nil {
				t.Fatalf("sketch does not merge into ours: %v", err)
			}
			_ = got.Set.Estimate()
		}
	})
}
