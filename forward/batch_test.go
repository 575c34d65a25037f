package forward

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/samplers"
)

// postBatch posts body to h as batch id ("" for no BatchHeader).
func postBatch(t testing.TB, h http.Handler, id string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/import", bytes.NewReader(body))
	if id != "" {
		req.Header.Set(BatchHeader, id)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// counterBody is a body of one global counter named name, of value v.
func counterBody(t testing.TB, name string, v float64) []byte {
	t.Helper()
	return marshal(t, []JSONMetric{encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: name, Counter: v})})
}

// counterSum is the total of the counters merged into m.
func counterSum(m *fakeMerger) float64 {
	var sum float64
	for _, f := range m.merged() {
		sum += f.Counter
	}
	return sum
}

// size is how many merged ids b remembers, and how many are being merged.
func (b *batchMemory) size() (merged, merging int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.merged), len(b.merging)
}

// testClock is an Importer clock the test moves.
type testClock struct{ t time.Time }

func (c *testClock) now() time.Time { return c.t }

const batchA = "0123456789abcdef0123456789abcdef"

// The same batch posted twice is merged once: the second answer is 202
// with the counts of the first and "duplicate":true. Another batch is
// merged.
func TestBatchDuplicate(t *testing.T) {
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	mixed := marshal(t, []JSONMetric{
		encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: "hits", Counter: 2}),
		{Name: "t", Type: "gauge", Value: make([]byte, 8)},
	})
	rec := postBatch(t, im, batchA, mixed)
	if rec.Code != http.StatusAccepted || !strings.HasPrefix(rec.Body.String(), `{"accepted":1,"rejected":1,"errors":[`) || strings.Contains(rec.Body.String(), "duplicate") {
		t.Fatalf("first: %d %q", rec.Code, rec.Body.String())
	}
	for range 2 {
		rec = postBatch(t, im, batchA, mixed)
		if rec.Code != http.StatusAccepted || rec.Body.String() != `{"accepted":1,"rejected":1,"duplicate":true}`+"\n" || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("again: %d %s %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
		}
	}
	if n := m.numCalls(); n != 1 {
		t.Fatalf("%d merges, want 1", n)
	}
	if sum := counterSum(m); sum != 2 {
		t.Errorf("global counter merged as %v, want 2", sum)
	}
	// A duplicate is not read: a body that does not decode is answered as
	// the first was.
	if rec := postBatch(t, im, batchA, []byte("not JSON")); rec.Code != http.StatusAccepted || !strings.Contains(rec.Body.String(), `"duplicate":true`) {
		t.Errorf("a duplicate with another body: %d %q", rec.Code, rec.Body.String())
	}
	// The id is the batch: another id is merged.
	if rec := postBatch(t, im, strings.ToUpper(batchA), mixed); rec.Code != http.StatusAccepted || strings.Contains(rec.Body.String(), "duplicate") {
		t.Errorf("another id: %d %q", rec.Code, rec.Body.String())
	}
	if n := m.numCalls(); n != 2 {
		t.Errorf("%d merges, want 2", n)
	}

	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.duplicate_total"); n != 3 {
		t.Errorf("import.duplicate_total = %d, want 3", n)
	}
	if n := stats.Sum("import.requests_total"); n != 2 {
		t.Errorf("import.requests_total = %d, want 2", n)
	}
	if n := stats.Sum("import.request_error_total"); n != 0 {
		t.Errorf("import.request_error_total = %d, want 0", n)
	}
	again := &statstest.Recorder{}
	im.Report(again)
	if n := again.Sum("import.duplicate_total"); n != 0 {
		t.Errorf("a second Report sent import.duplicate_total %d", n)
	}
}

// loseAnswers is a RoundTripper whose first lose answers are lost: the
// request reached the server, the sender sees an error.
type loseAnswers struct {
	lose int
	sent int
}

func (l *loseAnswers) RoundTrip(req *http.Request) (*http.Response, error) {
	l.sent++
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || l.lose == 0 {
		return resp, err
	}
	l.lose--
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil, errors.New("connection reset (the test lost the answer)")
}

// A sender whose answers are lost retries the same batch over HTTP until
// it has one: the batch is merged once, and the answer it gets says so.
func TestBatchLostAnswer(t *testing.T) {
	m := &fakeMerger{}
	srv := httptest.NewServer(NewImporter(m, ImporterConfig{}))
	defer srv.Close()
	lossy := &loseAnswers{lose: 2}
	client := &http.Client{Transport: lossy}
	body := deflate(counterBody(t, "global.hits", 5))

	var resp *http.Response
	for attempt := 0; resp == nil; attempt++ {
		if attempt == 5 {
			t.Fatal("no answer after 5 attempts")
		}
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/import", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Encoding", "deflate")
		req.Header.Set(BatchHeader, batchA)
		resp, err = client.Do(req)
		if err != nil {
			resp = nil
			continue
		}
	}
	defer resp.Body.Close()
	var answer importResponse
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted || answer.Accepted != 1 || answer.Rejected != 0 || !answer.Duplicate {
		t.Errorf("answer %d %+v, want 202 accepted 1 duplicate", resp.StatusCode, answer)
	}
	if lossy.sent != 3 {
		t.Errorf("%d requests sent, want 3", lossy.sent)
	}
	if n, sum := m.numCalls(), counterSum(m); n != 1 || sum != 5 {
		t.Errorf("%d merges, global counter %v; want 1 merge of 5", n, sum)
	}
}

// blockingMerger is a fakeMerger whose Merge of a first metric named
// "slow", until release is closed, says so on entered and waits for the
// release. Other metrics merge at once, so that a request the test does
// not expect to merge fails the test rather than hanging it.
type blockingMerger struct {
	fakeMerger
	entered, release chan struct{}
}

func (m *blockingMerger) Merge(metrics []samplers.Forwarded) error {
	if len(metrics) > 0 && metrics[0].Name == "slow" {
		select {
		case m.entered <- struct{}{}:
			<-m.release
		case <-m.release:
		}
	}
	return m.fakeMerger.Merge(metrics)
}

// A batch sent again while its first request is being merged is answered
// 503 with Retry-After: 1, and as a duplicate once that merge is done.
// Requests of other batches, and without one, are not held up.
func TestBatchInProgress(t *testing.T) {
	m := &blockingMerger{entered: make(chan struct{}), release: make(chan struct{})}
	im := NewImporter(m, ImporterConfig{})
	body := counterBody(t, "slow", 1)

	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- postBatch(t, im, batchA, body) }()
	<-m.entered

	// Were they merged, these would not block.
	fast := counterBody(t, "fast", 1)
	for range 2 {
		rec := postBatch(t, im, batchA, fast)
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" ||
			rec.Body.String() != "batch "+batchA+" is being merged; retry to learn its answer\n" {
			t.Errorf("during the merge: %d Retry-After %q %q", rec.Code, rec.Header().Get("Retry-After"), rec.Body.String())
		}
	}
	// Others reach the Merger meanwhile.
	others := make(chan *httptest.ResponseRecorder, 2)
	go func() { others <- postBatch(t, im, "", body) }()
	<-m.entered
	go func() { others <- postBatch(t, im, "another-batch", body) }()
	<-m.entered

	close(m.release)
	if rec := <-first; rec.Code != http.StatusAccepted || rec.Body.String() != `{"accepted":1,"rejected":0}`+"\n" {
		t.Errorf("first: %d %q", rec.Code, rec.Body.String())
	}
	for range 2 {
		if rec := <-others; rec.Code != http.StatusAccepted || strings.Contains(rec.Body.String(), "duplicate") {
			t.Errorf("another: %d %q", rec.Code, rec.Body.String())
		}
	}
	if rec := postBatch(t, im, batchA, fast); rec.Code != http.StatusAccepted || rec.Body.String() != `{"accepted":1,"rejected":0,"duplicate":true}`+"\n" {
		t.Errorf("after the merge: %d %q", rec.Code, rec.Body.String())
	}
	for _, f := range m.merged() {
		if f.Name != "slow" {
			t.Errorf("merged %q", f.Name)
		}
	}
	if n := m.numCalls(); n != 3 {
		t.Errorf("%d merges, want 3", n)
	}
	if merged, merging := im.batches.size(); merged != 2 || merging != 0 {
		t.Errorf("%d ids remembered, %d being merged; want 2, 0", merged, merging)
	}

	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.request_error_total", "cause:in_progress"); n != 2 {
		t.Errorf("import.request_error_total cause:in_progress = %d, want 2", n)
	}
	if n := stats.Sum("import.duplicate_total"); n != 1 {
		t.Errorf("import.duplicate_total = %d, want 1", n)
	}
	if n := stats.Sum("import.requests_total"); n != 3 {
		t.Errorf("import.requests_total = %d, want 3", n)
	}
}

// panicMerger panics in Merge while panic is set.
type panicMerger struct {
	fakeMerger
	panic bool
}

func (m *panicMerger) Merge(metrics []samplers.Forwarded) error {
	if m.panic {
		panic("merge panics")
	}
	return m.fakeMerger.Merge(metrics)
}

// When a batch's first request is not merged, its id is forgotten: the
// retry is merged (once).
func TestBatchFailedFirstAttempt(t *testing.T) {
	good := counterBody(t, "global.hits", 1)
	for _, c := range []struct {
		name     string
		encoding string
		body     []byte
		err      error
		code     int
	}{
		{"shutting down", "", good, ErrClosed, http.StatusServiceUnavailable},
		{"merge error", "", good, errors.New("worker gone"), http.StatusInternalServerError},
		{"not JSON", "", []byte("nope"), nil, http.StatusBadRequest},
		{"cut short", "deflate", deflate(good)[:10], nil, http.StatusBadRequest},
		{"unknown encoding", "br", good, nil, http.StatusUnsupportedMediaType},
		{"no metric accepted", "", marshal(t, []JSONMetric{{Name: "t", Type: "gauge", Value: make([]byte, 8)}}), nil, http.StatusBadRequest},
	} {
		m := &fakeMerger{err: c.err}
		im := NewImporter(m, ImporterConfig{})
		req := httptest.NewRequest(http.MethodPost, "/import", bytes.NewReader(c.body))
		req.Header.Set(BatchHeader, batchA)
		if c.encoding != "" {
			req.Header.Set("Content-Encoding", c.encoding)
		}
		rec := httptest.NewRecorder()
		im.ServeHTTP(rec, req)
		if rec.Code != c.code {
			t.Errorf("%s: first %d %q, want %d", c.name, rec.Code, rec.Body.String(), c.code)
		}
		if merged, merging := im.batches.size(); merged != 0 || merging != 0 {
			t.Errorf("%s: %d ids remembered, %d being merged after the failure", c.name, merged, merging)
		}
		before := m.numCalls()
		m.mu.Lock()
		m.err = nil
		m.mu.Unlock()
		if rec := postBatch(t, im, batchA, good); rec.Code != http.StatusAccepted || rec.Body.String() != `{"accepted":1,"rejected":0}`+"\n" {
			t.Errorf("%s: retry %d %q, want merged", c.name, rec.Code, rec.Body.String())
		}
		if rec := postBatch(t, im, batchA, good); rec.Code != http.StatusAccepted || !strings.Contains(rec.Body.String(), `"duplicate":true`) {
			t.Errorf("%s: after the retry %d %q, want a duplicate", c.name, rec.Code, rec.Body.String())
		}
		if n := m.numCalls() - before; n != 1 {
			t.Errorf("%s: %d merges after the failure, want 1", c.name, n)
		}
	}

	// A Merge that panics (net/http recovers the handler) forgets the id
	// too.
	m := &panicMerger{panic: true}
	im := NewImporter(m, ImporterConfig{})
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Merge did not panic")
			}
		}()
		postBatch(t, im, batchA, good)
	}()
	m.panic = false
	if rec := postBatch(t, im, batchA, good); rec.Code != http.StatusAccepted || strings.Contains(rec.Body.String(), "duplicate") || m.numCalls() != 1 {
		t.Errorf("retry after a panic: %d %q, %d merges", rec.Code, rec.Body.String(), m.numCalls())
	}
}

// An id is remembered for Remember after its merge, then merged again.
func TestBatchExpiry(t *testing.T) {
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{Remember: 30 * time.Second})
	clock := &testClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	im.now = clock.now
	body := counterBody(t, "global.hits", 1)
	t0 := clock.t

	isDuplicate := func(id string) bool {
		t.Helper()
		rec := postBatch(t, im, id, body)
		if rec.Code != http.StatusAccepted {
			t.Fatalf("%d %q", rec.Code, rec.Body.String())
		}
		return strings.Contains(rec.Body.String(), `"duplicate":true`)
	}
	if isDuplicate("a") {
		t.Fatal("the first post is a duplicate")
	}
	clock.t = t0.Add(10 * time.Second)
	if isDuplicate("b") {
		t.Fatal("b is a duplicate")
	}
	clock.t = t0.Add(30*time.Second - 1)
	if !isDuplicate("a") || !isDuplicate("b") {
		t.Fatal("a or b forgotten within the window")
	}
	clock.t = t0.Add(30 * time.Second)
	if isDuplicate("a") {
		t.Error("a remembered past the window")
	}
	if merged, _ := im.batches.size(); merged != 2 {
		t.Errorf("%d ids remembered, want 2 (b, and a again)", merged)
	}
	if !isDuplicate("b") {
		t.Error("b forgotten within its window")
	}
	// a is remembered from its second merge; b, merged at 10s, is
	// dropped by this request.
	clock.t = t0.Add(60*time.Second - 1)
	if !isDuplicate("a") {
		t.Error("a forgotten within the window of its second merge")
	}
	if merged, _ := im.batches.size(); merged != 1 {
		t.Errorf("%d ids remembered at 60s, want 1 (a)", merged)
	}
	// Expired ids are dropped on the next request, whatever its id.
	clock.t = t0.Add(time.Hour)
	if merged, _ := im.batches.size(); merged != 1 {
		t.Errorf("%d ids remembered before the next request, want 1", merged)
	}
	if isDuplicate("c") {
		t.Error("c is a duplicate")
	}
	if merged, _ := im.batches.size(); merged != 1 {
		t.Errorf("%d ids remembered an hour later, want 1 (c)", merged)
	}
	if n := m.numCalls(); n != 4 {
		t.Errorf("%d merges, want 4 (a, b, a, c)", n)
	}
}

// A zero or negative config gets the defaults.
func TestImporterConfigDefaults(t *testing.T) {
	for _, cfg := range []ImporterConfig{{}, {Remember: -1, MaxIDs: -1}} {
		im := NewImporter(&fakeMerger{}, cfg)
		if im.batches.remember != DefaultRemember || im.batches.max != DefaultMaxBatchIDs {
			t.Errorf("%+v: remember %v, max %d", cfg, im.batches.remember, im.batches.max)
		}
	}
	im := NewImporter(&fakeMerger{}, ImporterConfig{Remember: time.Minute, MaxIDs: 7})
	if im.batches.remember != time.Minute || im.batches.max != 7 {
		t.Errorf("remember %v, max %d; want 1m, 7", im.batches.remember, im.batches.max)
	}
	if DefaultRemember != 30*time.Second || DefaultMaxBatchIDs != 100_000 {
		t.Errorf("defaults %v, %d", DefaultRemember, DefaultMaxBatchIDs)
	}
}

// At most MaxIDs ids are remembered; the oldest are forgotten first, so a
// flood of ids does not grow the memory.
func TestBatchBound(t *testing.T) {
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{Remember: time.Hour, MaxIDs: 3})
	body := counterBody(t, "global.hits", 1)
	post := func(i int) bool {
		t.Helper()
		rec := postBatch(t, im, fmt.Sprintf("id-%d", i), body)
		if rec.Code != http.StatusAccepted {
			t.Fatalf("%d %q", rec.Code, rec.Body.String())
		}
		return strings.Contains(rec.Body.String(), `"duplicate":true`)
	}
	for i := range 1000 {
		if post(i) {
			t.Fatalf("id-%d is a duplicate", i)
		}
		if merged, _ := im.batches.size(); merged > 3 {
			t.Fatalf("%d ids remembered, want at most 3", merged)
		}
	}
	if n := len(im.batches.order); n > 3 {
		t.Errorf("a ring of %d ids, want at most 3", n)
	}
	for _, i := range []int{997, 998, 999} {
		if !post(i) {
			t.Errorf("id-%d forgotten, one of the last 3", i)
		}
	}
	if post(996) {
		t.Error("id-996 remembered past the bound")
	}
	// Remembering 996 again forgot the oldest, 997.
	if post(997) {
		t.Error("id-997 remembered past the bound")
	}
	if !post(999) {
		t.Error("id-999 forgotten")
	}
	if n := m.numCalls(); n != 1002 {
		t.Errorf("%d merges, want 1002", n)
	}
}

// batchMemory agrees with a plain list of (id, time) on a random run: ids
// from a small set, a clock that moves by random steps, and requests that
// merge or fail.
func TestBatchMemoryModel(t *testing.T) {
	type kept struct {
		id string
		at time.Time
	}
	for _, maxIDs := range []int{1, 5, 16, 40} {
		rng := rand.New(rand.NewPCG(1, uint64(maxIDs)))
		const remember = 100 * time.Second
		b := newBatchMemory(remember, maxIDs)
		var model []kept
		now := time.Unix(0, 0)
		for step := range 20000 {
			now = now.Add(time.Duration(rng.IntN(3)) * time.Second)
			id := fmt.Sprint(rng.IntN(60))
			for len(model) > 0 && now.Sub(model[0].at) >= remember {
				model = model[1:]
			}
			want := batchNew
			for _, k := range model {
				if k.id == id {
					want = batchDuplicate
				}
			}
			state, prev := b.begin(id, now)
			if state != want {
				t.Fatalf("max %d, step %d: %s is %d, want %d", maxIDs, step, id, state, want)
			}
			if state == batchDuplicate {
				if prev.accepted != len(id) {
					t.Fatalf("max %d, step %d: %s answered %+v", maxIDs, step, id, prev)
				}
				continue
			}
			if again, _ := b.begin(id, now); again != batchMerging {
				t.Fatalf("max %d, step %d: %s while being merged is %d", maxIDs, step, id, again)
			}
			if rng.IntN(4) == 0 {
				b.fail(id)
				continue
			}
			b.done(id, mergedBatch{at: now, accepted: len(id)})
			model = append(model, kept{id, now})
			if len(model) > maxIDs {
				model = model[len(model)-maxIDs:]
			}
			if merged, merging := b.size(); merged != len(model) || merging != 0 {
				t.Fatalf("max %d, step %d: %d remembered, %d being merged; want %d, 0", maxIDs, step, merged, merging, len(model))
			}
			if len(b.order) > maxIDs {
				t.Fatalf("max %d: a ring of %d", maxIDs, len(b.order))
			}
		}
	}
}

// A batch id that is not 1 to 64 characters of [0-9a-zA-Z_-], or more
// than one, is refused with 400 and nothing is merged.
func TestBatchBadIDs(t *testing.T) {
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	body := counterBody(t, "global.hits", 1)
	bad := [][]string{
		{""}, {strings.Repeat("a", 65)}, {"a b"}, {"a.b"}, {"a/b"}, {"é"}, {"a+b="}, {"a\tb"},
		{batchA, batchA}, {"a", "b"},
	}
	for _, ids := range bad {
		req := httptest.NewRequest(http.MethodPost, "/import", bytes.NewReader(body))
		req.Header[BatchHeader] = ids
		rec := httptest.NewRecorder()
		im.ServeHTTP(rec, req)
		if rec.Code != http.StatusBadRequest || rec.Body.String() != "X-Veneur-Batch-Id: want one id of 1 to 64 characters of 0-9, a-z, A-Z, _ and -\n" {
			t.Errorf("%q: %d %q", ids, rec.Code, rec.Body.String())
		}
	}
	if n := m.numCalls(); n != 0 {
		t.Errorf("%d merges of bad ids", n)
	}
	for _, id := range []string{"a", strings.Repeat("Z", 64), "_-09azAZ", batchA} {
		if rec := postBatch(t, im, id, body); rec.Code != http.StatusAccepted {
			t.Errorf("%q: %d %q", id, rec.Code, rec.Body.String())
		}
	}
	// The method is checked first.
	req := httptest.NewRequest(http.MethodGet, "/import", nil)
	req.Header.Set(BatchHeader, "a b")
	rec := httptest.NewRecorder()
	im.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET with a bad id: %d", rec.Code)
	}

	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.request_error_total", "cause:batch_id"); n != int64(len(bad)) {
		t.Errorf("import.request_error_total cause:batch_id = %d, want %d", n, len(bad))
	}
	if n := stats.Sum("import.request_error_total", "cause:method"); n != 1 {
		t.Errorf("import.request_error_total cause:method = %d, want 1", n)
	}
}

// Requests without BatchHeader are merged each time, and leave nothing in
// the memory.
func TestImportWithoutBatchID(t *testing.T) {
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	body := counterBody(t, "global.hits", 1)
	for range 3 {
		if rec := postBatch(t, im, "", body); rec.Code != http.StatusAccepted || rec.Body.String() != `{"accepted":1,"rejected":0}`+"\n" {
			t.Errorf("%d %q", rec.Code, rec.Body.String())
		}
	}
	if n, sum := m.numCalls(), counterSum(m); n != 3 || sum != 3 {
		t.Errorf("%d merges, counter %v; want 3, 3", n, sum)
	}
	if merged, merging := im.batches.size(); merged != 0 || merging != 0 {
		t.Errorf("%d ids remembered, %d being merged", merged, merging)
	}
	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.duplicate_total"); n != 0 {
		t.Errorf("import.duplicate_total = %d", n)
	}
}
