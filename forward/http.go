package forward

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/klauspost/compress/zlib"
)

// ServeHTTP is POST /import: it takes a JSON array of JSONMetric from
// another instance (identity, deflate or gzip Content-Encoding, at most
// MaxImportBody bytes decompressed) and merges the metrics that decode.
// A body that is not such an array is refused with 4xx and nothing of it
// is merged; single metrics that do not decode are skipped and reported in
// the answer, 202 with {"accepted":N,"rejected":M,"errors":[...]}, or 400
// when none was accepted. While the instance shuts down (Merge returns
// ErrClosed) it answers 503, and 500 when Merge fails otherwise.
//
// A request may name its batch with BatchHeader, an id of 1 to 64
// characters of [0-9a-zA-Z_-] (else 400), the same on each of its retries.
// Once a batch is answered 202, its id is remembered for
// ImporterConfig.Remember: a request with that id is answered 202 with the
// counts of the first and "duplicate":true, and neither read nor merged
// again. While a request with that id is being merged, another is answered
// 503 with Retry-After: 1, so that its sender learns the answer when it
// retries. Any other answer (the body refused, none of its metrics
// accepted, Merge failed) forgets the id: a retry is merged. A request
// without BatchHeader is merged whatever came before.
func (im *Importer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	fail := func(code, cause int, msg string) {
		im.requestErrs.Add(cause, 1)
		http.Error(w, msg, code)
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(http.StatusMethodNotAllowed, causeMethod, "POST a JSON array of metrics to /import")
		return
	}
	// id is the batch id, "" when the request has none. Until its merge
	// is answered 202 (and id is remembered), every way out forgets it.
	var id string
	if ids := r.Header.Values(BatchHeader); len(ids) > 0 {
		if len(ids) > 1 || !wellFormedBatchID(ids[0]) {
			fail(http.StatusBadRequest, causeBatchID, fmt.Sprintf("%s: want one id of 1 to %d characters of 0-9, a-z, A-Z, _ and -", BatchHeader, maxBatchIDLen))
			return
		}
		state, prev := im.batches.begin(ids[0], im.now())
		switch state {
		case batchDuplicate:
			im.duplicates.Add(1)
			writeAnswer(w, http.StatusAccepted, importResponse{Accepted: prev.accepted, Rejected: prev.rejected, Duplicate: true})
			return
		case batchMerging:
			w.Header().Set("Retry-After", "1")
			fail(http.StatusServiceUnavailable, causeInProgress, "batch "+ids[0]+" is being merged; retry to learn its answer")
			return
		}
		id = ids[0]
		defer func() {
			if id != "" {
				im.batches.fail(id)
			}
		}()
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
		fail(http.StatusUnsupportedMediaType, causeEncoding, fmt.Sprintf("Content-Encoding %q: use deflate, gzip or none", enc))
		return
	}
	if decompress != nil {
		zr, err := decompress(r.Body)
		if err != nil {
			fail(http.StatusBadRequest, causeBody, r.Header.Get("Content-Encoding")+" body: "+err.Error())
			return
		}
		defer zr.Close()
		body = zr
	}
	var metrics []JSONMetric
	// Past the limit the decoder sees the end of the body, so a larger
	// array is refused as cut short.
	dec := json.NewDecoder(io.LimitReader(body, im.maxBody))
	if err := dec.Decode(&metrics); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		if errors.As(err, &se) || errors.As(err, &te) || errors.Is(err, io.EOF) {
			fail(http.StatusBadRequest, causeJSON, "body is not a JSON array of metrics: "+err.Error())
		} else {
			fail(http.StatusBadRequest, causeBody, "reading the body: "+err.Error())
		}
		return
	}
	if dec.More() {
		fail(http.StatusBadRequest, causeJSON, "body has data after the JSON array")
		return
	}
	read := time.Now()

	fwd, resp := decodeAll(im, metrics, DecodeJSON, func(m *JSONMetric) string { return m.Name })
	if err := im.merge(fwd, start, read); err != nil {
		if errors.Is(err, ErrClosed) {
			http.Error(w, "shutting down; send to another instance", http.StatusServiceUnavailable)
		} else {
			http.Error(w, "merging the metrics: "+err.Error(), http.StatusInternalServerError)
		}
		return
	}
	code := http.StatusAccepted
	if resp.Accepted == 0 && resp.Rejected > 0 {
		code = http.StatusBadRequest
	}
	if id != "" && code == http.StatusAccepted {
		// Remembered before the answer is written: a retry sent once the
		// answer is lost finds the id merged, not being merged.
		im.batches.done(id, mergedBatch{at: im.now(), accepted: resp.Accepted, rejected: resp.Rejected})
		id = ""
	}
	writeAnswer(w, code, resp)
}

// writeAnswer writes resp as JSON with code.
func writeAnswer(w http.ResponseWriter, code int, resp importResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(resp)
}
