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

	"github.com/veneur/veneur/samplers"
)

// ServeHTTP is POST /import: it takes a JSON array of JSONMetric from
// another instance (identity, deflate or gzip Content-Encoding) and merges
// the metrics that decode. A body that is not such an array is refused with
// 4xx; single metrics that do not decode are skipped and reported in the
// answer, 202 with {"accepted":N,"rejected":M,"errors":[...]}, or 400 when
// none was accepted. While the instance shuts down (Merge returns
// ErrClosed) it answers 503, and 500 when Merge fails otherwise.
//
// While a request is read, what it holds is at most a part of its decoded
// metrics (below) and its largest metric, not its body; and the requests
// served at once are bounded:
//
//   - With ImporterConfig.RequireClientCert, a request without a client
//     certificate the TLS server verified is refused with 401 before
//     anything else (cause client_certificate).
//   - At most ImporterConfig.MaxConcurrency requests are read and merged at
//     once. One more waits for a place, a second at most, unless 16 times
//     MaxConcurrency requests wait already (import.waited_total counts
//     those that waited); one that gets none is refused with 503 and
//     Retry-After: 1 (cause busy), which the forward client honours. A
//     waiting request has not read its body. A duplicate batch (below) is
//     answered without taking a place.
//   - The decompressed body is capped at ImporterConfig.MaxBodyBytes, and
//     the compressed one a little above (deflate may grow a body by a few
//     bytes per 64 KiB): past either cap the request is refused with 413
//     (cause too_large).
//   - The array is decoded one element at a time, and an element (with the
//     separator before it) over 16 MiB is refused with 413 (cause
//     too_large): far above any real metric, see maxImportElement. A run
//     of whitespace reaches the decoder as one byte, and a body of mostly
//     whitespace (outside strings, over 64 KiB of it plus 4 bytes per
//     byte of the rest) is refused with 400 (cause whitespace) as soon as it
//     is, so that whitespace (a body of a gigabyte of it deflates to a
//     megabyte) costs neither memory nor the whole body's reading.
//   - The metrics that decode are merged in parts: each time those
//     decoded since the last part took 8 MiB of JSON (importPartBytes),
//     and at the end. Decoded, they take about as much as their JSON: a
//     third of it for counters, one and a half times for digests of a few
//     values, three times for the smallest possible digests.
//
// A body that fits one part (most do: 8 MiB is some 30,000 metrics) is
// merged at its end, once read whole: when it is refused, nothing of it
// is merged. A larger one refused, or cut off, after some of its parts
// were merged keeps those merged (import.partial_total counts such
// requests, and their answer says so). With a batch id, the parts merged
// are remembered (below), and a retry merges the rest only; without one,
// a retry merges the whole body again.
//
// A request may name its batch with BatchHeader, an id of 1 to 64
// characters of [0-9a-zA-Z_-] (else 400), the same on each of its retries,
// which must send the same body. Once a batch is answered 202, its id is
// remembered for ImporterConfig.Remember: a request with that id is
// answered 202 with the counts of the first and "duplicate":true, and
// neither read nor merged again. While a request with that id is being
// merged (or waits for a place), another is answered 503 with
// Retry-After: 1, so that its sender learns the answer when it retries.
// When a request with that id fails after some of its parts were merged,
// how many elements they took is remembered instead (for Remember, and
// for 1,024 such batches at most): a retry skips those elements, merges
// the rest, and its answer counts both, with "resumed" the elements
// skipped (import.resumed_total); a retry whose body has fewer elements
// than were skipped is refused with 400 (cause batch_id). So each metric
// of a batch is merged once, however often it is cut off and retried.
// Any other answer (the body refused before a part was merged, none of
// its metrics accepted, Merge failed, too busy) forgets the id: a retry is
// merged, or resumed. A request without BatchHeader is merged whatever
// came before.
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
	// is answered 202 (and id is remembered), or a part of it merged
	// (and how far is remembered), every way out forgets it.
	var id string
	var prev mergedBatch // of a batch merged in part, to resume
	if ids := r.Header.Values(BatchHeader); len(ids) > 0 {
		if len(ids) > 1 || !wellFormedBatchID(ids[0]) {
			fail(http.StatusBadRequest, causeBatchID, fmt.Sprintf("%s: want one id of 1 to %d characters of 0-9, a-z, A-Z, _ and -", BatchHeader, maxBatchIDLen))
			return
		}
		state, p := im.batches.begin(ids[0], im.now())
		switch state {
		case batchDuplicate:
			im.duplicates.Add(1)
			writeAnswer(w, http.StatusAccepted, importResponse{Accepted: p.accepted, Rejected: p.rejected, Duplicate: true})
			return
		case batchMerging:
			w.Header().Set("Retry-After", "1")
			fail(http.StatusServiceUnavailable, causeInProgress, "batch "+ids[0]+" is being merged; retry to learn its answer")
			return
		case batchResume:
			prev = p
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
	waited, ok := im.takePlace(r.Context())
	if waited {
		im.waited.Add(1)
	}
	if !ok {
		w.Header().Set("Retry-After", "1")
		fail(http.StatusServiceUnavailable, causeBusy, im.busyMessage())
		return
	}
	defer im.leavePlace()

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
	batch := im.newBatch(prev)
	lim := streamLimits{element: im.maxElement, spaceSlack: im.spaceSlack}
	err := readJSONArray(newCapReader(decompressed, im.maxBody), lim, func(i int, m *JSONMetric, size int64) error {
		var f samplers.Forwarded
		var err error
		if !batch.skipping(i) {
			f, err = DecodeJSON(m)
		}
		return batch.element(i, size, m.Name, f, err)
	})
	if err == nil && batch.seen < batch.skip {
		fail(http.StatusBadRequest, causeBatchID, fmt.Sprintf("batch %s: an earlier request merged the first %d metrics of its body, and this body has %d; send a new body with a new batch id", id, batch.skip, batch.seen))
		return
	}
	if err == nil {
		err = batch.mergePart(true)
	}
	if err != nil {
		code, cause, msg := im.refusal(err)
		if batch.parts > 0 {
			im.partials.Add(1)
			msg += fmt.Sprintf(" (its first %d metrics were merged, %d of them accepted", batch.merged.elements, batch.merged.accepted)
			if id != "" {
				progress := batch.merged
				progress.at = im.now()
				im.batches.partialDone(id, progress)
				id = ""
				msg += "; a retry with the same batch id merges the rest"
			}
			msg += ")"
		}
		fail(code, cause, msg)
		return
	}
	if prev.elements > 0 {
		im.resumed.Add(1)
	}
	total := time.Since(start)
	im.requestNanos.Add(int64(total - batch.mergeTime))
	im.mergeNanos.Add(int64(batch.mergeTime))
	im.requests.Add(1)

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

// refusal is the answer to a body that was not read whole, or not merged,
// for err: 413 for a limit, 400 for a failed read (cause body), for a
// body mostly of whitespace (cause whitespace) or for what the body says
// (cause json); 503 (cause shutdown) or 500 (cause other) for a failure of
// Merge.
func (im *Importer) refusal(err error) (code, cause int, msg string) {
	var tooLarge *tooLargeError
	var maxBytes *http.MaxBytesError
	var readErr *readError
	var space *whitespaceError
	var merge *mergeError
	switch {
	case errors.As(err, &merge):
		if errors.Is(err, ErrClosed) {
			return http.StatusServiceUnavailable, causeShutdown, "shutting down; send to another instance"
		}
		return http.StatusInternalServerError, im.requestErrs.Len() - 1, "merging the metrics: " + err.Error()
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, causeTooLarge, err.Error()
	case errors.As(err, &maxBytes):
		return http.StatusRequestEntityTooLarge, causeTooLarge, fmt.Sprintf("body over %d bytes as sent; send fewer metrics per request or raise import_max_body_bytes", maxBytes.Limit)
	case errors.As(err, &space):
		return http.StatusBadRequest, causeWhitespace, err.Error()
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
