package forward

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"

	"github.com/veneur/veneur/internal/counter"
	"github.com/veneur/veneur/samplers"
)

// MaxImportBody bounds the decompressed body of one /import request.
const MaxImportBody = 256 << 20

// maxAnswerErrors is how many metric errors an answer describes.
const maxAnswerErrors = 10

// Importer is the global side of forwarding: it takes what local instances
// send, decodes it, and hands the series that decode to its Merger. Its
// HTTP transport is ServeHTTP (POST /import). It is safe for concurrent
// use.
type Importer struct {
	merger Merger
	// maxBody is MaxImportBody, lowered by tests.
	maxBody int64
	// batches remembers the batch ids (BatchHeader) merged recently.
	batches *batchMemory
	// now is the clock of batches: time.Now, set by tests.
	now func() time.Time

	requestErrs *counter.ByCause // indexed by cause*, then Other
	metricErrs  *counter.ByCause // by the error of DecodeJSON
	requests    atomic.Uint64    // requests merged
	duplicates  atomic.Uint64    // requests answered from batches
	// requestNanos and mergeNanos are the time of those requests reading
	// the request, and decoding and merging its metrics.
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
)

// ImporterConfig sets up an Importer's memory of the batch ids
// (BatchHeader) it merged: a request whose id is remembered is answered
// without being merged again.
type ImporterConfig struct {
	// Remember is how long an id is remembered after its batch merged: a
	// few flush intervals, so that every retry of a batch comes within it.
	// Zero or less means DefaultRemember.
	Remember time.Duration
	// MaxIDs bounds the ids remembered; past it the oldest are forgotten
	// first. Zero or less means DefaultMaxBatchIDs.
	MaxIDs int
}

// NewImporter returns an Importer that merges into m. It starts nothing.
func NewImporter(m Merger, cfg ImporterConfig) *Importer {
	if cfg.Remember <= 0 {
		cfg.Remember = DefaultRemember
	}
	if cfg.MaxIDs <= 0 {
		cfg.MaxIDs = DefaultMaxBatchIDs
	}
	return &Importer{
		merger:  m,
		maxBody: MaxImportBody,
		batches: newBatchMemory(cfg.Remember, cfg.MaxIDs),
		now:     time.Now,
		requestErrs: counter.NewErrors(
			counter.Cause{Name: "method"},
			counter.Cause{Name: "encoding"},
			counter.Cause{Name: "body"},
			counter.Cause{Name: "json"},
			counter.Cause{Name: "shutdown", Err: ErrClosed},
			counter.Cause{Name: "batch_id"},
			counter.Cause{Name: "in_progress"},
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

// decodeAll decodes metrics, whatever their wire format, with decode. The
// ones that do not decode are skipped, counted by cause and described in
// the answer (the first maxAnswerErrors, by index and name).
func decodeAll[M any](im *Importer, metrics []M, decode func(*M) (samplers.Forwarded, error), name func(*M) string) ([]samplers.Forwarded, importResponse) {
	var resp importResponse
	fwd := make([]samplers.Forwarded, 0, len(metrics))
	for i := range metrics {
		f, err := decode(&metrics[i])
		if err != nil {
			resp.Rejected++
			im.metricErrs.AddErr(err)
			if len(resp.Errors) < maxAnswerErrors {
				resp.Errors = append(resp.Errors, fmt.Sprintf("metric %d (%q): %v", i, name(&metrics[i]), err))
			}
			continue
		}
		fwd = append(fwd, f)
		resp.Accepted++
	}
	return fwd, resp
}

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
// shutdown, batch_id, in_progress, other), import.metric_error_total
// (cause: name, type, tags, value, other), import.duplicate_total (requests
// answered without merging, their batch id merged already),
// import.requests_total and the mean import.response_duration_ns of those
// requests (part: request, merge).
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
