package forward

import (
	"strings"
	"sync"
	"time"
)

// BatchHeader is the HTTP header that names one forward request: a random
// id (128-bit hex from Client), the same on every retry of that request.
// The Importer remembers the ids it merged, so that a retry whose first
// answer was lost is answered again, not merged twice.
const BatchHeader = "X-Veneur-Batch-Id"

// maxBatchIDLen is the longest batch id accepted, in bytes.
const maxBatchIDLen = 64

// Defaults of ImporterConfig.
const (
	// DefaultRemember is three of the default 10s flush intervals: a
	// retry comes well within it.
	DefaultRemember = 30 * time.Second
	// DefaultMaxBatchIDs bounds the ids remembered; at about 150 bytes an
	// id, the memory stays under some 15 MiB however many ids come.
	DefaultMaxBatchIDs = 100_000
)

// maxPartialBatches bounds the batches remembered as merged in part (see
// ServeHTTP): only a large body cut off midway leaves one, and its
// sender retries within seconds, so few are ever kept.
const maxPartialBatches = 1024

// wellFormedBatchID reports whether id is 1 to maxBatchIDLen characters of
// [0-9a-zA-Z_-]: what an id must be to be remembered, so that an id is
// small and safe to quote in an answer.
func wellFormedBatchID(id string) bool {
	if len(id) == 0 || len(id) > maxBatchIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// batchState is what a batchMemory knows of an id.
type batchState int

const (
	batchNew       batchState = iota // unknown: the caller now merges it
	batchMerging                     // being merged by another request
	batchDuplicate                   // merged within the window
	// batchResume: merged in part by an earlier request, which was cut
	// off; the caller now merges the rest.
	batchResume
)

// mergedBatch is what is kept of a batch merged whole, or in part: when
// it was merged, and its answer (so far).
type mergedBatch struct {
	at                 time.Time
	accepted, rejected int
	// elements is, for a batch merged in part, how many elements of its
	// body (from the first) the parts merged took, accepted or rejected:
	// the request that resumes it skips those.
	elements int
}

// batchMemory remembers the ids of the batches merged in the last remember,
// at most max of them (the oldest are forgotten first), and the ids being
// merged right now. It is safe for concurrent use. Nothing runs in the
// background: what is too old is forgotten by the next call.
//
// The ids being merged are not bounded by max: there is one per request
// in flight (or waiting for a place), so the server's limits bound them.
//
// Apart, it remembers the batches merged in part, at most
// maxPartialBatches of them, for remember from their last part: begin
// answers batchResume for them, with how far they got.
type batchMemory struct {
	remember time.Duration
	max      int

	mu      sync.Mutex
	merging map[string]struct{}
	merged  map[string]mergedBatch
	partial map[string]mergedBatch
	// order holds the ids of merged as a ring, oldest first, from
	// order[head], n of them. Since ids are added as they are merged, the
	// oldest is the first to expire, so expiring and bounding only ever
	// drop from the front. The ring grows as needed, up to max.
	order   []string
	head, n int
}

func newBatchMemory(remember time.Duration, maxIDs int) *batchMemory {
	return &batchMemory{
		remember: remember,
		max:      maxIDs,
		merging:  map[string]struct{}{},
		merged:   map[string]mergedBatch{},
		partial:  map[string]mergedBatch{},
	}
}

// begin looks id up at now. When it is new, or to resume, it is marked
// as being merged and the caller must call done, fail or partial for it.
// When it is a duplicate, what its merge answered is returned; when it is
// to resume, how far its parts got.
func (b *batchMemory) begin(id string, now time.Time) (batchState, mergedBatch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expire(now)
	if m, ok := b.merged[id]; ok {
		return batchDuplicate, m
	}
	if _, ok := b.merging[id]; ok {
		return batchMerging, mergedBatch{}
	}
	// A copy: the id may be kept for long, and should not hold on to
	// whatever the request's header was cut from.
	b.merging[strings.Clone(id)] = struct{}{}
	if m, ok := b.partial[id]; ok {
		if now.Sub(m.at) < b.remember {
			return batchResume, m
		}
		delete(b.partial, id)
	}
	return batchNew, mergedBatch{}
}

// partialDone remembers id, which begin marked, as merged in part: its parts
// took m.elements elements, the last at m.at. What is remembered past
// maxPartialBatches forgets the oldest (its retry, if one ever comes,
// merges those parts again).
func (b *batchMemory) partialDone(id string, m mergedBatch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.merging, id)
	if _, ok := b.partial[id]; !ok && len(b.partial) >= maxPartialBatches {
		oldest := ""
		for k, p := range b.partial {
			if oldest == "" || p.at.Before(b.partial[oldest].at) {
				oldest = k
			}
		}
		delete(b.partial, oldest)
	}
	b.partial[strings.Clone(id)] = m
}

// fail forgets that id, which begin marked, is being merged; nothing more
// of it was merged. A retry merges it, or what is left of it when it was
// merged in part before.
func (b *batchMemory) fail(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.merging, id)
}

// done remembers id, which begin marked, as merged at m.at, forgetting the
// oldest ids past the bound.
func (b *batchMemory) done(id string, m mergedBatch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.merging, id)
	delete(b.partial, id)
	b.expire(m.at)
	for b.n >= b.max {
		b.dropOldest()
	}
	if b.n == len(b.order) {
		b.grow()
	}
	id = strings.Clone(id)
	b.order[(b.head+b.n)%len(b.order)] = id
	b.n++
	b.merged[id] = m
}

// expire forgets the ids merged remember or longer before now.
func (b *batchMemory) expire(now time.Time) {
	for b.n > 0 && now.Sub(b.merged[b.order[b.head]].at) >= b.remember {
		b.dropOldest()
	}
}

func (b *batchMemory) dropOldest() {
	delete(b.merged, b.order[b.head])
	b.order[b.head] = "" // let the id go
	b.head = (b.head + 1) % len(b.order)
	b.n--
}

// grow makes room for one more id in the full ring, doubling it up to max.
func (b *batchMemory) grow() {
	size := min(max(2*len(b.order), 16), b.max)
	order := make([]string, size)
	for i := range b.n {
		order[i] = b.order[(b.head+i)%len(b.order)]
	}
	b.order, b.head = order, 0
}
