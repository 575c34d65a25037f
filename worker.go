package veneur

import (
	"errors"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/samplers"
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

// series is one metric key's state in a worker for the current interval.
type series struct {
	key  string
	next *series // chains keys whose 64-bit hashes collide
	// meta is allocated apart from the series so that the flushed values
	// pointing to it do not keep the samplers alive.
	meta  *samplers.Series
	Type  samplers.MetricType
	Scope samplers.MetricScope
	value float64 // counter sum or last gauge value
	histo *samplers.Histo
	set   *samplers.Set
}

// interval is what a worker hands over at flush: every series it saw since
// the previous flush, and how many samples it processed.
type interval struct {
	series    map[uint64]*series
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
// goroutine touches its map, so the per-line path takes no lock; the flusher
// asks for the map through a channel and the worker swaps in a new one.
type Worker struct {
	in      chan *batch
	pool    *sync.Pool
	limit   *seriesCap // shared by every worker; nil: no cap
	cur     interval
	lastLen int
}

func newWorker(pool *sync.Pool, limit *seriesCap) *Worker {
	return &Worker{
		in:    make(chan *batch, workerQueueLen),
		pool:  pool,
		limit: limit,
		cur:   interval{series: make(map[uint64]*series)},
	}
}

// run processes batches until w.in is closed and drained.
func (w *Worker) run() {
	for b := range w.in {
		if b.flush != nil {
			b.flush <- w.swap()
			continue
		}
		if b.imports != nil {
			w.merge(b.imports)
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

// swap hands over the current interval and starts a new one, sized like the
// last so a steady load does not regrow the map every interval. The series
// handed over give their places under the cap back.
func (w *Worker) swap() interval {
	out := w.cur
	w.limit.give(out.nseries())
	w.lastLen = len(out.series)
	w.cur = interval{series: make(map[uint64]*series, w.lastLen)}
	return out
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

func (w *Worker) process(b *batch) {
	for i := range b.samples {
		s := &b.samples[i]
		key := b.buf[s.keyOff : s.keyOff+s.keyLen]
		se := w.lookup(s.hash, key)
		if se == nil {
			continue
		}
		switch se.Type {
		case samplers.CounterMetric:
			se.value += s.value / s.rate
		case samplers.GaugeMetric:
			se.value = s.value
		case samplers.HistogramMetric, samplers.TimerMetric:
			if se.histo.Sample(s.value, s.rate) != nil {
				w.cur.badWeights++
			}
		case samplers.SetMetric:
			end := s.keyOff + s.keyLen
			se.set.Sample(b.buf[end : end+s.memLen])
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
		se := w.lookup(it.hash, it.key)
		if se == nil {
			continue
		}
		switch se.Type {
		case samplers.CounterMetric:
			se.value += it.f.Counter
		case samplers.HistogramMetric, samplers.TimerMetric:
			se.histo.Merge(it.f.Digest)
		case samplers.SetMetric:
			if se.set.Merge(it.f.Set) != nil {
				w.cur.badKeys++
				continue
			}
		}
		w.cur.imported++
	}
}

// lookup finds or creates the series of key. string(key) in a comparison
// or map index does not allocate; only a new series copies the key. A new
// series takes a place under max_series_per_interval first: without one,
// lookup counts the drop and returns nil, having allocated nothing (once
// the name is counted).
func (w *Worker) lookup(hash uint64, key []byte) *series {
	head := w.cur.series[hash]
	for se := head; se != nil; se = se.next {
		if se.key == string(key) {
			return se
		}
	}
	if !w.limit.take() {
		w.dropNew(key)
		return nil
	}
	ks := string(key)
	k, err := samplers.DecodeKey(ks)
	if err != nil {
		w.limit.give(1)
		w.cur.badKeys++
		return nil
	}
	meta := new(samplers.Series)
	*meta = k.Series
	se := &series{key: ks, next: head, meta: meta, Type: k.Type, Scope: k.Scope}
	w.cur.perType[k.Type&7]++
	switch k.Type {
	case samplers.HistogramMetric, samplers.TimerMetric:
		se.histo = samplers.NewHisto()
	case samplers.SetMetric:
		se.set = samplers.NewSet()
	}
	w.cur.series[hash] = se
	return se
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
	ends := make([]int, len(metrics))
	wis := make([]int32, len(metrics))
	hashes := make([]uint64, len(metrics))
	counts := make([]int, len(p.workers)+1)
	for i := range metrics {
		start := len(keys)
		keys = samplers.AppendForwardedKey(keys, &metrics[i])
		h, wi := p.route(keys[start:])
		ends[i], wis[i], hashes[i] = len(keys), int32(wi), h
		counts[wi+1]++
	}
	// counts[w] becomes where worker w's items start.
	for w := 1; w < len(counts); w++ {
		counts[w] += counts[w-1]
	}
	items := make([]importItem, len(metrics))
	next := slices.Clone(counts)
	start := 0
	for i := range metrics {
		wi := wis[i]
		items[next[wi]] = importItem{hash: hashes[i], key: keys[start:ends[i]:ends[i]], f: &metrics[i]}
		next[wi]++
		start = ends[i]
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return forward.ErrClosed
	}
	for wi := range p.workers {
		if part := items[counts[wi]:counts[wi+1]]; len(part) > 0 {
			p.workers[wi].in <- &batch{imports: part}
		}
	}
	return nil
}

var _ forward.Merger = (*workerPool)(nil)

// errPoolStopped is what Flush reports after Shutdown stopped the workers.
var errPoolStopped = errors.New("the server is shut down")
