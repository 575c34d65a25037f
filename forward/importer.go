package forward

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"

	"github.com/veneur/veneur/internal/counter"
	"github.com/veneur/veneur/samplers"
)

// MaxImportBody is the default of ImporterConfig.MaxBodyBytes: the cap on
// the decompressed body of one /import request.
const MaxImportBody = 256 << 20

// maxAnswerErrors is how many metric errors an answer describes.
const maxAnswerErrors = 10

// importPartBytes is the size of the parts in which /import merges a
// body's metrics: once those decoded since the last part took 8 MiB of
// JSON, they are merged, so that a request holds at most that (and its
// largest element) however large its body. Decoded, 8 MiB of JSON takes
// 3 to 24 MiB (see ServeHTTP). A body that fits one part is merged whole
// or not at all; see ServeHTTP for a larger one.
const importPartBytes = 8 << 20

// The wait for a place among the imports in progress: a request that
// finds every place taken waits for one, up to importMaxWait, unless
// importWaitersPerPlace × MaxConcurrency requests wait already. A
// waiting request holds its connection and headers, not its body, which
// it has not read.
const (
	importWaitersPerPlace = 16
	importMaxWait         = time.Second
)

// Importer is the global side of forwarding: it takes what local instances
// send, decodes it, and hands the series that decode to its Merger. Its
// HTTP transport is ServeHTTP (POST /import). It is safe for concurrent
// use.
type Importer struct {
	merger Merger
	// maxBody is ImporterConfig.MaxBodyBytes; maxElement,
	// maxImportElement; spaceSlack, whitespaceSlack; partBytes,
	// importPartBytes. Tests lower the last three.
	maxBody, maxElement, spaceSlack, partBytes int64
	// slots holds a token per request being read and merged; its capacity
	// is ImporterConfig.MaxConcurrency. waiting counts the requests that
	// wait for a token: at most maxWaiting, each for maxWait at most
	// (ImporterConfig.MaxWaiting and MaxWait; zeros when none waits).
	slots      chan struct{}
	waiting    atomic.Int64
	maxWaiting int64
	maxWait    time.Duration
	// requireClientCert is ImporterConfig.RequireClientCert.
	requireClientCert bool
	// batches remembers the batch ids (BatchHeader) merged recently.
	batches *batchMemory
	// now is the clock of batches: time.Now, set by tests.
	now func() time.Time

	requestErrs *counter.ByCause // indexed by cause*, then Other
	metricErrs  *counter.ByCause // by the error of DecodeJSON
	requests    atomic.Uint64    // requests merged
	duplicates  atomic.Uint64    // requests answered from batches
	waited      atomic.Uint64    // requests that waited for a place
	// partials counts the requests refused or cut off after some of their
	// parts were merged; resumed, the requests that merged the rest of a
	// batch merged in part.
	partials, resumed atomic.Uint64
	// requestNanos and mergeNanos are the time of those requests reading
	// and decoding the request, and merging its metrics.
	requestNanos, mergeNanos atomic.Int64
}

// Causes of import.request_error_total, in the order of
// Importer.requestErrs.
const (
	causeMethod = iota
	causeEncoding
	causeBody
	causeJSON
	causeShutdown
	causeBatchID
	causeInProgress
	causeTooLarge
	causeBusy
	causeClientCert
	causeWhitespace
)

// ImporterConfig sets up an Importer: its memory of the batch ids
// (BatchHeader) it merged, so that a request whose id is remembered is
// answered without being merged again, and its limits. Zero values mean
// the defaults.
type ImporterConfig struct {
	// Remember is how long an id is remembered after its batch merged: a
	// few flush intervals, so that every retry of a batch comes within it.
	// Zero or less means DefaultRemember.
	Remember time.Duration
	// MaxIDs bounds the ids remembered; past it the oldest are forgotten
	// first. Zero or less means DefaultMaxBatchIDs.
	MaxIDs int
	// MaxBodyBytes (import_max_body_bytes) caps the decompressed body of
	// one request; a larger one is refused with 413. Zero or less means
	// MaxImportBody.
	MaxBodyBytes int64
	// MaxConcurrency (import_max_concurrency) bounds the requests being
	// read, decoded and merged at once; one more waits for a place (see
	// MaxWaiting and MaxWait), else it is refused with 503 and
	// Retry-After: 1. Zero or less means twice runtime.NumCPU().
	MaxConcurrency int
	// MaxWaiting bounds the requests that wait for a place at once; one
	// more is refused at once. Zero means importWaitersPerPlace (16)
	// times MaxConcurrency; less than zero, none waits.
	MaxWaiting int
	// MaxWait is how long a request waits for a place at most. Zero
	// means importMaxWait (1 s); less than zero, none waits.
	MaxWait time.Duration
	// RequireClientCert refuses with 401 a request that did not come over
	// TLS with a client certificate the server verified. It is for a
	// server that asks for a certificate without requiring one on every
	// route (its health check stays open).
	RequireClientCert bool
}

// NewImporter returns an Importer that merges into m. It starts nothing.
func NewImporter(m Merger, cfg ImporterConfig) *Importer {
	if cfg.Remember <= 0 {
		cfg.Remember = DefaultRemember
	}
	if cfg.MaxIDs <= 0 {
		cfg.MaxIDs = DefaultMaxBatchIDs
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = MaxImportBody
	}
	if cfg.MaxConcurrency <= 0 {
		cfg.MaxConcurrency = 2 * runtime.NumCPU()
	}
	if cfg.MaxWaiting == 0 {
		cfg.MaxWaiting = importWaitersPerPlace * cfg.MaxConcurrency
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = importMaxWait
	}
	if cfg.MaxWaiting < 0 || cfg.MaxWait < 0 {
		cfg.MaxWaiting, cfg.MaxWait = 0, 0
	}
	return &Importer{
		merger:            m,
		maxBody:           cfg.MaxBodyBytes,
		maxElement:        maxImportElement,
		spaceSlack:        whitespaceSlack,
		partBytes:         importPartBytes,
		slots:             make(chan struct{}, cfg.MaxConcurrency),
		maxWaiting:        int64(cfg.MaxWaiting),
		maxWait:           cfg.MaxWait,
		requireClientCert: cfg.RequireClientCert,
		batches:           newBatchMemory(cfg.Remember, cfg.MaxIDs),
		now:               time.Now,
		requestErrs: counter.NewErrors(
			counter.Cause{Name: "method"},
			counter.Cause{Name: "encoding"},
			counter.Cause{Name: "body"},
			counter.Cause{Name: "json"},
			counter.Cause{Name: "shutdown", Err: ErrClosed},
			counter.Cause{Name: "batch_id"},
			counter.Cause{Name: "in_progress"},
			counter.Cause{Name: "too_large"},
			counter.Cause{Name: "busy"},
			counter.Cause{Name: "client_certificate"},
			counter.Cause{Name: "whitespace"},
		),
		metricErrs: counter.NewErrors(
			counter.Cause{Name: "name", Err: ErrName},
			counter.Cause{Name: "type", Err: ErrType},
			counter.Cause{Name: "tags", Err: ErrTags},
			counter.Cause{Name: "value", Err: ErrValue},
		),
	}
}

// importResponse is the answer to a well-formed import request (as JSON
// over HTTP).
type importResponse struct {
	Accepted int      `json:"accepted"`
	Rejected int      `json:"rejected"`
	Errors   []string `json:"errors,omitempty"` // the first few
	// Duplicate is set when the batch id was merged already: Accepted and
	// Rejected are then the counts of that merge, and Errors is empty.
	Duplicate bool `json:"duplicate,omitempty"`
	// Resumed is, when an earlier request with this batch id merged the
	// first parts of the body and was cut off, how many of its elements
	// those parts took; they were skipped. Accepted and Rejected count
	// them too, Errors does not.
	Resumed int `json:"resumed,omitempty"`
}

// importBatch gathers the metrics of one request as they are decoded: the
// ones that decode, and a count and the first few errors (by index and
// name) of the ones that do not, and merges them in parts (see
// importPartBytes). The errors are counted apart, and added to the
// Importer's import.metric_error_total as their part is merged, so that
// a body refused counts none of those it did not merge.
type importBatch struct {
	im   *Importer
	fwd  []samplers.Forwarded
	held int64 // bytes of JSON of the elements since the last part
	resp importResponse
	errs counter.Local
	// skip is how many elements to skip: those that an earlier request
	// with this batch id merged. seen is how many were read.
	skip, seen int
	// merged is how far the parts merged got (at is not set): the
	// counts, and the elements they took.
	merged mergedBatch
	// parts is how many parts, with metrics, this request merged.
	parts int
	// mergeTime is the time spent in Merge.
	mergeTime time.Duration
}

// newBatch is a batch that resumes prev (the zero mergedBatch for none).
func (im *Importer) newBatch(prev mergedBatch) *importBatch {
	prev.at = time.Time{}
	return &importBatch{
		im:     im,
		resp:   importResponse{Accepted: prev.accepted, Rejected: prev.rejected, Resumed: prev.elements},
		errs:   im.metricErrs.NewLocal(),
		skip:   prev.elements,
		merged: prev,
	}
}

// element takes element i of the body, of size bytes, whatever its wire
// format: a metric called name, f when err is nil, else a rejection. An
// element that an earlier request merged is skipped. Once the elements
// since the last part take partBytes, they are merged as a part; the
// error is then Merge's, as a *mergeError.
func (b *importBatch) element(i int, size int64, name string, f samplers.Forwarded, err error) error {
	b.seen = i + 1
	if i < b.skip {
		return nil
	}
	if err != nil {
		b.resp.Rejected++
		b.errs.AddErr(err)
		if len(b.resp.Errors) < maxAnswerErrors {
			b.resp.Errors = append(b.resp.Errors, fmt.Sprintf("metric %d (%q): %v", i, name, err))
		}
	} else {
		b.fwd = append(b.fwd, f)
		b.resp.Accepted++
	}
	b.held += size
	if b.held >= b.im.partBytes {
		return b.mergePart(false)
	}
	return nil
}

// skipping reports whether element i is one that an earlier request
// merged: it need not be decoded.
func (b *importBatch) skipping(i int) bool { return i < b.skip }

// mergePart hands the metrics decoded since the last part to the Merger,
// and counts their errors. A part without metrics is not handed over,
// but for the last part of a request that merged no other: Merge is
// called at least once per request that is read whole. A failure of
// Merge is returned as a *mergeError.
func (b *importBatch) mergePart(last bool) error {
	if len(b.fwd) > 0 || (last && b.parts == 0) {
		start := time.Now()
		if err := b.im.merger.Merge(b.fwd); err != nil {
			return &mergeError{err}
		}
		b.mergeTime += time.Since(start)
		if len(b.fwd) > 0 {
			b.parts++
		}
	}
	b.errs.Publish()
	// A new array for the next part: the Merger may keep this one.
	b.fwd, b.held = nil, 0
	b.merged = mergedBatch{accepted: b.resp.Accepted, rejected: b.resp.Rejected, elements: b.seen}
	return nil
}

// mergeError is a failure of Merge: 503 for ErrClosed (cause shutdown),
// else 500 (cause other).
type mergeError struct{ err error }

func (e *mergeError) Error() string { return e.err.Error() }
func (e *mergeError) Unwrap() error { return e.err }

// takePlace takes a place among the imports in progress, for a request
// of ctx: at once when one is free, else after waiting for one, when
// fewer than maxWaiting wait already, for maxWait at most (less when ctx
// ends). It reports whether it waited, and whether it took a place, which
// the caller then gives back with leavePlace.
func (im *Importer) takePlace(ctx context.Context) (waited, ok bool) {
	select {
	case im.slots <- struct{}{}:
		return false, true
	default:
	}
	if im.maxWaiting <= 0 {
		return false, false
	}
	if im.waiting.Add(1) > im.maxWaiting {
		im.waiting.Add(-1)
		return false, false
	}
	defer im.waiting.Add(-1)
	t := time.NewTimer(im.maxWait)
	defer t.Stop()
	select {
	case im.slots <- struct{}{}:
		return true, true
	case <-t.C:
	case <-ctx.Done():
	}
	return true, false
}

// leavePlace gives back the place takePlace took.
func (im *Importer) leavePlace() { <-im.slots }

// busyMessage is the answer to a request refused for lack of a place.
func (im *Importer) busyMessage() string {
	return fmt.Sprintf("busy: %d imports are in progress, the most this instance serves at once; retry later", cap(im.slots))
}

// Report sends the import self-metrics gathered since the last Report:
// import.request_error_total (cause: method, encoding, body, json,
// shutdown, batch_id, in_progress, too_large, busy, client_certificate,
// whitespace, other), import.metric_error_total (cause: name, type, tags,
// value, other), import.duplicate_total (requests answered without
// merging, their batch id merged already), import.waited_total (requests
// that waited for a place, whether they got one or were refused as
// busy), import.partial_total (requests refused or cut off after a part
// of their metrics was merged) and import.resumed_total (requests that
// merged the rest of a batch merged in part), import.requests_total and
// the mean import.response_duration_ns of those requests (part: request,
// the reading and decoding of the body; part: merge, the time in Merge).
func (im *Importer) Report(stats statsd.ClientInterface) {
	im.requestErrs.Report(stats, "import.request_error_total")
	im.metricErrs.Report(stats, "import.metric_error_total")
	if n := im.duplicates.Swap(0); n > 0 {
		stats.Count("import.duplicate_total", int64(n), nil, 1)
	}
	if n := im.waited.Swap(0); n > 0 {
		stats.Count("import.waited_total", int64(n), nil, 1)
	}
	if n := im.partials.Swap(0); n > 0 {
		stats.Count("import.partial_total", int64(n), nil, 1)
	}
	if n := im.resumed.Swap(0); n > 0 {
		stats.Count("import.resumed_total", int64(n), nil, 1)
	}
	if n := im.requests.Swap(0); n > 0 {
		stats.Count("import.requests_total", int64(n), nil, 1)
		stats.TimeInMilliseconds("import.response_duration_ns", float64(im.requestNanos.Swap(0))/float64(n), []string{"part:request"}, 1)
		stats.TimeInMilliseconds("import.response_duration_ns", float64(im.mergeNanos.Swap(0))/float64(n), []string{"part:merge"}, 1)
	}
}
