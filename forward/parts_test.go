package forward

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/samplers"
)

// countersBody is a body of n global counters, c0 to c(n-1), counter i of
// value 2^i, so that a sum of them tells which were merged, and how often.
// Every third one does not decode (its type is gauge), but for the first.
// It returns the body and the names of the metrics that decode.
func countersBody(t testing.TB, n int) ([]byte, []string) {
	t.Helper()
	ms := make([]JSONMetric, n)
	var good []string
	for i := range ms {
		ms[i] = encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: fmt.Sprintf("c%d", i), Counter: float64(uint64(1) << i)})
		if i%3 == 2 {
			ms[i].Type = "gauge"
			continue
		}
		good = append(good, ms[i].Name)
	}
	return marshal(t, ms), good
}

// postBody posts what r reads to h as batch id ("" for none).
func postBody(h http.Handler, id string, r io.Reader) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/import", r)
	if id != "" {
		req.Header.Set(BatchHeader, id)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// cutAfter is body, cut off with a failed read after n bytes, as a body is
// when its sender goes away.
func cutAfter(body []byte, n int) io.Reader {
	return io.MultiReader(bytes.NewReader(body[:n]), iotest.ErrReader(errors.New("connection reset by peer")))
}

// names are the names of the metrics merged into m, in order.
func names(m *fakeMerger) []string {
	var out []string
	for _, f := range m.merged() {
		out = append(out, f.Name)
	}
	return out
}

// answer decodes the JSON answer of rec.
func answer(t *testing.T, rec *httptest.ResponseRecorder) importResponse {
	t.Helper()
	var resp importResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("answer %d %q: %v", rec.Code, rec.Body.String(), err)
	}
	return resp
}

// A body larger than a part is merged in parts, in order: each part is the
// metrics decoded since the last one, once they take partBytes of JSON
// (one element more at most), and the rest at the end. The answer counts
// them all, and every rejected metric is counted once.
func TestImportInParts(t *testing.T) {
	body, good := countersBody(t, 40)
	for _, partBytes := range []int64{1, 150, 500, 1 << 20} {
		m := &fakeMerger{}
		im := NewImporter(m, ImporterConfig{})
		im.partBytes = partBytes
		rec := postImport(t, im, "deflate", deflate(body))
		if resp := answer(t, rec); rec.Code != http.StatusAccepted || resp.Accepted != len(good) || resp.Rejected != 40-len(good) || resp.Resumed != 0 {
			t.Fatalf("parts of %d: %d %q", partBytes, rec.Code, rec.Body.String())
		}
		if got := names(m); !slices.Equal(got, good) {
			t.Errorf("parts of %d: merged %v, want %v", partBytes, got, good)
		}
		// An element is some 70 bytes: a part has about partBytes/70 of
		// them, at least one.
		perPart := max(1, int(partBytes/70))
		for i, call := range m.calls {
			if len(call) > perPart+1 {
				t.Errorf("parts of %d: part %d has %d metrics", partBytes, i, len(call))
			}
		}
		wantCalls := 1
		if partBytes < int64(len(body)) {
			wantCalls = len(good) / perPart
		}
		if n := m.numCalls(); n < wantCalls/2 || n > wantCalls*2+1 {
			t.Errorf("parts of %d: %d merges, want about %d", partBytes, n, wantCalls)
		}
		stats := &statstest.Recorder{}
		im.Report(stats)
		if n := stats.Sum("import.metric_error_total", "cause:type"); n != int64(40-len(good)) {
			t.Errorf("parts of %d: import.metric_error_total cause:type = %d, want %d", partBytes, n, 40-len(good))
		}
	}
}

// A body with a batch id, cut off after some of its parts were merged,
// keeps those merged and remembers how far they got; its retry skips
// them and merges the rest, so that every metric is merged once, and its
// answer counts the whole. Cut off again, a resumed batch resumes from
// further on. Once answered 202, it is a duplicate.
func TestImportResume(t *testing.T) {
	body, good := countersBody(t, 40)
	var want float64
	for i := range 40 {
		if i%3 != 2 {
			want += float64(uint64(1) << i)
		}
	}
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	im.partBytes = 300
	var got []string
	for attempt, cut := range []int{len(body) / 3, len(body) * 2 / 3} {
		rec := postBody(im, batchA, cutAfter(body, cut))
		got = names(m)
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "connection reset by peer") ||
			!strings.Contains(rec.Body.String(), "metrics were merged") || !strings.Contains(rec.Body.String(), "a retry with the same batch id merges the rest") {
			t.Fatalf("attempt %d, cut after %d bytes: %d %q", attempt, cut, rec.Code, rec.Body.String())
		}
		if len(got) == 0 || !slices.Equal(got, good[:len(got)]) {
			t.Fatalf("attempt %d: merged %v, want a start of %v", attempt, got, good)
		}
		if merged, merging := im.batches.size(); merged != 0 || merging != 0 || len(im.batches.partial) != 1 {
			t.Errorf("attempt %d: %d merged, %d merging, %d partial", attempt, merged, merging, len(im.batches.partial))
		}
	}
	resumedAt := im.batches.partial[batchA].elements

	rec := postBatch(t, im, batchA, body)
	resp := answer(t, rec)
	if rec.Code != http.StatusAccepted || resp.Accepted != len(good) || resp.Rejected != 40-len(good) || resp.Resumed != resumedAt || resp.Duplicate {
		t.Errorf("the retry: %d %q, want all counted, %d resumed", rec.Code, rec.Body.String(), resumedAt)
	}
	if got := names(m); !slices.Equal(got, good) {
		t.Errorf("merged %v, want each of %v once", got, good)
	}
	if sum := counterSum(m); sum != want {
		t.Errorf("counters sum to %v, want %v", sum, want)
	}
	if len(im.batches.partial) != 0 {
		t.Errorf("%d batches remembered as partial once merged", len(im.batches.partial))
	}
	rec = postBatch(t, im, batchA, body)
	if resp := answer(t, rec); rec.Code != http.StatusAccepted || !resp.Duplicate || resp.Accepted != len(good) {
		t.Errorf("once merged: %d %q", rec.Code, rec.Body.String())
	}

	stats := &statstest.Recorder{}
	im.Report(stats)
	for name, want := range map[string]int64{
		"import.partial_total":       2,
		"import.resumed_total":       1,
		"import.requests_total":      1,
		"import.duplicate_total":     1,
		"import.metric_error_total":  int64(40 - len(good)),
		"import.request_error_total": 2,
	} {
		if n := stats.Sum(name); n != want {
			t.Errorf("%s = %d, want %d", name, n, want)
		}
	}
	if n := stats.Sum("import.request_error_total", "cause:body"); n != 2 {
		t.Errorf("import.request_error_total cause:body = %d, want 2", n)
	}
}

// failingMerger fails the calls from its failAt-th on (counting from 1),
// with err, until told otherwise.
type failingMerger struct {
	fakeMerger
	mu     sync.Mutex
	n      int
	failAt int
	err    error
}

func (m *failingMerger) Merge(metrics []samplers.Forwarded) error {
	m.mu.Lock()
	m.n++
	fail := m.failAt > 0 && m.n >= m.failAt
	m.mu.Unlock()
	if fail {
		return m.err
	}
	return m.fakeMerger.Merge(metrics)
}

// A Merge that fails after some parts answers 503 (shutting down) or 500,
// and says what was merged; the retry merges the rest once.
func TestImportResumeAfterMergeFailed(t *testing.T) {
	body, good := countersBody(t, 40)
	for _, c := range []struct {
		err  error
		code int
	}{{ErrClosed, http.StatusServiceUnavailable}, {errors.New("worker gone"), http.StatusInternalServerError}} {
		m := &failingMerger{failAt: 3, err: c.err}
		im := NewImporter(m, ImporterConfig{})
		im.partBytes = 300
		rec := postBatch(t, im, batchA, body)
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), "metrics were merged") {
			t.Errorf("%v: %d %q", c.err, rec.Code, rec.Body.String())
		}
		if got := names(&m.fakeMerger); len(got) == 0 || !slices.Equal(got, good[:len(got)]) {
			t.Errorf("%v: merged %v before the failure", c.err, got)
		}
		m.mu.Lock()
		m.failAt = 0
		m.mu.Unlock()
		if rec := postBatch(t, im, batchA, body); rec.Code != http.StatusAccepted || answer(t, rec).Resumed == 0 {
			t.Errorf("%v: retry %d %q", c.err, rec.Code, rec.Body.String())
		}
		if got := names(&m.fakeMerger); !slices.Equal(got, good) {
			t.Errorf("%v: merged %v, want each of %v once", c.err, got, good)
		}
	}
}

// A retry whose body has fewer elements than its first attempt merged is
// not the same body: it is refused with 400 (cause batch_id), merging
// nothing, and the batch can still be resumed.
func TestImportResumeShorterBody(t *testing.T) {
	body, good := countersBody(t, 40)
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	im.partBytes = 300
	postBody(im, batchA, cutAfter(body, len(body)*2/3))
	merged := len(names(m))
	short, _ := countersBody(t, 3)
	rec := postBatch(t, im, batchA, short)
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "and this body has 3; send a new body with a new batch id") {
		t.Errorf("a shorter body: %d %q", rec.Code, rec.Body.String())
	}
	if n := len(names(m)); n != merged {
		t.Errorf("%d metrics merged, want %d", n, merged)
	}
	if rec := postBatch(t, im, batchA, body); rec.Code != http.StatusAccepted {
		t.Errorf("the right body: %d %q", rec.Code, rec.Body.String())
	}
	if got := names(m); !slices.Equal(got, good) {
		t.Errorf("merged %v, want each of %v once", got, good)
	}
	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.request_error_total", "cause:batch_id"); n != 1 {
		t.Errorf("import.request_error_total cause:batch_id = %d, want 1", n)
	}
}

// Without a batch id, a body cut off after some parts keeps them merged,
// and says so; nothing tells its retry from a new body, which is merged
// whole. A body cut off within its first part merges nothing.
func TestImportPartsWithoutBatchID(t *testing.T) {
	body, good := countersBody(t, 40)
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	im.partBytes = 300
	rec := postBody(im, "", cutAfter(body, len(body)/2))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "metrics were merged") || strings.Contains(rec.Body.String(), "retry") {
		t.Errorf("cut off: %d %q", rec.Code, rec.Body.String())
	}
	first := len(names(m))
	if first == 0 {
		t.Errorf("nothing merged of half the body")
	}
	if rec := postBatch(t, im, "", body); rec.Code != http.StatusAccepted || answer(t, rec).Resumed != 0 {
		t.Errorf("again: %d %q", rec.Code, rec.Body.String())
	}
	if n := len(names(m)); n != first+len(good) {
		t.Errorf("%d merged, want %d", n, first+len(good))
	}

	m = &fakeMerger{}
	im = NewImporter(m, ImporterConfig{})
	rec = postBody(im, batchA, cutAfter(body, len(body)-2))
	if rec.Code != http.StatusBadRequest || strings.Contains(rec.Body.String(), "merged") || m.numCalls() != 0 || len(im.batches.partial) != 0 {
		t.Errorf("cut off within one part: %d %q, %d merges", rec.Code, rec.Body.String(), m.numCalls())
	}
}

// The batches merged in part are bounded, the oldest forgotten first; they
// expire after remember from their last part; a merge forgets its batch's
// part, and a failure keeps it.
func TestBatchPartialMemory(t *testing.T) {
	const remember = time.Minute
	b := newBatchMemory(remember, 10)
	t0 := time.Unix(1000, 0)
	for i := range maxPartialBatches + 5 {
		id := fmt.Sprint("p", i)
		if state, _ := b.begin(id, t0); state != batchNew {
			t.Fatalf("%s: %d", id, state)
		}
		b.partialDone(id, mergedBatch{at: t0.Add(time.Duration(i) * time.Millisecond), elements: i + 1})
	}
	if n := len(b.partial); n != maxPartialBatches {
		t.Errorf("%d remembered, want %d", n, maxPartialBatches)
	}
	for i, want := range map[int]batchState{0: batchNew, 4: batchNew, 5: batchResume, maxPartialBatches + 4: batchResume} {
		id := fmt.Sprint("p", i)
		state, prev := b.begin(id, t0.Add(time.Second))
		if state != want || (want == batchResume && prev.elements != i+1) {
			t.Errorf("%s: %d %+v, want %d", id, state, prev, want)
		}
		if state2, _ := b.begin(id, t0.Add(time.Second)); state2 != batchMerging {
			t.Errorf("%s while resumed: %d", id, state2)
		}
		b.fail(id)
	}
	// Kept by a failure, gone with a merge, and with its time.
	if state, _ := b.begin("p5", t0.Add(time.Second)); state != batchResume {
		t.Errorf("p5 after a failure: %d", state)
	}
	b.done("p5", mergedBatch{at: t0.Add(time.Second), accepted: 1})
	if state, _ := b.begin("p5", t0.Add(time.Second)); state != batchDuplicate {
		t.Errorf("p5 once merged: %d", state)
	}
	if _, ok := b.partial["p5"]; ok {
		t.Errorf("p5 merged and still partial")
	}
	if state, _ := b.begin("p6", t0.Add(remember+time.Second)); state != batchNew {
		t.Errorf("p6 after remember: %d", state)
	}
}
