package veneur

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zlib"

	"github.com/veneur/veneur/samplers"
)

// maxImportBody bounds the decompressed body of one /import request.
const maxImportBody = 256 << 20

// importStats are the /import counters the flusher reports.
type importStats struct {
	requestErrs  [len(importReqCauses)]atomic.Uint64
	metricErrs   [4]atomic.Uint64 // by samplers.ImportCause: name, type, tags, value
	requestNanos atomic.Int64
	mergeNanos   atomic.Int64
	requests     atomic.Uint64
}

// Causes of veneur.import.request_error_total for whole requests.
var importReqCauses = [...]string{"method", "encoding", "body", "json", "shutdown"}

const (
	importErrMethod = iota
	importErrEncoding
	importErrBody
	importErrJSON
	importErrShutdown
)

// importMetricCauses are the causes of samplers.ImportCause, in the order
// of importStats.metricErrs.
var importMetricCauses = [4]string{"name", "type", "tags", "value"}

func importMetricCause(err error) int {
	return slices.Index(importMetricCauses[:], samplers.ImportCause(err))
}

// importResponse is the JSON answer to a well-formed /import request.
type importResponse struct {
	Accepted int      `json:"accepted"`
	Rejected int      `json:"rejected"`
	Errors   []string `json:"errors,omitempty"` // the first few
}

// handleImport takes a JSON array of samplers.JSONMetric from another
// instance (identity, deflate or gzip Content-Encoding), and merges each
// metric into the worker that owns its key. A body that is not such an
// array is refused with 4xx and nothing of it is merged; single metrics that
// do not decode are skipped and reported in the answer.
func (s *Server) handleImport(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := &s.imports
	fail := func(code, cause int, msg string) {
		st.requestErrs[cause].Add(1)
		http.Error(w, msg, code)
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(http.StatusMethodNotAllowed, importErrMethod, "POST a JSON array of metrics to /import")
		return
	}
	var body io.Reader = r.Body
	var decompress func(io.Reader) (io.ReadCloser, error)
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "deflate":
		decompress = zlib.NewReader
	case "gzip":
		decompress = func(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) }
	default:
		fail(http.StatusUnsupportedMediaType, importErrEncoding, fmt.Sprintf("Content-Encoding %q: use deflate, gzip or none", enc))
		return
	}
	if decompress != nil {
		zr, err := decompress(r.Body)
		if err != nil {
			fail(http.StatusBadRequest, importErrBody, r.Header.Get("Content-Encoding")+" body: "+err.Error())
			return
		}
		defer zr.Close()
		body = zr
	}
	var metrics []samplers.JSONMetric
	dec := json.NewDecoder(io.LimitReader(body, maxImportBody+1))
	if err := dec.Decode(&metrics); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		if errors.As(err, &se) || errors.As(err, &te) || errors.Is(err, io.EOF) {
			fail(http.StatusBadRequest, importErrJSON, "body is not a JSON array of metrics: "+err.Error())
		} else {
			fail(http.StatusBadRequest, importErrBody, "reading the body: "+err.Error())
		}
		return
	}
	if dec.More() {
		fail(http.StatusBadRequest, importErrJSON, "body has data after the JSON array")
		return
	}
	requestDone := time.Now()

	var resp importResponse
	perWorker := make([][]importItem, len(s.workers))
	for i := range metrics {
		im, err := samplers.DecodeJSONMetric(&metrics[i])
		if err != nil {
			resp.Rejected++
			st.metricErrs[importMetricCause(err)].Add(1)
			if len(resp.Errors) < 10 {
				resp.Errors = append(resp.Errors, fmt.Sprintf("metric %d (%q): %v", i, metrics[i].Name, err))
			}
			continue
		}
		key := samplers.AppendImportKey(nil, &im)
		h := maphash.Bytes(s.seed, key)
		wi := int((h >> 32) * uint64(len(s.workers)) >> 32)
		perWorker[wi] = append(perWorker[wi], importItem{hash: h, key: key, im: im})
		resp.Accepted++
	}
	// Hand over under the shutdown lock, so that no batch reaches a worker
	// whose queue Shutdown has closed.
	s.importMu.RLock()
	if s.importClosed {
		s.importMu.RUnlock()
		fail(http.StatusServiceUnavailable, importErrShutdown, "shutting down; send to another instance")
		return
	}
	for wi, items := range perWorker {
		if len(items) > 0 {
			s.workers[wi].in <- &batch{imports: items}
		}
	}
	s.importMu.RUnlock()

	st.requests.Add(1)
	st.requestNanos.Add(int64(requestDone.Sub(start)))
	st.mergeNanos.Add(int64(time.Since(requestDone)))
	w.Header().Set("Content-Type", "application/json")
	code := http.StatusAccepted
	if resp.Accepted == 0 && resp.Rejected > 0 {
		code = http.StatusBadRequest
	}
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(resp)
}

// reportImports sends the /import self-metrics.
func (s *Server) reportImports() {
	st := &s.imports
	for i := range st.requestErrs {
		if n := st.requestErrs[i].Swap(0); n > 0 {
			s.stats.Count("import.request_error_total", int64(n), []string{"cause:" + importReqCauses[i]}, 1)
		}
	}
	for i := range st.metricErrs {
		if n := st.metricErrs[i].Swap(0); n > 0 {
			s.stats.Count("import.metric_error_total", int64(n), []string{"cause:" + importMetricCauses[i]}, 1)
		}
	}
	if n := st.requests.Swap(0); n > 0 {
		s.stats.Count("import.requests_total", int64(n), nil, 1)
		s.stats.TimeInMilliseconds("import.response_duration_ns", float64(st.requestNanos.Swap(0))/float64(n), []string{"part:request"}, 1)
		s.stats.TimeInMilliseconds("import.response_duration_ns", float64(st.mergeNanos.Swap(0))/float64(n), []string{"part:merge"}, 1)
	}
}
