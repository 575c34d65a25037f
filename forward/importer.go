package forward

import (
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

// Importer is the global side of forwarding: it takes what local instances
// send, decodes it, and hands the series that decode to its Merger. Its
// HTTP transport is ServeHTTP (POST /import). It is safe for concurrent
// use.
type Importer struct {
	merger Merger
	// maxBody is ImporterConfig.MaxBodyBytes; maxElement is
	// maxImportElement, lowered by tests.
	maxBody, maxElement int64
	// slots holds a token per request being read and merged; its capacity
	// is ImporterConfig.MaxConcurrency.
	slots chan struct{}
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
	// read, decoded and merged at once; one more is refused at once with
	// 503 and Retry-After: 1. Zero or less means twice runtime.NumCPU().
	MaxConcurrency int
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
	return &Importer{
		merger:            m,
		maxBody:           cfg.MaxBodyBytes,
		maxElement:        maxImportElement,
		slots:             make(chan struct{}, cfg.MaxConcurrency),
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
}

// importBatch gathers the metrics of one request as they are decoded: the
// ones that decode, and a count and the first few errors (by index and
// name) of the ones that do not. Those errors are counted apart, and added
// to the Importer's import.metric_error_total by publish, so that a body
// refused once some of its metrics were decoded counts none of them, as
// nothing of it is merged.
type importBatch struct {
	fwd  []samplers.Forwarded
	resp importResponse
	errs counter.Local
}

func (im *Importer) newBatch() *importBatch {
	return &importBatch{errs: im.metricErrs.NewLocal()}
}

// add takes the result of decoding metric i, called name, whatever its wire
// format: f when err is nil, else a rejection.
func (b *importBatch) add(i int, name string, f samplers.Forwarded, err error) {
	if err != nil {
		b.resp.Rejected++
		b.errs.AddErr(err)
		if len(b.resp.Errors) < maxAnswerErrors {
			b.resp.Errors = append(b.resp.Errors, fmt.Sprintf("metric %d (%q): %v", i, name, err))
		}
		return
	}
	b.fwd = append(b.fwd, f)
	b.resp.Accepted++
}

// publish counts the batch's metric errors in import.metric_error_total.
func (b *importBatch) publish() { b.errs.Publish() }

// merge hands fwd to the Merger. A refusal is counted (shutdown for
// ErrClosed, else other) and returned; a success counts the request and
// its times, from start to read (the request was read) and from read to
// now.
func (im *Importer) merge(fwd []samplers.Forwarded, start, read time.Time) error {
	if err := im.merger.Merge(fwd); err != nil {
		im.requestErrs.AddErr(err)
		return err
	}
	im.requestNanos.Add(int64(read.Sub(start)))
	im.mergeNanos.Add(int64(time.Since(read)))
	im.requests.Add(1)
	return nil
}

// Report sends the import self-metrics gathered since the last Report:
// import.request_error_total (cause: method, encoding, body, json,
// shutdown, batch_id, in_progress, too_large, busy, client_certificate,
// other), import.metric_error_total (cause: name, type, tags, value,
// other), import.duplicate_total (requests answered without merging, their
// batch id merged already), import.requests_total and the mean
// import.response_duration_ns of those requests (part: request, the
// reading and decoding of the body; part: merge).
func (im *Importer) Report(stats statsd.ClientInterface) {
	im.requestErrs.Report(stats, "import.request_error_total")
	im.metricErrs.Report(stats, "import.metric_error_total")
	if n := im.duplicates.Swap(0); n > 0 {
		stats.Count("import.duplicate_total", int64(n), nil, 1)
	}
	if n := im.requests.Swap(0); n > 0 {
		stats.Count("import.requests_total", int64(n), nil, 1)
		stats.TimeInMilliseconds("import.response_duration_ns", float64(im.requestNanos.Swap(0))/float64(n), []string{"part:request"}, 1)
		stats.TimeInMilliseconds("import.response_duration_ns", float64(im.mergeNanos.Swap(0))/float64(n), []string{"part:merge"}, 1)
	}
}
