package veneur

import (
	"bytes"
	"fmt"
	"math"
	"testing"

	"github.com/veneur/veneur/samplers"
)

// emitted is one sample a reader handed to a worker, as the worker sees it.
type emitted struct {
	worker int
	key    string
	hash   uint64
	value  float64
	rate   float64
	member string
}

// takeEmitted returns, per worker in order, the samples an ingester has
// handed over (queued or pending), and empties its batches.
func takeEmitted(t testing.TB, p *workerPool, in *ingester) []emitted {
	t.Helper()
	var out []emitted
	add := func(wi int, b *batch) {
		for _, s := range b.samples {
			e := emitted{worker: wi, key: string(b.buf[s.keyOff : s.keyOff+s.keyLen]), hash: s.hash, value: s.value, rate: s.rate}
			if s.memLen > 0 {
				off := s.keyOff + s.keyLen
				e.member = string(b.buf[off : off+s.memLen])
			}
			out = append(out, e)
		}
	}
	for wi, w := range p.workers {
		for drained := false; !drained; {
			select {
			case b := <-w.in:
				add(wi, b)
			default:
				drained = true
			}
		}
		if b := in.pending[wi]; b != nil {
			add(wi, b)
			in.pending[wi] = nil
		}
	}
	return out
}

// want is what the reader must hand over for lines, worked out with the
// whole-line parser, the key and the pool's routing, with no cache.
func wantEmitted(p *workerPool, maxLen int, lines [][]byte) []emitted {
	perWorker := make([][]emitted, len(p.workers))
	var parser samplers.Parser
	var l samplers.Line
	for _, line := range lines {
		if len(line) == 0 || len(line) > maxLen || parser.ParseLine(line, &l) != nil {
			continue
		}
		key := samplers.AppendKey(nil, &l)
		h, wi := p.route(key)
		e := emitted{worker: wi, key: string(key), hash: h, rate: l.SampleRate}
		switch {
		case l.Type == samplers.SetMetric:
			e.member = string(l.Values)
			perWorker[wi] = append(perWorker[wi], e)
		default:
			for vals := l.Values; len(vals) > 0; {
				e.value, vals = samplers.NextValue(vals)
				perWorker[wi] = append(perWorker[wi], e)
			}
		}
	}
	var out []emitted
	for _, es := range perWorker {
		out = append(out, es...)
	}
	return out
}

func splitLines(p []byte) [][]byte {
	return bytes.Split(p, []byte("\n"))
}

func sameEmitted(a, b []emitted) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.worker != y.worker || x.key != y.key || x.hash != y.hash || x.rate != y.rate || x.member != y.member ||
			math.Float64bits(x.value) != math.Float64bits(y.value) {
			return false
		}
	}
	return true
}

// Lines of one series in every spelling (tag order, magic tags, host and
// device, sample rates, packed values, unknown sections) give the key,
// hash and worker the whole-line parser gives, on the first sight of a
// shape and from the cache after.
func TestKeyCacheSameAsParser(t *testing.T) {
	lines := []string{
		"a:1|c|#x:1,y:2",
		"a:2|c|#y:2,x:1",
		"a:3|c|@0.5|#x:1,y:2",
		"a:4|c|#x:1,y:2|@0.25",
		"a:5|c|#x:1,y:2|c:container|T1700000000",
		"a:6:7:8|h|#x:1,y:2",
		"a:6|d|#x:1,y:2",
		"a:9|ms|#x:1,y:2",
		"a:u1|s|#x:1,y:2",
		"a:1|g|#host:h1,x:1,device:sda",
		"a:1|g|#x:1,device:sda,host:h1",
		"a:1|g|#x:1,host:h2,device:sda",
		"a:1|c|#veneurlocalonly,x:1",
		"a:1|c|#veneurglobalonly,x:1",
		"a:1|c|#veneurglobalonly:true,veneurlocalonly,x:1",
		"a:1|c",
		"a:1|c|#",
		"a:1|c|#,",
		"b:1|c",
		"a:1|c|#x:1,x:1",
		"a:1|c|#x:1,y:2|#z", // repeated tags: an error
		"a:NaN|c|#x:1,y:2",  // non-finite: an error
		"a:1|c|@2|#x:1,y:2", // bad rate: an error
		"a:1|q|#x:1,y:2",    // unknown type: an error
		"_e{1,1}:a|b",       // an event
		"a:1|c|#x:1,y:2\r",  // CR
	}
	var packet []byte
	for _, l := range lines {
		packet = append(append(packet, l...), '\n')
	}
	p, g := testIngest(t, 3, 4096)
	in := g.newIngester().(*ingester)
	want := wantEmitted(p, 4096, splitLines(packet))
	for pass := 0; pass < 3; pass++ {
		in.Packet(bytes.Clone(packet), false)
		got := takeEmitted(t, p, in)
		if !sameEmitted(got, want) {
			t.Fatalf("pass %d: the reader handed over\n%v\nwant\n%v", pass, got, want)
		}
	}
}

// A new series whose shape lands in a set already holding two moves the
// older one out; every line still gets its own key, and the table grows
// while it fills but never past its bound.
func TestKeyCacheEvictsAndGrows(t *testing.T) {
	p, g := testIngest(t, 2, 4096)
	in := g.newIngester().(*ingester)
	var packet []byte
	var lines [][]byte
	for i := 0; i < 3*keyCacheMaxSlots; i++ {
		line := fmt.Appendf(nil, "series.%d:1|c|#k:%d", i, i%7)
		lines = append(lines, line)
		packet = append(append(packet, line...), '\n')
	}
	want := wantEmitted(p, 4096, lines)
	for pass := 0; pass < 2; pass++ {
		in.Packet(bytes.Clone(packet), false)
		if got := takeEmitted(t, p, in); !sameEmitted(got, want) {
			t.Fatalf("pass %d: %d samples differ from the parser's %d", pass, len(got), len(want))
		}
	}
	if n := len(in.keys.slots); n != keyCacheMaxSlots {
		t.Fatalf("table of %d slots, want it grown to its bound %d", n, keyCacheMaxSlots)
	}
}

// A reader with a few series keeps a small table, and a hit in a set's
// second way moves it to the first (the least recent is evicted).
func TestKeyCacheSmallAndRecent(t *testing.T) {
	var c keyCache
	set := func(shape string) {
		c.shape = append(c.shape[:0], shape...)
	}
	set("one")
	c.put(10, []byte("k1"), 1, 0)
	if len(c.slots) != keyCacheMinSlots {
		t.Fatalf("first put made %d slots, want %d", len(c.slots), keyCacheMinSlots)
	}
	set("two")
	c.put(10, []byte("k2"), 2, 1) // the same set: "one" moves to the second way
	set("one")
	if s := c.lookup(10); s == nil || string(s.key()) != "k1" || s.keyHash != 1 || s.worker != 0 {
		t.Fatalf("one: %+v", s)
	}
	// "one" is now the most recent: a third shape evicts "two".
	set("three")
	c.put(10, []byte("k3"), 3, 0)
	set("two")
	if s := c.lookup(10); s != nil {
		t.Fatalf("two survived, want it evicted as the least recent: %+v", s)
	}
	set("one")
	if s := c.lookup(10); s == nil || string(s.key()) != "k1" {
		t.Fatalf("one was evicted, want it kept as the most recent")
	}
	// The same hash with other bytes is no hit.
	set("onf")
	if s := c.lookup(10); s != nil {
		t.Fatalf("a shape with the hash of another matched: %+v", s)
	}
	// Shapes longer than the bound are not kept.
	set(string(bytes.Repeat([]byte("x"), keyCacheMaxShape+1)))
	c.put(12, []byte("long"), 4, 0)
	if s := c.lookup(12); s != nil {
		t.Fatalf("a %d-byte shape was cached", len(c.shape))
	}
}

// FuzzKeyCache: whatever two packets hold, a reader hands over for each
// line, first and again, exactly what the whole-line parser, the key and the
// routing give.
func FuzzKeyCache(f *testing.F) {
	for _, s := range [][2]string{
		{"a:1|c|#x,y", "a:1|c|#y,x"},
		{"a:1|c|#host:h,x", "a:1|c|#x,device:d"},
		{"a:1|c|#veneurlocalonly,x", "a:1|c|#x,veneurglobalonly"},
		{"a:1:2|h|@0.5|#x|T1", "a:u|s|#x"},
		{"a:1|c|#x|#y", "a:1|c|#x\r"},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		p, g := testIngest(t, 2, 4096)
		in := g.newIngester().(*ingester)
		packet := append(append(bytes.Clone(a), '\n'), b...)
		want := wantEmitted(p, 4096, splitLines(packet))
		for pass := 0; pass < 2; pass++ {
			in.Packet(bytes.Clone(packet), false)
			if got := takeEmitted(t, p, in); !sameEmitted(got, want) {
				t.Fatalf("pass %d: the reader handed over\n%v\nwant\n%v", pass, got, want)
			}
		}
	})
}

// A window in which fewer than half of the lookups hit rests the cache for
// keyCacheRest lines; a window with half or more keeps it on.
func TestKeyCacheRests(t *testing.T) {
	var c keyCache
	for i := 0; i < keyCacheWindow; i++ {
		if !c.use() {
			t.Fatalf("line %d went without the cache before any window ended", i)
		}
		c.looked(i%2 == 0) // exactly half hit
	}
	if !c.use() {
		t.Fatal("a window with half its lookups hitting rested the cache")
	}
	c.looked(false)
	for i := 1; i < keyCacheWindow; i++ {
		c.looked(i < keyCacheWindow/2-1) // one hit short of half
	}
	for i := 0; i < keyCacheRest; i++ {
		if c.use() {
			t.Fatalf("line %d of the rest used the cache", i)
		}
	}
	if !c.use() {
		t.Fatal("the cache stayed off after its rest")
	}
}

// A reader whose series outnumber the cache rests it and still hands over
// every line's own key.
func TestKeyCacheManySeries(t *testing.T) {
	p, g := testIngest(t, 2, 4096)
	in := g.newIngester().(*ingester)
	var lines [][]byte
	for i := 0; i < 3*keyCacheWindow; i++ {
		lines = append(lines, fmt.Appendf(nil, "s%d:1|c|#a,b", i))
	}
	for pass := 0; pass < 3; pass++ {
		var packet []byte
		for _, l := range lines[pass*keyCacheWindow : (pass+1)*keyCacheWindow] {
			packet = append(append(packet, l...), '\n')
		}
		in.Packet(packet, false)
		want := wantEmitted(p, 4096, lines[pass*keyCacheWindow:(pass+1)*keyCacheWindow])
		if got := takeEmitted(t, p, in); !sameEmitted(got, want) {
			t.Fatalf("pass %d: %d samples differ from the parser's %d", pass, len(got), len(want))
		}
		if in.keys.rest == 0 {
			t.Fatalf("pass %d: a window of new series only did not rest the cache", pass)
		}
	}
}
