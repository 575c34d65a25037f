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
	w.Header().Set("Content-Type", "application/json")
	code := http.StatusAccepted
	if resp.Accepted == 0 && resp.Rejected > 0 {
		code = http.StatusBadRequest
	}
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(resp)
}
