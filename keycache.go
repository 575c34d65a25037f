package veneur

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"

	"github.com/veneur/veneur/samplers"
)

// keyCache remembers, for one reader, the canonical key of the series it
// saw last by their shape: the metric type, the name and the raw tag
// section of a line, which decide the series. A line whose shape is known
// skips parsing and sorting its tags, building its key and hashing it: at a
// host's usual few thousand series that is about half of a line's cost.
//
// It is a 2-way set-associative table of byte buffers that are reused, so a
// miss allocates nothing once the table is warm, and its size is bounded:
// it starts small (a TCP connection with a handful of series keeps a few
// KiB) and doubles while it fills, up to keyCacheMaxSlots. Shapes longer
// than keyCacheMaxShape are not cached. At more series than slots, as at a
// host with 100,000 series, most lines would miss and a miss costs more
// than no cache (a hash, a copy, and memory the workers' maps need): when
// fewer than half of a window's lookups hit, the reader goes without the
// cache for keyCacheRest lines, then tries it again.
type keyCache struct {
	seed  maphash.Seed
	shape []byte
	slots []keySlot
	// puts counts the entries written since the table last grew.
	puts int
	// looks and hits count the lookups of the current window; rest is
	// how many more lines go without the cache.
	looks, hits, rest int
}

const (
	keyCacheMinSlots = 64
	keyCacheMaxSlots = 4096
	keyCacheMaxShape = 512
	keyCacheWindow   = 4096
	keyCacheRest     = 16 * keyCacheWindow
)

// use reports whether the next line should look in the cache.
func (c *keyCache) use() bool {
	if c.rest > 0 {
		c.rest--
		return false
	}
	return true
}

// looked counts a lookup; at the end of a window with fewer hits than
// misses it rests the cache.
func (c *keyCache) looked(hit bool) {
	c.looks++
	if hit {
		c.hits++
	}
	if c.looks == keyCacheWindow {
		if 2*c.hits < c.looks {
			c.rest = keyCacheRest
		}
		c.looks, c.hits = 0, 0
	}
}

// keySlot is one remembered series: buf holds its shape, then its key.
type keySlot struct {
	shapeHash uint64
	keyHash   uint64
	worker    int32
	shapeLen  int32
	buf       []byte
}

func (s *keySlot) key() []byte { return s.buf[s.shapeLen:] }

// appendShape appends the shape of a line to dst: its type, its name and
// its raw tag section, unambiguously.
func appendShape(dst []byte, typ samplers.MetricType, name, tags []byte) []byte {
	dst = append(dst, byte(typ))
	dst = binary.AppendUvarint(dst, uint64(len(name)))
	dst = append(dst, name...)
	return append(dst, tags...)
}

// lookup returns the slot remembering the shape in c.shape, whose hash is
// h, or nil. A hit in a set's second way moves the slot to its first.
func (c *keyCache) lookup(h uint64) *keySlot {
	if len(c.slots) == 0 {
		return nil
	}
	i := int(h) & (len(c.slots) - 1) &^ 1
	set := c.slots[i : i+2 : i+2]
	if set[0].shapeHash == h && bytes.Equal(set[0].buf[:set[0].shapeLen], c.shape) {
		return &set[0]
	}
	if set[1].shapeHash == h && bytes.Equal(set[1].buf[:set[1].shapeLen], c.shape) {
		set[0], set[1] = set[1], set[0]
		return &set[0]
	}
	return nil
}

// put remembers key, its hash and its worker for the shape in c.shape,
// whose hash is h, in the first way of its set; the entry there moves to
// the second, whose entry is forgotten (its buffer reused).
func (c *keyCache) put(h uint64, key []byte, keyHash uint64, worker int) {
	if len(c.shape) > keyCacheMaxShape {
		return
	}
	if c.puts >= len(c.slots) && len(c.slots) < keyCacheMaxSlots {
		// Full of entries written since it last grew: double it. The
		// entries are dropped; the next lines put them back.
		n := 2 * len(c.slots)
		if n == 0 {
			n = keyCacheMinSlots
		}
		c.slots = make([]keySlot, n)
		c.puts = 0
	}
	c.puts++
	i := int(h) & (len(c.slots) - 1) &^ 1
	set := c.slots[i : i+2 : i+2]
	set[0], set[1] = set[1], set[0]
	s := &set[0]
	s.buf = append(append(s.buf[:0], c.shape...), key...)
	s.shapeHash, s.keyHash, s.worker, s.shapeLen = h, keyHash, int32(worker), int32(len(c.shape))
}
