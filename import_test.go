package veneur

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zlib"

	"github.com/veneur/veneur/samplers"
)

// exportOf builds the JSONMetric a local instance would forward for a
// series fed with values.
func exportOf(t *testing.T, typ samplers.MetricType, name string, tags []string, values ...string) samplers.JSONMetric {
	t.Helper()
	series := &samplers.Series{Name: name, Tags: tags}
	switch typ {
	case samplers.CounterMetric:
		sum := 0.0
		for range values {
			sum++
		}
		return samplers.ExportCounter(series, sum)
	case samplers.SetMetric:
		set := samplers.NewSet()
		for _, v := range values {
			set.Sample([]byte(v))
		}
		m, err := samplers.ExportSet(series, set)
		if err != nil {
			t.Fatal(err)
		}
		return m
	default:
		h := samplers.NewHisto()
		for _, v := range values {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			h.Sample(f, 1)
		}
		m, err := samplers.ExportHisto(series, typ, h)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
}

func postImport(t *testing.T, h http.Handler, encoding string, body []byte) *httptest.ResponseRecorder {
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

// Imported state merges with the instance's own: counter sums add up,
// percentiles cover both digests, aggregates stay local, sets union.
func TestImportMerges(t *testing.T) {
	s, out := startServer(t, testConfig(t, "percentiles: [0.5, 0.99]\naggregates: [min, max, count]\n"))
	// Local samples: lat 1, 2 (min 1, max 2, count 2); a set member.
	sendUDP(t, s.UDPAddr(), "lat:1|h|#svc:a\nlat:2|h|#svc:a\nusers:alice|s\nhits:5|c|#veneurglobalonly")
	waitProcessed(t, s, 4)
	body, _ := json.Marshal([]samplers.JSONMetric{
		exportOf(t, samplers.HistogramMetric, "lat", []string{"svc:a"}, "100", "100", "100", "100", "100", "100"),
		exportOf(t, samplers.TimerMetric, "only.remote", []string{"b:2", "a:1"}, "7"),
		exportOf(t, samplers.SetMetric, "users", nil, "bob", "alice", "carol"),
		exportOf(t, samplers.CounterMetric, "hits", nil, "x", "x", "x"),
	})
	rec := postImport(t, s.Handler(), "deflate", deflate(body))
	if rec.Code != http.StatusAccepted || !strings.Contains(rec.Body.String(), `"accepted":4`) {
		t.Fatalf("import: %d %s", rec.Code, rec.Body.String())
	}
	s.Flush(context.Background(), time.Unix(1000, 0))
	shutdown(t, s)
	got := out.String()
	for _, want := range []string{
		"lat.min gauge 1 ", "lat.max gauge 2 ", "lat.count rate 0.0005555555555555556 ", // local only: 2/3600
		"lat.50percentile gauge 100 ", "lat.99percentile gauge 100 ", // 6 of 8 samples are 100
		"only.remote.50percentile gauge 7 host=box tags=[a:1 b:2]",
		"users gauge 3 ",                   // alice, bob, carol
		"hits rate 0.0022222222222222222 ", // (5+3)/3600
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "only.remote.min") || strings.Contains(got, "only.remote.count") {
		t.Errorf("aggregates of samples this instance never received:\n%s", got)
	}
}

func TestImportRefusesBadBodies(t *testing.T) {
	s, _ := startServer(t, testConfig(t, ""))
	defer shutdown(t, s)
	h := s.Handler()
	good, _ := json.Marshal([]samplers.JSONMetric{exportOf(t, samplers.CounterMetric, "ok", nil, "x")})
	badValue, _ := json.Marshal([]samplers.JSONMetric{{Name: "h", Type: "histogram", Value: []byte("nope")}})
	mixed, _ := json.Marshal([]samplers.JSONMetric{
		exportOf(t, samplers.CounterMetric, "ok", nil, "x"),
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
	}{
		{"GET", http.MethodGet, "", nil, http.StatusMethodNotAllowed, "POST"},
		{"unknown encoding", http.MethodPost, "br", good, http.StatusUnsupportedMediaType, "Content-Encoding"},
		{"not deflate", http.MethodPost, "deflate", good, http.StatusBadRequest, "deflate"},
		{"not gzip", http.MethodPost, "gzip", good, http.StatusBadRequest, "gzip"},
		{"not JSON", http.MethodPost, "", []byte("hello"), http.StatusBadRequest, "JSON"},
		{"an object", http.MethodPost, "", []byte(`{"name":"x"}`), http.StatusBadRequest, "JSON"},
		{"empty", http.MethodPost, "", nil, http.StatusBadRequest, "JSON"},
		{"trailing data", http.MethodPost, "", append(append([]byte{}, good...), "[]"...), http.StatusBadRequest, "after"},
		{"cut deflate", http.MethodPost, "deflate", deflate(good)[:10], http.StatusBadRequest, ""},
		{"only bad metrics", http.MethodPost, "", badValue, http.StatusBadRequest, "value"},
		{"good and bad", http.MethodPost, "", mixed, http.StatusAccepted, `"accepted":1,"rejected":4`},
	} {
		req := httptest.NewRequest(c.method, "/import", bytes.NewReader(c.body))
		if c.encoding != "" {
			req.Header.Set("Content-Encoding", c.encoding)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.says) {
			t.Errorf("%s: %d %q, want %d mentioning %q", c.name, rec.Code, rec.Body.String(), c.code, c.says)
		}
	}
	if n := s.imports.requestErrs[importErrJSON].Load(); n != 4 {
		t.Errorf("%d JSON errors counted, want 4", n)
	}
	// The server goes on.
	if rec := postImport(t, h, "", good); rec.Code != http.StatusAccepted {
		t.Errorf("a good import after bad ones: %d %s", rec.Code, rec.Body.String())
	}
}

func FuzzImportBody(f *testing.F) {
	s := newServer(f, "")
	for _, w := range s.workers {
		go w.run()
	}
	h := s.Handler()
	f.Add([]byte(`[{"name":"a","type":"counter","tags":[],"value":"AAAAAAAA8D8="}]`))
	f.Add([]byte(`[{"name":"h","type":"histogram","tags":["x:y"],"value":"AQ=="}]`))
	f.Add([]byte(`[{"name":"s","type":"set","tags":[],"value":"AQ4="}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := postImport(t, h, "", body)
		if rec.Code != http.StatusAccepted && rec.Code != http.StatusBadRequest {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.String())
		}
	})
}
