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
// another instance (identity, deflate or gzip Content-Encoding) and merges
// the metrics that decode. A body that is not such an array is refused with
// 4xx and nothing of it is merged; single metrics that do not decode are
// skipped and reported in the answer, 202 with
// {"accepted":N,"rejected":M,"errors":[...]}, or 400 when none was
// accepted. While the instance shuts down (Merge returns ErrClosed) it
// answers 503, and 500 when Merge fails otherwise.
//
// While a request is read, what it holds beyond its decoded metrics is
// its largest metric, not its body; and the requests served at once are
// bounded:
//
//   - With ImporterConfig.RequireClientCert, a request without a client
//     certificate the TLS server verified is refused with 401 before
//     anything else (cause client_certificate).
//   - At most ImporterConfig.MaxConcurrency requests are read and merged at
//     once; one more is refused at once with 503 and Retry-After: 1 (cause
//     busy), which the forward client honours. A duplicate batch (below)
//     is answered without taking a place.
//   - The decompressed body is capped at ImporterConfig.MaxBodyBytes, and
//     the compressed one a little above (deflate may grow a body by a few
//     bytes per 64 KiB): past either cap the request is refused with 413
//     (cause too_large).
//   - The array is decoded one element at a time, and an element (with the
//     separator before it) over 16 MiB is refused with 413 (cause
//     too_large): far above any real metric, see maxImportElement. A run
//     of whitespace reaches the decoder as one byte, and one over 16 MiB
//     is refused with 413 too, so that whitespace (a body of a gigabyte of
//     it deflates to a megabyte) costs neither memory nor the whole body's
//     reading.
//   - The metrics that decode are kept until the whole body is read, then
//     merged at once, so that a body refused at its end merges nothing.
//     They take about as much as their JSON: a third of it for counters,
//     one and a half times for digests of a few values, three times for
//     the smallest possible digests.
//
// A request may name its batch with BatchHeader, an id of 1 to 64
// characters of [0-9a-zA-Z_-] (else 400), the same on each of its retries.
// Once a batch is answered 202, its id is remembered for
// ImporterConfig.Remember: a request with that id is answered 202 with the
// counts of the first and "duplicate":true, and neither read nor merged
// again. While a request with that id is being merged, another is answered
// 503 with Retry-After: 1, so that its sender learns the answer when it
// retries. Any other answer (the body refused, none of its metrics
// accepted, Merge failed, too busy) forgets the id: a retry is merged. A
// request without BatchHeader is merged whatever came before.
func (im *Importer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	fail := func(code, cause int, msg string) {
		im.requestErrs.Add(cause, 1)
		http.Error(w, msg, code)
	}
	if im.requireClientCert && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
		fail(http.StatusUnauthorized, causeClientCert, "a client certificate is required: send one that the authority of this server's http_tls_authority_certificate signed")
		return
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
	var decompress func(io.Reader) (io.ReadCloser, error)
	enc := r.Header.Get("Content-Encoding")
	switch enc {
	case "", "identity":
	case "deflate":
		decompress = zlib.NewReader
	case "gzip":
		decompress = func(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) }
	default:
		fail(http.StatusUnsupportedMediaType, causeEncoding, fmt.Sprintf("Content-Encoding %q: use deflate, gzip or none", enc))
		return
	}
	select {
	case im.slots <- struct{}{}:
		defer func() { <-im.slots }()
	default:
		w.Header().Set("Retry-After", "1")
		fail(http.StatusServiceUnavailable, causeBusy, fmt.Sprintf("busy: %d imports are in progress, the most this instance serves at once; retry later", cap(im.slots)))
		return
	}

	// The limits, as readers: see limits.go.
	body := r.Body
	if body == nil {
		body = http.NoBody
	}
	compressedMax := im.maxBody
	if decompress != nil {
		compressedMax = compressedCap(im.maxBody)
	}
	var decompressed io.Reader = http.MaxBytesReader(w, body, compressedMax)
	if decompress != nil {
		zr, err := decompress(decompressed) // reads the header
		if err != nil {
			if code, cause, msg := im.refusal(err); cause == causeTooLarge {
				fail(code, cause, msg)
			} else {
				fail(http.StatusBadRequest, causeBody, enc+" body: "+err.Error())
			}
			return
		}
		defer zr.Close()
		decompressed = zr
	}
	batch := im.newBatch()
	err := readJSONArray(newCapReader(decompressed, im.maxBody), im.maxElement, func(i int, m *JSONMetric) {
		f, err := DecodeJSON(m)
		batch.add(i, m.Name, f, err)
	})
	if err != nil {
		fail(im.refusal(err))
		return
	}
	read := time.Now()

	batch.publish()
	if err := im.merge(batch.fwd, start, read); err != nil {
		if errors.Is(err, ErrClosed) {
			http.Error(w, "shutting down; send to another instance", http.StatusServiceUnavailable)
		} else {
			http.Error(w, "merging the metrics: "+err.Error(), http.StatusInternalServerError)
		}
		return
	}
	resp := batch.resp
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

// refusal is the answer to a body that was not read whole for err: 413 for
// a limit, 400 for a failed read (cause body) or for what the body says
// (cause json).
func (im *Importer) refusal(err error) (code, cause int, msg string) {
	var tooLarge *tooLargeError
	var maxBytes *http.MaxBytesError
	var readErr *readError
	switch {
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, causeTooLarge, err.Error()
	case errors.As(err, &maxBytes):
		return http.StatusRequestEntityTooLarge, causeTooLarge, fmt.Sprintf("body over %d bytes as sent; send fewer metrics per request or raise import_max_body_bytes", maxBytes.Limit)
	case errors.As(err, &readErr):
		return http.StatusBadRequest, causeBody, "reading the body: " + err.Error()
	case errors.Is(err, errTrailingData):
		return http.StatusBadRequest, causeJSON, err.Error()
	}
	return http.StatusBadRequest, causeJSON, "body is not a JSON array of metrics: " + err.Error()
}

// writeAnswer writes resp as JSON with code.
func writeAnswer(w http.ResponseWriter, code int, resp importResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(resp)
}
