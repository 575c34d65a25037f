package forward

import (
	"sync/atomic"
	"unsafe"

	"github.com/axiomhq/hyperloglog"

	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// CompactMerger is a Merger that also takes an import's series in their
// compact form, which the gRPC import decodes SendMetricsV2 into when its
// Merger is one: the series' keys and values in a few flat arrays, with no
// digest, string or slice of its own per series. A global importing the
// small digests of many locals thus allocates a few arrays per call
// rather than several objects per series, and its GC has next to nothing
// to trace. MergeCompact has Merge's contract: it returns ErrClosed
// (taking nothing) when the instance takes nothing more, and it may keep
// c, which nobody uses afterwards. A merger done with c may give its
// memory back for the next imports with Hold and Release.
type CompactMerger interface {
	Merger
	MergeCompact(c *Compact) error
}

// Compact holds the series of one import, each as its key (the bytes
// samplers.AppendForwardedKey gives for it) and its value: a counter's
// count, a digest's centroids and extremes (what tdigest's SetCentroids
// takes), or a set's sketch. Only the sketches are objects of their own.
// Its zero value is empty and ready for Add and AddForwarded.
type Compact struct {
	keys   []byte
	series []compactSeries
	cents  []tdigest.Centroid
	sets   []*hyperloglog.Sketch
	// holders counts Hold minus Release.
	holders atomic.Int32
}

// compactFree holds Compacts released by their mergers, emptied, for the
// next imports: a global merges one per call of every local, and reusing
// their arrays spares the GC a few hundred KiB per call.
var compactFree = make(chan *Compact, 16)

// compactKeepBytes bounds the memory of a Compact kept for reuse: the
// arrays of an unusually large call are left to the GC.
const compactKeepBytes = 8 << 20

// newCompact returns an empty Compact, one released before when there is
// one.
func newCompact() *Compact {
	select {
	case c := <-compactFree:
		return c
	default:
		return &Compact{}
	}
}

// Hold notes n more holders of c, each of which calls Release once done
// with it (and with what its methods returned).
func (c *Compact) Hold(n int) { c.holders.Add(int32(n)) }

// Release ends one holder's use of c: once every holder has released it,
// c is emptied and kept for another import. Without Hold, it does
// nothing.
func (c *Compact) Release() {
	if c.holders.Add(-1) != 0 {
		return
	}
	if cap(c.keys)+cap(c.series)*int(unsafe.Sizeof(compactSeries{}))+cap(c.cents)*int(unsafe.Sizeof(tdigest.Centroid{})) > compactKeepBytes {
		return
	}
	clear(c.sets)
	c.keys, c.series, c.cents, c.sets = c.keys[:0], c.series[:0], c.cents[:0], c.sets[:0]
	select {
	case compactFree <- c:
	default:
	}
}

// compactSeries is one series of a Compact: its key is keys[keyStart:keyEnd],
// and its value counter (counters), cents[first:end] with lo and hi
// (histograms and timers), or sets[first] (sets).
type compactSeries struct {
	keyStart, keyEnd int
	first, end       int
	counter          float64
	lo, hi           float64
}

// Len is the number of series in c.
func (c *Compact) Len() int { return len(c.series) }

// Key is the key of series i: type, scope, name and sorted tags, as
// samplers.AppendForwardedKey lays them out. Its bytes belong to c.
func (c *Compact) Key(i int) []byte {
	s := &c.series[i]
	return c.keys[s.keyStart:s.keyEnd:s.keyEnd]
}

// Counter is the count of series i, a counter.
func (c *Compact) Counter(i int) float64 { return c.series[i].counter }

// Digest is the digest of series i, a histogram or a timer: its centroids
// (which belong to c) and the extremes of its samples, which SetCentroids
// accepts as they are (Add and AddForwarded checked them).
func (c *Compact) Digest(i int) (cents []tdigest.Centroid, lo, hi float64) {
	s := &c.series[i]
	return c.cents[s.first:s.end:s.end], s.lo, s.hi
}

// Set is the sketch of series i, a set.
func (c *Compact) Set(i int) *hyperloglog.Sketch { return c.sets[c.series[i].first] }

// startKey begins a series whose key the caller appends to c.keys.
func (c *Compact) startKey() int { return len(c.keys) }

// addCounter ends the series whose key began at keyStart: a counter.
func (c *Compact) addCounter(keyStart int, v float64) {
	c.series = append(c.series, compactSeries{keyStart: keyStart, keyEnd: len(c.keys), counter: v})
}

// addDigest ends the series whose key began at keyStart: a digest of
// cents (copied) whose samples range from lo to hi.
func (c *Compact) addDigest(keyStart int, cents []tdigest.Centroid, lo, hi float64) {
	first := len(c.cents)
	c.cents = append(c.cents, cents...)
	c.series = append(c.series, compactSeries{keyStart: keyStart, keyEnd: len(c.keys), first: first, end: len(c.cents), lo: lo, hi: hi})
}

// addSet ends the series whose key began at keyStart: a set.
func (c *Compact) addSet(keyStart int, sk *hyperloglog.Sketch) {
	c.sets = append(c.sets, sk)
	c.series = append(c.series, compactSeries{keyStart: keyStart, keyEnd: len(c.keys), first: len(c.sets) - 1})
}

// AddForwarded appends f, a series as DecodeMetricpb or DecodeJSON give
// it: a counter, a histogram or timer with a digest, or a set with a
// sketch. Its digest's centroids are copied; its sketch is kept. It
// appends nothing for a series of another type, or a histogram without a
// digest or set without a sketch, and reports whether it appended.
func (c *Compact) AddForwarded(f *samplers.Forwarded) bool {
	switch f.Type {
	case samplers.CounterMetric:
	case samplers.HistogramMetric, samplers.TimerMetric:
		if f.Digest == nil {
			return false
		}
	case samplers.SetMetric:
		if f.Set == nil {
			return false
		}
	default:
		return false
	}
	start := c.startKey()
	c.keys = samplers.AppendForwardedKey(c.keys, f)
	switch f.Type {
	case samplers.CounterMetric:
		c.addCounter(start, f.Counter)
	case samplers.SetMetric:
		c.addSet(start, f.Set)
	default:
		first := len(c.cents)
		c.cents = f.Digest.AppendCentroids(c.cents)
		c.series = append(c.series, compactSeries{
			keyStart: start, keyEnd: len(c.keys), first: first, end: len(c.cents),
			lo: f.Digest.Min(), hi: f.Digest.Max(),
		})
	}
	return true
}
