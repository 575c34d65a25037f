package forward

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zlib"

	"github.com/veneur/veneur/internal/counter"
	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/samplers"
)

// fakeMerger records what it is given, and answers err.
type fakeMerger struct {
	mu    sync.Mutex
	err   error
	calls [][]samplers.Forwarded
}

func (m *fakeMerger) Merge(metrics []samplers.Forwarded) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, metrics)
	return m.err
}

// merged is everything given to Merge, in order.
func (m *fakeMerger) merged() []samplers.Forwarded {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Concat(m.calls...)
}

func (m *fakeMerger) numCalls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.calls)
}

func postImport(t testing.TB, h http.Handler, encoding string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/import", bytes.NewReader(body))
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func deflate(b []byte) []byte {
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The importer hands the Merger exactly what was sent: names, sorted tags,
// the global scope for counters and the mixed one for the rest, the
// counter's sum, the digest and the sketch.
func TestImportDecodes(t *testing.T) {
	body := marshal(t, []JSONMetric{
		encode(t, samplers.Forwarded{Type: samplers.HistogramMetric, Name: "lat", Tags: []string{"svc:a"}, Digest: digestOf(t, 100, 100, 100, 100, 100, 100)}),
		encode(t, samplers.Forwarded{Type: samplers.TimerMetric, Name: "only.remote", Tags: []string{"b:2", "a:1"}, Digest: digestOf(t, 7)}),
		encode(t, samplers.Forwarded{Type: samplers.SetMetric, Name: "users", Set: sketchOf("bob", "alice", "carol")}),
		encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: "hits", Counter: 3}),
	})
	for _, enc := range []struct {
		name string
		body []byte
	}{{"", body}, {"identity", body}, {"deflate", deflate(body)}, {"gzip", gzipped(body)}} {
		m := &fakeMerger{}
		rec := postImport(t, NewImporter(m, ImporterConfig{}), enc.name, enc.body)
		if rec.Code != http.StatusAccepted || rec.Body.String() != `{"accepted":4,"rejected":0}`+"\n" || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%q: %d %s %q", enc.name, rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
		}
		if m.numCalls() != 1 {
			t.Errorf("%q: %d calls to Merge, want 1", enc.name, m.numCalls())
		}
		got := m.merged()
		if len(got) != 4 {
			t.Fatalf("%q: merged %d metrics, want 4", enc.name, len(got))
		}
		lat, remote, users, hits := got[0], got[1], got[2], got[3]
		if lat.Type != samplers.HistogramMetric || lat.Scope != samplers.MixedScope || lat.Name != "lat" || !slices.Equal(lat.Tags, []string{"svc:a"}) ||
			lat.Digest.Count() != 6 || lat.Digest.Quantile(0.5) != 100 || lat.Digest.Quantile(0.99) != 100 || lat.Set != nil {
			t.Errorf("%q: lat = %+v", enc.name, lat)
		}
		if remote.Type != samplers.TimerMetric || remote.Scope != samplers.MixedScope || remote.Name != "only.remote" || !slices.Equal(remote.Tags, []string{"a:1", "b:2"}) ||
			remote.Digest.Count() != 1 || remote.Digest.Quantile(0.5) != 7 {
			t.Errorf("%q: only.remote = %+v", enc.name, remote)
		}
		if users.Type != samplers.SetMetric || users.Scope != samplers.MixedScope || users.Name != "users" || len(users.Tags) != 0 ||
			users.Set.Estimate() != 3 || users.Digest != nil {
			t.Errorf("%q: users = %+v", enc.name, users)
		}
		if hits.Type != samplers.CounterMetric || hits.Scope != samplers.GlobalOnly || hits.Name != "hits" || len(hits.Tags) != 0 ||
			hits.Counter != 3 || hits.Digest != nil || hits.Set != nil {
			t.Errorf("%q: hits = %+v", enc.name, hits)
		}
	}
}

func TestImportRefusesBadBodies(t *testing.T) {
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	good := marshal(t, []JSONMetric{encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Name: "ok", Counter: 1})})
	badValue := marshal(t, []JSONMetric{{Name: "h", Type: "histogram", Value: []byte("nope")}})
	mixed := marshal(t, []JSONMetric{
		encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Name: "ok", Counter: 1}),
		{Name: "", Type: "counter", Value: make([]byte, 8)},
		{Name: "t", Type: "gauge", Value: make([]byte, 8)},
		{Name: "t", Type: "counter", Tags: []string{"a,b"}, Value: make([]byte, 8)},
		{Name: "s", Type: "set", Value: []byte{1, 2, 3}},
	})
	for _, c := range []struct {
		name, method, encoding string
		body                   []byte
		code                   int
		says                   string
		merged                 bool
	}{
		{"GET", http.MethodGet, "", nil, http.StatusMethodNotAllowed, "POST a JSON array of metrics to /import", false},
		{"unknown encoding", http.MethodPost, "br", good, http.StatusUnsupportedMediaType, `Content-Encoding "br": use deflate, gzip or none`, false},
		{"not deflate", http.MethodPost, "deflate", good, http.StatusBadRequest, "deflate body: ", false},
		{"not gzip", http.MethodPost, "gzip", good, http.StatusBadRequest, "gzip body: ", false},
		{"not JSON", http.MethodPost, "", []byte("hello"), http.StatusBadRequest, "body is not a JSON array of metrics: ", false},
		{"an object", http.MethodPost, "", []byte(`{"name":"x"}`), http.StatusBadRequest, "body is not a JSON array of metrics: ", false},
		{"empty", http.MethodPost, "", nil, http.StatusBadRequest, "body is not a JSON array of metrics: EOF", false},
		{"trailing data", http.MethodPost, "", append(append([]byte{}, good...), "[]"...), http.StatusBadRequest, "body has data after the JSON array", false},
		{"cut deflate", http.MethodPost, "deflate", deflate(good)[:10], http.StatusBadRequest, "reading the body: ", false},
		{"only bad metrics", http.MethodPost, "", badValue, http.StatusBadRequest, `{"accepted":0,"rejected":1,"errors":["metric 0 (\"h\"): imported metric: value does not decode for its type: `, true},
		{"good and bad", http.MethodPost, "", mixed, http.StatusAccepted, `{"accepted":1,"rejected":4,"errors":["metric 1 (\"\"): imported metric: empty or oversized name","metric 2 (\"t\"): imported metric: type is not counter, histogram, timer or set","metric 3 (\"t\"): imported metric: too many tags, an empty tag, or a tag with a comma","metric 4 (\"s\"): imported metric: value does not decode for its type: `, true},
	} {
		req := httptest.NewRequest(c.method, "/import", bytes.NewReader(c.body))
		if c.encoding != "" {
			req.Header.Set("Content-Encoding", c.encoding)
		}
		rec := httptest.NewRecorder()
		before := m.numCalls()
		im.ServeHTTP(rec, req)
		if rec.Code != c.code || !strings.HasPrefix(rec.Body.String(), c.says) {
			t.Errorf("%s: %d %q, want %d starting %q", c.name, rec.Code, rec.Body.String(), c.code, c.says)
		}
		if merged := m.numCalls() > before; merged != c.merged {
			t.Errorf("%s: merged %v, want %v", c.name, merged, c.merged)
		}
	}
	rec := httptest.NewRecorder()
	im.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/import", nil))
	if allow := rec.Header().Get("Allow"); allow != http.MethodPost {
		t.Errorf("405 with Allow %q", allow)
	}
	// Only the one good metric of the mixed body reached the Merger.
	if got := m.merged(); len(got) != 1 || got[0].Name != "ok" || got[0].Counter != 1 {
		t.Errorf("merged %+v", got)
	}

	stats := &statstest.Recorder{}
	im.Report(stats)
	for cause, want := range map[string]int64{"method": 2, "encoding": 1, "body": 3, "json": 4, "shutdown": 0, "other": 0} {
		if n := stats.Sum("import.request_error_total", "cause:"+cause); n != want {
			t.Errorf("import.request_error_total cause:%s = %d, want %d", cause, n, want)
		}
	}
	for cause, want := range map[string]int64{"name": 1, "type": 1, "tags": 1, "value": 2, "other": 0} {
		if n := stats.Sum("import.metric_error_total", "cause:"+cause); n != want {
			t.Errorf("import.metric_error_total cause:%s = %d, want %d", cause, n, want)
		}
	}
	// Requests merged: the two with metrics, whatever their answer.
	if n := stats.Sum("import.requests_total"); n != 2 {
		t.Errorf("import.requests_total = %d, want 2", n)
	}

	// The importer goes on.
	if rec := postImport(t, im, "", good); rec.Code != http.StatusAccepted {
		t.Errorf("a good import after bad ones: %d %s", rec.Code, rec.Body.String())
	}
}

// A body over MaxBodyBytes decompressed is refused with 413, and nothing
// merged; one of exactly MaxBodyBytes is accepted, whatever its encoding.
func TestImportBodyLimit(t *testing.T) {
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	if im.maxBody != MaxImportBody || MaxImportBody != 256<<20 {
		t.Fatalf("limit %d, want 256 MiB", im.maxBody)
	}
	body := marshal(t, []JSONMetric{encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Name: "ok", Counter: 1})})
	im = NewImporter(m, ImporterConfig{MaxBodyBytes: int64(len(body))})
	for _, enc := range []struct {
		name string
		body []byte
	}{{"", body}, {"deflate", deflate(body)}, {"gzip", gzipped(body)}} {
		im.maxBody = int64(len(body))
		if rec := postImport(t, im, enc.name, enc.body); rec.Code != http.StatusAccepted {
			t.Fatalf("%q: a body of exactly the limit: %d %s", enc.name, rec.Code, rec.Body.String())
		}
		im.maxBody = int64(len(body)) - 1
		if rec := postImport(t, im, enc.name, enc.body); rec.Code != http.StatusRequestEntityTooLarge || !strings.HasPrefix(rec.Body.String(), "body over ") {
			t.Errorf("%q: a body over the limit: %d %s", enc.name, rec.Code, rec.Body.String())
		}
	}
	if n := m.numCalls(); n != 3 {
		t.Errorf("%d merges, want 3", n)
	}
	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.request_error_total", "cause:too_large"); n != 3 {
		t.Errorf("import.request_error_total cause:too_large = %d, want 3", n)
	}
	if n := stats.Sum("import.request_error_total"); n != 3 {
		t.Errorf("import.request_error_total = %d, want 3 (all too_large)", n)
	}
}

// While the instance shuts down (Merge returns ErrClosed), imports are
// refused with 503, counted as shutdown, and not counted as merged.
func TestImportShutdown(t *testing.T) {
	m := &fakeMerger{err: ErrClosed}
	im := NewImporter(m, ImporterConfig{})
	good := marshal(t, []JSONMetric{encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Name: "ok", Counter: 1})})
	for _, body := range [][]byte{good, []byte("[]")} {
		rec := postImport(t, im, "", body)
		if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != "shutting down; send to another instance\n" {
			t.Errorf("%s while shutting down: %d %q", body, rec.Code, rec.Body.String())
		}
	}
	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.request_error_total", "cause:shutdown"); n != 2 {
		t.Errorf("import.request_error_total cause:shutdown = %d, want 2", n)
	}
	if n := stats.Sum("import.requests_total"); n != 0 {
		t.Errorf("import.requests_total = %d, want 0", n)
	}
	if n := stats.Timings("import.response_duration_ns"); n != 0 {
		t.Errorf("%d import.response_duration_ns, want none", n)
	}
}

// A Merge error other than ErrClosed is a 500 counted as other; one that
// wraps ErrClosed is a 503 counted as shutdown.
func TestImportMergeError(t *testing.T) {
	m := &fakeMerger{err: errors.New("worker gone")}
	im := NewImporter(m, ImporterConfig{})
	rec := postImport(t, im, "", []byte("[]"))
	if rec.Code != http.StatusInternalServerError || rec.Body.String() != "merging the metrics: worker gone\n" {
		t.Errorf("%d %q", rec.Code, rec.Body.String())
	}
	m.err = errors.Join(errors.New("closing"), ErrClosed)
	if rec := postImport(t, im, "", []byte("[]")); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("a wrapped ErrClosed: %d %q", rec.Code, rec.Body.String())
	}
	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.request_error_total", "cause:other"); n != 1 {
		t.Errorf("import.request_error_total cause:other = %d, want 1", n)
	}
	if n := stats.Sum("import.request_error_total", "cause:shutdown"); n != 1 {
		t.Errorf("import.request_error_total cause:shutdown = %d, want 1", n)
	}
}

// An error no metric cause lists is counted as other, not as one of them.
func TestImportMetricCauses(t *testing.T) {
	im := NewImporter(&fakeMerger{}, ImporterConfig{})
	for err, want := range map[error]string{
		ErrName: "name", ErrType: "type", ErrTags: "tags",
		errors.Join(errors.New("x"), ErrValue): "value",
		errors.New("something else"):           counter.Other,
	} {
		if got := im.metricErrs.Name(im.metricErrs.Index(err)); got != want {
			t.Errorf("cause of %v = %s, want %s", err, got, want)
		}
	}
}

// Report sends what was counted since the last Report, then nothing.
func TestImportReport(t *testing.T) {
	im := NewImporter(&fakeMerger{}, ImporterConfig{})
	good := marshal(t, []JSONMetric{encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Name: "ok", Counter: 1})})
	for range 3 {
		if rec := postImport(t, im, "", good); rec.Code != http.StatusAccepted {
			t.Fatalf("%d %s", rec.Code, rec.Body.String())
		}
	}
	postImport(t, im, "br", good)
	postImport(t, im, "", []byte(`[{"name":"g","type":"gauge","tags":[],"value":""}]`))

	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.requests_total"); n != 4 {
		t.Errorf("import.requests_total = %d, want 4", n)
	}
	for _, part := range []string{"part:request", "part:merge"} {
		if n := stats.Timings("import.response_duration_ns", part); n != 1 {
			t.Errorf("%d import.response_duration_ns %s, want 1", n, part)
		}
	}
	if n := stats.Sum("import.request_error_total", "cause:encoding"); n != 1 {
		t.Errorf("import.request_error_total cause:encoding = %d, want 1", n)
	}
	if n := stats.Sum("import.metric_error_total", "cause:type"); n != 1 {
		t.Errorf("import.metric_error_total cause:type = %d, want 1", n)
	}
	if got, want := stats.Names(), []string{"import.metric_error_total", "import.request_error_total", "import.requests_total"}; !slices.Equal(got, want) {
		t.Errorf("counts %q, want %q", got, want)
	}

	again := &statstest.Recorder{}
	im.Report(again)
	if names := again.Names(); len(names) != 0 || again.Timings("import.response_duration_ns") != 0 {
		t.Errorf("a second Report sent %q", names)
	}
}

func FuzzImportBody(f *testing.F) {
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	f.Add([]byte(`[{"name":"a","type":"counter","tags":[],"value":"AAAAAAAA8D8="}]`))
	f.Add([]byte(`[{"name":"h","type":"histogram","tags":["x:y"],"value":"AQ=="}]`))
	f.Add([]byte(`[{"name":"s","type":"set","tags":[],"value":"AQ4="}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := postImport(t, im, "", body)
		if rec.Code != http.StatusAccepted && rec.Code != http.StatusBadRequest {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.String())
		}
		if m.numCalls() == 0 {
			return // refused whole
		}
		m.mu.Lock()
		merged := m.calls[len(m.calls)-1]
		m.calls = nil // fuzzing runs for long: keep no history
		m.mu.Unlock()
		var resp importResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("answer %q: %v", rec.Body.String(), err)
		}
		if resp.Accepted != len(merged) {
			t.Fatalf("answer says %d accepted, %d merged", resp.Accepted, len(merged))
		}
		// What a global instance accepts, it can forward on in turn.
		for i := range merged {
			got := &merged[i]
			if !slices.IsSorted(got.Tags) {
				t.Fatalf("%q: tags %q not sorted", got.Name, got.Tags)
			}
			again, err := EncodeJSON(got)
			if err != nil {
				t.Fatalf("%q does not encode again: %v", got.Name, err)
			}
			back, err := DecodeJSON(&again)
			if err != nil {
				t.Fatalf("%q does not decode again: %v", got.Name, err)
			}
			if back.Type != got.Type || back.Name != got.Name || !slices.Equal(back.Tags, got.Tags) || math.Float64bits(back.Counter) != math.Float64bits(got.Counter) {
				t.Fatalf("%+v came back as %+v", got, back)
			}
		}
	})
}
