package samplers

import (
	"hash/maphash"
	"testing"
)

var benchLines = []string{
	"api.requests:1|c|#route:/users,code:200,env:prod",
	"api.request.duration:12.5|ms|@0.5|#route:/users,code:200",
	"queue.depth:42|g",
	"db.query.rows:118|h|#table:orders,shard:7",
	"users.active:u-1234567|s|#region:eu",
}

func BenchmarkParseLine(b *testing.B) {
	var p Parser
	var l Line
	lines := make([][]byte, len(benchLines))
	n := 0
	for i, s := range benchLines {
		lines[i] = []byte(s)
		n += len(s)
	}
	b.ReportAllocs()
	b.SetBytes(int64(n / len(lines)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := p.ParseLine(lines[i%len(lines)], &l); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseKeyHash is the reader's whole per-line cost before the
// hand-off: parse, build the key, hash it once.
func BenchmarkParseKeyHash(b *testing.B) {
	var p Parser
	var l Line
	seed := maphash.MakeSeed()
	key := make([]byte, 0, 256)
	lines := make([][]byte, len(benchLines))
	for i, s := range benchLines {
		lines[i] = []byte(s)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var sink uint64
	for i := 0; i < b.N; i++ {
		if err := p.ParseLine(lines[i%len(lines)], &l); err != nil {
			b.Fatal(err)
		}
		key = AppendKey(key[:0], &l)
		sink += maphash.Bytes(seed, key)
	}
	_ = sink
}
