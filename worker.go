package veneur

import (
	"errors"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/internal/yield"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// sample is one value bound for a worker. Its key (and, for sets, its
// member right after the key) live in the owning batch's buf.
type sample struct {
	hash   uint64
	value  float64
	rate   float64
	keyOff uint32
	keyLen uint32
	memLen uint32
}

// batch carries samples from one reader to one worker, so that a channel
// operation is paid per batch rather than per line. A batch has exactly one
// owner at a time: the reader that fills it, then the worker that empties it
// and returns it to the pool. Nobody keeps a reference after handing it on.
type batch struct {
	buf     []byte
	samples []sample
	// flush, when set, makes this a flush request rather than data: the
	// worker answers with its interval. It travels in the same queue as
	// the data, so a flush takes everything queued before it.
	flush chan interval
	// imports, when set, makes this a batch of metrics imported from other
	// instances (not from the pool).
	imports []importItem
	// compact, when set, makes this a batch of imported series in their
	// compact form: series idx[k] of compact, whose key hashes to
	// hashes[k]. The arrays hold no pointers, for the GC to skip.
	compact *forward.Compact
	idx     []int32
	hashes  []uint64
}

// importItem is one imported metric bound for a worker: its key, and the
// metric in the slice handed to workerPool.Merge.
type importItem struct {
	hash uint64
	key  []byte
	f    *samplers.Forwarded
}

const (
	batchMaxSamples = 256
	batchMaxBytes   = 16 << 10
	// workerQueueLen is how many batches may wait for one worker.
	workerQueueLen = 32
)

func (b *batch) full() bool {
	return len(b.samples) >= batchMaxSamples || len(b.buf) >= batchMaxBytes
}

func (b *batch) reset() {
	b.buf = b.buf[:0]
	b.samples = b.samples[:0]
}

func newBatchPool() *sync.Pool {
	return &sync.Pool{New: func() any {
		return &batch{buf: make([]byte, 0, batchMaxBytes+1024), samples: make([]sample, 0, batchMaxSamples)}
	}}
}

// series is one metric key a worker knows. It outlives intervals, so
// that a key seen again in the next interval costs a map lookup instead
// of decoding the key and allocating its strings again (at a host's usual
// rate every series is new in every interval); its state in an interval
// is a record of that interval. A worker forgets the keys that go a whole
// interval without a sample once they are many (see Worker.sweep).
//
// Only the worker writes a series, and only epoch, rec and next; the
// flush reads the rest, which never changes, through the interval's
// records.
type series struct {
	key   string
	next  *series // chains keys whose 64-bit hashes collide
	Type  samplers.MetricType
	Scope samplers.MetricScope
	// epoch is the interval of the series' last sample (Worker.epoch);
	// rec is the index of its record in that interval.
	epoch uint32
	rec   int32
	// meta is what the flushed values point to (their samplers.Series
	// pointer keeps the series alive), so the values of several
	// intervals share it.
	meta samplers.Series
}

// record is one series' state in one interval, which the flush turns into
// values. A worker appends it at the series' first sample in the interval
// and hands the records over whole, never touching them again.
type record struct {
	se    *series
	value float64 // counter sum or last gauge value
	histo *samplers.Histo
	set   *samplers.Set
}

// interval is what a worker hands over at flush: the record of every
// series that had a sample since the previous flush, and how many samples
// it processed.
type interval struct {
	recs      []record
	processed uint64
	imported  uint64 // metrics merged from /import
	badKeys   uint64
	// badWeights counts histogram samples the digest refused: their
	// weight (1/sample rate) is beyond what it takes.
	badWeights uint64
	// perType counts the series of each samplers.MetricType.
	perType [8]int
	// seriesDropped counts the samples (and imported metrics) of new
	// series refused because the workers held max_series_per_interval
	// series; dropped counts them per metric name, for at most
	// maxDropNames names (nil until the first drop). The values are
	// pointers so that counting a known name converts no key to a string.
	seriesDropped uint64
	dropped       map[string]*uint64
}

// nseries is how many series the interval holds.
func (iv *interval) nseries() int {
	n := 0
	for _, c := range iv.perType {
		n += c
	}
	return n
}

// Worker aggregates the samples of the keys that hash to it. Only its own
// goroutine touches its map and records, so the per-line path takes no
// lock; the flusher asks for the interval's records through a channel and
// the worker starts new ones.
type Worker struct {
	in    chan *batch
	pool  *sync.Pool
	limit *seriesCap // shared by every worker; nil: no cap
	// known holds every series the worker knows, by the hash of its key;
	// nknown counts them.
	known  map[uint64]*series
	nknown int
	// epoch numbers the interval being filled.
	epoch uint32
	// idx holds the records' indexes of the batch being processed.
	idx []int32
	// importDigest is where mergeCompact builds each imported digest
	// before merging it, reused from one to the next.
	importDigest *tdigest.TDigest
	cur          interval
	lastLen      int
	// lastHistos is how many histograms and timers the last interval
	// held; free holds histograms of recycled records, for reuse, at
	// most that many.
	lastHistos int
	free       []*samplers.Histo
	// lastSets and freeSets are the same for sets: sparse sketches of
	// recycled records, emptied.
	lastSets int
	freeSets []*samplers.Set
	// y slices the worker's work (see run).
	y yield.Slicer
	// spare is the record array of an interval the flush is done with,
	// which the next interval takes over (see recycle); guarded by
	// spareMu, as the flusher hands it back.
	spareMu sync.Mutex
	spare   []record
}

func newWorker(pool *sync.Pool, limit *seriesCap) *Worker {
	return &Worker{
		in:    make(chan *batch, workerQueueLen),
		pool:  pool,
		limit: limit,
		known: make(map[uint64]*series),
		epoch: 1,
		// A worker's slice is its own: its work is what the readers
		// hand it, which it must keep up with however long the
		// flush's slice has run.
		y: yield.Slicer{Own: true},
	}
}

// run processes batches until w.in is closed and drained. It yields its P
// every yield.Slice: a worker with a full queue would otherwise keep a UDP
// reader that shares its P waiting for as long as it takes to empty it
// (10 ms and more at the start of an interval, when every series takes a
// new record), until Go's scheduler preempts it.
func (w *Worker) run() {
	for b := range w.in {
		w.y.Tick()
		if b.flush != nil {
			b.flush <- w.swap()
			w.prepare()
			w.sweep()
			continue
		}
		if b.imports != nil {
			w.merge(b.imports)
			continue
		}
		if b.compact != nil {
			w.mergeCompact(b.compact, b.idx, b.hashes)
			b.compact.Release()
			continue
		}
		w.process(b)
	}
}

// flush asks the running worker for its interval, after the batches
// already queued. It waits for queue space as long as it takes: the worker
// always drains its queue.
func (w *Worker) flush() interval {
	reply := make(chan interval, 1)
	w.in <- &batch{flush: reply}
	return <-reply
}

// swap hands over the current interval and starts a new one, whose
// records prepare provides. The series handed over give their places
// under the cap back.
func (w *Worker) swap() interval {
	out := w.cur
	w.limit.give(out.nseries())
	w.lastLen = len(out.recs)
	w.lastHistos = out.perType[samplers.HistogramMetric] + out.perType[samplers.TimerMetric]
	w.lastSets = out.perType[samplers.SetMetric]
	w.cur = interval{}
	w.epoch++
	return out
}

// prepare gives the interval that swap started its record array: the
// array of an interval the flush is done with when there is one big
// enough, whose histograms it keeps for reuse, or a new one sized like the
// last interval's. A steady load then allocates neither records nor
// digests from one interval to the next.
func (w *Worker) prepare() {
	w.spareMu.Lock()
	recs := w.spare
	w.spare = nil
	w.spareMu.Unlock()
	// An interval may hold a few more series than the last: room for
	// an eighth more spares regrowing the array, or new digests.
	keep := w.lastHistos + w.lastHistos/8
	keepSets := w.lastSets + w.lastSets/8
	for i := range recs {
		if i%sweepStep == 0 {
			w.y.Tick()
		}
		if h := recs[i].histo; h != nil && len(w.free) < keep {
			w.free = append(w.free, h)
		}
		if s := recs[i].set; s != nil && len(w.freeSets) < keepSets && s.Reuse() {
			w.freeSets = append(w.freeSets, s)
		}
	}
	// Drop what the records pointed to.
	for i := 0; i < len(recs); i += 16 * sweepStep {
		clear(recs[i:min(i+16*sweepStep, len(recs))])
		w.y.Tick()
	}
	if len(w.free) > keep {
		clear(w.free[keep:])
		w.free = w.free[:keep]
	}
	if len(w.freeSets) > keepSets {
		clear(w.freeSets[keepSets:])
		w.freeSets = w.freeSets[:keepSets]
	}
	if cap(recs) < w.lastLen {
		recs = make([]record, 0, w.lastLen+w.lastLen/8)
	}
	w.cur.recs = recs[:0]
}

// recycle hands the worker back the records of an interval once the
// flush and every sink are done with them and with the digests and
// sketches they point to. It may be called from any goroutine; a worker
// keeps one such array.
func (w *Worker) recycle(recs []record) {
	w.spareMu.Lock()
	if w.spare == nil {
		w.spare = recs
	}
	w.spareMu.Unlock()
}

// sweepMin is how many keys without a sample in the last interval a worker
// keeps in any case; past it and past half the series of the last
// interval, sweep forgets them.
const sweepMin = 4096

// sweepStep is how many keys a sweep looks at between two looks at the
// clock.
const sweepStep = 1024

// sweep forgets the series that had no sample in the interval just handed
// over, when they are many: keys that churn (an id in a tag) cost a map
// entry each until then, and a sweep costs a pass over the map.
func (w *Worker) sweep() {
	last := w.epoch - 1
	if stale := w.nknown - w.lastLen; stale <= sweepMin || stale <= w.lastLen/2 {
		return
	}
	n := 0
	for h, head := range w.known {
		if n++; n%sweepStep == 0 {
			// A pass over a million keys takes milliseconds: let the
			// readers in (they may share this P).
			w.y.Tick()
		}
		if head.next == nil {
			if head.epoch != last {
				delete(w.known, h)
				w.nknown--
			}
			continue
		}
		var keep *series
		for se := head; se != nil; {
			next := se.next
			if se.epoch == last {
				se.next = keep
				keep = se
			} else {
				w.nknown--
			}
			se = next
		}
		if keep == nil {
			delete(w.known, h)
		} else {
			w.known[h] = keep
		}
	}
}

// send hands b to the worker, waiting at most wait when its queue is full.
// It reports whether the worker took the batch; if not, the caller still
// owns b.
func (w *Worker) send(b *batch, wait time.Duration) (ok, waited bool) {
	select {
	case w.in <- b:
		return true, false
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case w.in <- b:
		return true, true
	case <-t.C:
		return false, true
	}
}

// processStep is how many samples a worker applies between two looks at
// the clock: a sample costs a few hundred nanoseconds, but one that makes
// a digest or grows one costs more, and more again while the GC makes
// allocations assist it, so that a whole batch ran for milliseconds at
// start-up.
const processStep = 64

// process applies a batch's samples. It first finds the record of every
// sample, then updates them: the lookups of different samples do not
// depend on each other, so the CPU overlaps their cache misses (a map
// group, a series, its key: with 100,000 series most lookups miss) instead
// of waiting for each in turn behind the previous sample's update.
func (w *Worker) process(b *batch) {
	idx := w.idx[:0]
	for i := range b.samples {
		s := &b.samples[i]
		idx = append(idx, w.find(s.hash, b.buf[s.keyOff:s.keyOff+s.keyLen]))
	}
	w.idx = idx
	for i, ri := range idx {
		if i%processStep == processStep-1 {
			w.y.Tick()
		}
		if ri < 0 {
			continue
		}
		s := &b.samples[i]
		r := &w.cur.recs[ri]
		switch r.se.Type {
		case samplers.CounterMetric:
			r.value += s.value / s.rate
		case samplers.GaugeMetric:
			r.value = s.value
		case samplers.HistogramMetric, samplers.TimerMetric:
			if r.histo.Sample(s.value, s.rate) != nil {
				w.cur.badWeights++
			}
		case samplers.SetMetric:
			end := s.keyOff + s.keyLen
			r.set.Sample(b.buf[end : end+s.memLen])
		}
	}
	w.cur.processed += uint64(len(b.samples))
	b.reset()
	w.pool.Put(b)
}

// merge folds imported metrics into the current interval: counter sums
// add up, digests and sketches merge. A histogram's local statistics stay
// those of the samples this instance received itself.
func (w *Worker) merge(items []importItem) {
	for i := range items {
		it := &items[i]
		r := w.lookup(it.hash, it.key)
		if r == nil {
			continue
		}
		switch r.se.Type {
		case samplers.CounterMetric:
			r.value += it.f.Counter
		case samplers.HistogramMetric, samplers.TimerMetric:
			r.histo.Merge(it.f.Digest)
		case samplers.SetMetric:
			if r.set.Merge(it.f.Set) != nil {
				w.cur.badKeys++
				continue
			}
		}
		w.cur.imported++
	}
}

// mergeCompact merges the series idx of c, whose keys hash to hashes, as
// merge merges the same series as samplers.Forwarded: a digest's
// centroids as tdigest's MergeCentroids takes them (the digest
// SetCentroids would build from them, merged).
func (w *Worker) mergeCompact(c *forward.Compact, idx []int32, hashes []uint64) {
	for k, i := range idx {
		r := w.lookup(hashes[k], c.Key(int(i)))
		if r == nil {
			continue
		}
		switch r.se.Type {
		case samplers.CounterMetric:
			r.value += c.Counter(int(i))
		case samplers.HistogramMetric, samplers.TimerMetric:
			if w.importDigest == nil {
				w.importDigest = tdigest.New()
			}
			cents, lo, hi := c.Digest(int(i))
			if r.histo.Digest().MergeCentroids(cents, lo, hi, w.importDigest) != nil {
				// The decoder checked them: not seen.
				w.cur.badKeys++
				continue
			}
		case samplers.SetMetric:
			if r.set.Merge(c.Set(int(i))) != nil {
				w.cur.badKeys++
				continue
			}
		}
		w.cur.imported++
	}
}

// lookup is find, returning the record itself, or nil.
func (w *Worker) lookup(hash uint64, key []byte) *record {
	if i := w.find(hash, key); i >= 0 {
		return &w.cur.recs[i]
	}
	return nil
}

// find returns the index of key's series' record in the current interval,
// creating the series and its record as needed. string(key) in a
// comparison or map index does not allocate; only a new series copies the
// key. The first sample of a series in an interval takes a place under
// max_series_per_interval: without one, find counts the drop and returns
// -1, having allocated nothing (once the name is counted).
func (w *Worker) find(hash uint64, key []byte) int32 {
	head := w.known[hash]
	for se := head; se != nil; se = se.next {
		if se.key == string(key) {
			if se.epoch == w.epoch {
				return se.rec
			}
			if !w.limit.take() {
				w.dropNew(key)
				return -1
			}
			return w.start(se)
		}
	}
	if !w.limit.take() {
		w.dropNew(key)
		return -1
	}
	ks := string(key)
	k, err := samplers.DecodeKey(ks)
	if err != nil {
		w.limit.give(1)
		w.cur.badKeys++
		return -1
	}
	se := &series{key: ks, next: head, meta: k.Series, Type: k.Type, Scope: k.Scope}
	w.known[hash] = se
	w.nknown++
	// A new series costs microseconds (its key decoded, its strings,
	// digest or sketch allocated, and the GC assists that allocation
	// pays for), so that a batch of them, as at start-up, would run for
	// milliseconds between the worker's ticks in run.
	w.y.Tick()
	return w.start(se)
}

// start appends the record of se's first sample in the current interval
// and returns its index.
func (w *Worker) start(se *series) int32 {
	se.epoch = w.epoch
	se.rec = int32(len(w.cur.recs))
	w.cur.perType[se.Type&7]++
	r := record{se: se}
	switch se.Type {
	case samplers.HistogramMetric, samplers.TimerMetric:
		if n := len(w.free); n > 0 {
			r.histo = w.free[n-1]
			w.free[n-1] = nil
			w.free = w.free[:n-1]
			r.histo.Reset()
		} else {
			r.histo = samplers.NewHisto()
		}
	case samplers.SetMetric:
		if n := len(w.freeSets); n > 0 {
			r.set = w.freeSets[n-1]
			w.freeSets[n-1] = nil
			w.freeSets = w.freeSets[:n-1]
		} else {
			r.set = samplers.NewSet()
		}
	}
	w.cur.recs = append(w.cur.recs, r)
	return se.rec
}

// dropNew counts a sample of a new series refused by the cap, under its
// metric name.
func (w *Worker) dropNew(key []byte) {
	name, ok := samplers.KeyName(key)
	if !ok {
		w.cur.badKeys++
		return
	}
	w.cur.seriesDropped++
	if n := w.cur.dropped[string(name)]; n != nil {
		*n++
		return
	}
	if w.cur.dropped == nil {
		w.cur.dropped = make(map[string]*uint64)
	}
	if len(w.cur.dropped) < maxDropNames {
		n := uint64(1)
		w.cur.dropped[string(name)] = &n
	}
}

// workerPool is the fixed set of workers and the one rule that routes a
// series key to its worker, for ingested lines and imported series alike.
type workerPool struct {
	workers []*Worker
	batches *sync.Pool
	seed    maphash.Seed
	// card holds the cap on series the workers share and the report
	// /debug/cardinality serves.
	card *cardinality
	// mu guards closed. Flush requests and imports hand over under the
	// read lock, so none reaches a queue that stop has closed. Readers
	// hand over without it: they are stopped before the pool is.
	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup
}

// newWorkerPool builds n workers that hold at most maxSeries series
// between them (0: no cap).
func newWorkerPool(n, maxSeries int) *workerPool {
	p := &workerPool{batches: newBatchPool(), seed: maphash.MakeSeed(), card: newCardinality(maxSeries)}
	for range n {
		p.workers = append(p.workers, newWorker(p.batches, p.card.limit))
	}
	return p
}

// route hashes a series key and picks its worker.
func (p *workerPool) route(key []byte) (hash uint64, worker int) {
	h := maphash.Bytes(p.seed, key)
	return h, int((h >> 32) * uint64(len(p.workers)) >> 32)
}

// start runs every worker on a goroutine of its own; guard is deferred at
// the top of each.
func (p *workerPool) start(guard func()) {
	for _, w := range p.workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer guard()
			w.run()
		}()
	}
}

// collect takes the current interval of every worker, after what is queued
// before the request. It reports false once the pool is stopped.
func (p *workerPool) collect(each func(i int, took time.Duration)) ([]interval, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, false
	}
	out := make([]interval, len(p.workers))
	for i, w := range p.workers {
		start := time.Now()
		out[i] = w.flush()
		each(i, time.Since(start))
	}
	return out, true
}

// recycle hands each worker back the records of its interval in
// intervals, which a flush and its sinks are done with (see
// Worker.recycle).
func (p *workerPool) recycle(recs [][]record) {
	for i, r := range recs {
		if r != nil && i < len(p.workers) {
			p.workers[i].recycle(r)
		}
	}
}

// stop lets the workers process what is queued, stops them and returns
// their last intervals. Readers must have stopped.
func (p *workerPool) stop() []interval {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for _, w := range p.workers {
		close(w.in)
	}
	p.mu.Unlock()
	p.wg.Wait()
	out := make([]interval, len(p.workers))
	for i, w := range p.workers {
		out[i] = w.swap()
	}
	return out
}

// Merge hands imported series to the workers that own their keys, one
// batch per worker. It is the importer's forward.Merger. The keys share
// one buffer and the items one array, grouped by worker: an import of
// many series costs a few allocations, not a few per series. The workers
// keep them (and metrics) only until they have merged them.
func (p *workerPool) Merge(metrics []samplers.Forwarded) error {
	size := 0
	for i := range metrics {
		f := &metrics[i]
		// Type and scope, three uvarint lengths (the name's at most
		// 10 bytes), the name, the tags and their commas.
		size += 2 + 10 + 2 + len(f.Name) + len(f.Tags)
		for _, t := range f.Tags {
			size += len(t)
		}
	}
	keys := make([]byte, 0, size)
	ends := make([]int, len(metrics)+1) // key i is keys[ends[i]:ends[i+1]]
	for i := range metrics {
		keys = samplers.AppendForwardedKey(keys, &metrics[i])
		ends[i+1] = len(keys)
	}
	key := func(i int) []byte { return keys[ends[i]:ends[i+1]:ends[i+1]] }
	order, hashes, counts := p.group(len(metrics), key)
	items := make([]importItem, len(metrics))
	for k, i := range order {
		items[k] = importItem{hash: hashes[k], key: key(int(i)), f: &metrics[i]}
	}
	return p.hand(counts, func(lo, hi int) *batch { return &batch{imports: items[lo:hi:hi]} })
}

// MergeCompact is Merge for series in their compact form: the decoder
// built their keys, so it only routes them. Each worker gets the indexes
// of its series and their hashes, in two arrays shared by the workers,
// and releases c once it merged them.
func (p *workerPool) MergeCompact(c *forward.Compact) error {
	order, hashes, counts := p.group(c.Len(), c.Key)
	parts := 0
	for w := range p.workers {
		if counts[w+1] > counts[w] {
			parts++
		}
	}
	// Held before any worker may release it.
	c.Hold(parts)
	err := p.hand(counts, func(lo, hi int) *batch {
		return &batch{compact: c, idx: order[lo:hi:hi], hashes: hashes[lo:hi:hi]}
	})
	if err != nil {
		c.Hold(-parts)
	}
	return err
}

// group routes n keys to the workers: order lists the indexes of the
// keys grouped by worker, hashes their hashes in the same order, and
// worker w's are order[counts[w]:counts[w+1]]. An import of many series
// costs a few arrays, not an allocation per series.
func (p *workerPool) group(n int, key func(i int) []byte) (order []int32, hashes []uint64, counts []int) {
	wis := make([]int32, n)
	hs := make([]uint64, n)
	counts = make([]int, len(p.workers)+1)
	for i := range n {
		h, wi := p.route(key(i))
		wis[i], hs[i] = int32(wi), h
		counts[wi+1]++
	}
	// counts[w] becomes where worker w's keys start.
	for w := 1; w < len(counts); w++ {
		counts[w] += counts[w-1]
	}
	order = make([]int32, n)
	hashes = make([]uint64, n)
	next := slices.Clone(counts)
	for i := range n {
		wi := wis[i]
		order[next[wi]], hashes[next[wi]] = int32(i), hs[i]
		next[wi]++
	}
	return order, hashes, counts
}

// hand gives each worker w the batch part makes of its share,
// counts[w]:counts[w+1] (when not empty), or returns forward.ErrClosed,
// giving none, once the pool is closed.
func (p *workerPool) hand(counts []int, part func(lo, hi int) *batch) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return forward.ErrClosed
	}
	for w := range p.workers {
		if lo, hi := counts[w], counts[w+1]; hi > lo {
			p.workers[w].in <- part(lo, hi)
		}
	}
	return nil
}

var _ forward.CompactMerger = (*workerPool)(nil)

// errPoolStopped is what Flush reports after Shutdown stopped the workers.
var errPoolStopped = errors.New("the server is shut down")
