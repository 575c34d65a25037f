package forward

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/samplers"
)

// Past MaxConcurrency requests being read and merged, one more waits for
// a place; one that gets none within MaxWait is refused with 503 and
// Retry-After: 1, counted as busy, and its batch id forgotten: it is
// merged when retried after the others are done. Answers that read
// nothing (a duplicate, a batch in progress) neither take a place nor
// wait. (In a synctest bubble: the wait passes on the bubble's clock.)
func TestImportConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &blockingMerger{entered: make(chan struct{}), release: make(chan struct{})}
		im := NewImporter(m, ImporterConfig{MaxConcurrency: 1})
		if rec := postBatch(t, im, "merged-before", counterBody(t, "fast", 1)); rec.Code != http.StatusAccepted {
			t.Fatalf("%d %q", rec.Code, rec.Body.String())
		}

		first := make(chan *httptest.ResponseRecorder)
		go func() { first <- postBatch(t, im, batchA, counterBody(t, "slow", 1)) }()
		<-m.entered

		// post is the answer to body as batch id, and how long it took.
		post := func(id string, body []byte) (*httptest.ResponseRecorder, time.Duration) {
			start := time.Now()
			rec := postBatch(t, im, id, body)
			return rec, time.Since(start)
		}
		second := counterBody(t, "second", 2)
		for range 2 {
			rec, took := post("second-batch", second)
			if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" ||
				rec.Body.String() != "busy: 1 imports are in progress, the most this instance serves at once; retry later\n" {
				t.Errorf("while busy: %d Retry-After %q %q", rec.Code, rec.Header().Get("Retry-After"), rec.Body.String())
			}
			if took != importMaxWait {
				t.Errorf("refused as busy after %v, want the wait, %v", took, importMaxWait)
			}
		}
		if rec, _ := post("", second); rec.Code != http.StatusServiceUnavailable {
			t.Errorf("while busy, without a batch id: %d %q", rec.Code, rec.Body.String())
		}
		if rec, took := post("merged-before", second); rec.Code != http.StatusAccepted || !strings.Contains(rec.Body.String(), `"duplicate":true`) || took != 0 {
			t.Errorf("a duplicate while busy: %d %q after %v", rec.Code, rec.Body.String(), took)
		}
		if rec, took := post(batchA, second); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "is being merged") || took != 0 {
			t.Errorf("the batch being merged, while busy: %d %q after %v", rec.Code, rec.Body.String(), took)
		}
		if merged, merging := im.batches.size(); merged != 1 || merging != 1 {
			t.Errorf("%d ids remembered, %d being merged; want 1, 1 (the busy one forgotten)", merged, merging)
		}

		close(m.release)
		if rec := <-first; rec.Code != http.StatusAccepted {
			t.Errorf("first: %d %q", rec.Code, rec.Body.String())
		}
		rec, took := post("second-batch", second)
		if rec.Code != http.StatusAccepted || rec.Body.String() != `{"accepted":1,"rejected":0}`+"\n" || took != 0 {
			t.Errorf("the retry: %d %q after %v", rec.Code, rec.Body.String(), took)
		}
		if sum := counterSum(&m.fakeMerger); sum != 1+1+2 {
			t.Errorf("merged counters %v, want 4 (fast, slow, second once)", sum)
		}

		stats := &statstest.Recorder{}
		im.Report(stats)
		for cause, want := range map[string]int64{"busy": 3, "in_progress": 1} {
			if n := stats.Sum("import.request_error_total", "cause:"+cause); n != want {
				t.Errorf("import.request_error_total cause:%s = %d, want %d", cause, n, want)
			}
		}
		if n := stats.Sum("import.waited_total"); n != 3 {
			t.Errorf("import.waited_total = %d, want 3", n)
		}
	})
}

// A request that finds every place taken waits for one, in turn, and is
// served when one is given back; at most MaxWaiting wait, and one more is
// refused at once. A request whose client goes away stops waiting. No
// place is kept once all are answered.
func TestImportWaitForPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &blockingMerger{entered: make(chan struct{}), release: make(chan struct{})}
		im := NewImporter(m, ImporterConfig{MaxConcurrency: 1, MaxWaiting: 2})
		answers := make(chan *httptest.ResponseRecorder, 3)
		go func() { answers <- postImport(t, im, "", counterBody(t, "slow", 1)) }()
		<-m.entered
		for i := range 2 {
			go func() { answers <- postImport(t, im, "", counterBody(t, "waits", float64(i+1))) }()
		}
		synctest.Wait()
		if n := im.waiting.Load(); n != 2 {
			t.Fatalf("%d waiting, want 2", n)
		}
		start := time.Now()
		if rec := postImport(t, im, "", counterBody(t, "one too many", 1)); rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" || time.Since(start) != 0 {
			t.Errorf("with 2 waiting: %d %q after %v; want 503 at once", rec.Code, rec.Body.String(), time.Since(start))
		}

		// Less than the wait later, the place is given back: the two
		// waiting are served in turn.
		time.Sleep(importMaxWait / 2)
		close(m.release)
		for range 3 {
			if rec := <-answers; rec.Code != http.StatusAccepted {
				t.Errorf("%d %q", rec.Code, rec.Body.String())
			}
		}
		if sum := counterSum(&m.fakeMerger); sum != 1+1+2 {
			t.Errorf("merged counters %v, want 4", sum)
		}

		// A client that goes away while it waits.
		hold := make(chan struct{})
		im2 := NewImporter(&blockingMerger{entered: make(chan struct{}), release: hold}, ImporterConfig{MaxConcurrency: 1})
		im2.slots <- struct{}{} // the only place, taken
		ctx, cancel := context.WithCancel(context.Background())
		gone := make(chan *httptest.ResponseRecorder)
		go func() {
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/import", bytes.NewReader(counterBody(t, "gone", 1)))
			rec := httptest.NewRecorder()
			im2.ServeHTTP(rec, req)
			gone <- rec
		}()
		synctest.Wait()
		start = time.Now()
		cancel()
		if rec := <-gone; rec.Code != http.StatusServiceUnavailable || time.Since(start) != 0 {
			t.Errorf("client gone: %d after %v; want 503 at once", rec.Code, time.Since(start))
		}
		<-im2.slots

		stats := &statstest.Recorder{}
		im.Report(stats)
		im2.Report(stats)
		if n := stats.Sum("import.waited_total"); n != 3 {
			t.Errorf("import.waited_total = %d, want 3", n)
		}
		if n := stats.Sum("import.request_error_total", "cause:busy"); n != 2 {
			t.Errorf("import.request_error_total cause:busy = %d, want 2", n)
		}
		if len(im.slots) != 0 || im.waiting.Load() != 0 || len(im2.slots) != 0 || im2.waiting.Load() != 0 {
			t.Errorf("places %d, %d and waiting %d, %d once all are answered", len(im.slots), len(im2.slots), im.waiting.Load(), im2.waiting.Load())
		}
	})
}

// With MaxWaiting or MaxWait below zero, none waits: a request that finds
// no place is refused at once.
func TestImportNoWait(t *testing.T) {
	for _, cfg := range []ImporterConfig{{MaxConcurrency: 1, MaxWaiting: -1}, {MaxConcurrency: 1, MaxWait: -1}} {
		im := NewImporter(&fakeMerger{}, cfg)
		im.slots <- struct{}{}
		if rec := postImport(t, im, "", counterBody(t, "c", 1)); rec.Code != http.StatusServiceUnavailable {
			t.Errorf("%+v: %d %q", cfg, rec.Code, rec.Body.String())
		}
		stats := &statstest.Recorder{}
		im.Report(stats)
		if n := stats.Sum("import.waited_total"); n != 0 {
			t.Errorf("%+v: import.waited_total = %d", cfg, n)
		}
	}
}

// Every way out gives the place back: a refused body, a failed merge, a
// Merge that panics.
func TestImportConcurrencyReleased(t *testing.T) {
	m := &panicMerger{}
	im := NewImporter(m, ImporterConfig{MaxConcurrency: 1})
	good := counterBody(t, "ok", 1)
	if rec := postImport(t, im, "", []byte("nope")); rec.Code != http.StatusBadRequest {
		t.Errorf("not JSON: %d", rec.Code)
	}
	if rec := postImport(t, im, "deflate", []byte("nope")); rec.Code != http.StatusBadRequest {
		t.Errorf("not deflate: %d", rec.Code)
	}
	im.maxElement = 8
	if rec := postImport(t, im, "", good); rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("too large: %d", rec.Code)
	}
	im.maxElement = maxImportElement
	m.err = ErrClosed
	if rec := postImport(t, im, "", good); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("shutting down: %d", rec.Code)
	}
	m.err = nil
	m.panic = true
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Merge did not panic")
			}
		}()
		postImport(t, im, "", good)
	}()
	m.panic = false
	if rec := postImport(t, im, "", good); rec.Code != http.StatusAccepted {
		t.Errorf("after the others: %d %q", rec.Code, rec.Body.String())
	}
	if n := len(im.slots); n != 0 {
		t.Errorf("%d places taken when none is served", n)
	}
}

func TestImporterLimitDefaults(t *testing.T) {
	for _, cfg := range []ImporterConfig{{}, {MaxBodyBytes: -1, MaxConcurrency: -1}} {
		im := NewImporter(&fakeMerger{}, cfg)
		if im.maxBody != MaxImportBody || cap(im.slots) != 2*runtime.NumCPU() || im.maxElement != maxImportElement || im.requireClientCert ||
			im.maxWaiting != int64(16*cap(im.slots)) || im.maxWait != time.Second || im.spaceSlack != 64<<10 || im.partBytes != 8<<20 {
			t.Errorf("%+v: body %d, concurrency %d, element %d, client cert %v, waiting %d for %v, whitespace slack %d, parts of %d",
				cfg, im.maxBody, cap(im.slots), im.maxElement, im.requireClientCert, im.maxWaiting, im.maxWait, im.spaceSlack, im.partBytes)
		}
	}
	im := NewImporter(&fakeMerger{}, ImporterConfig{MaxBodyBytes: 1000, MaxConcurrency: 3, RequireClientCert: true, MaxWaiting: 5, MaxWait: time.Minute})
	if im.maxBody != 1000 || cap(im.slots) != 3 || !im.requireClientCert || im.maxWaiting != 5 || im.maxWait != time.Minute {
		t.Errorf("body %d, concurrency %d, client cert %v, waiting %d for %v", im.maxBody, cap(im.slots), im.requireClientCert, im.maxWaiting, im.maxWait)
	}
	for _, cfg := range []ImporterConfig{{MaxWaiting: -1}, {MaxWait: -1}} {
		if im := NewImporter(&fakeMerger{}, cfg); im.maxWaiting != 0 || im.maxWait != 0 {
			t.Errorf("%+v: waiting %d for %v, want none", cfg, im.maxWaiting, im.maxWait)
		}
	}
}

// With RequireClientCert, a request without a verified client certificate
// is refused with 401 before anything else, its method included.
func TestImportRequireClientCert(t *testing.T) {
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{RequireClientCert: true})
	good := counterBody(t, "ok", 1)
	verified := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
	for _, c := range []struct {
		name   string
		method string
		tls    *tls.ConnectionState
		code   int
	}{
		{"plain", http.MethodPost, nil, http.StatusUnauthorized},
		{"plain GET", http.MethodGet, nil, http.StatusUnauthorized},
		{"TLS without a certificate", http.MethodPost, &tls.ConnectionState{}, http.StatusUnauthorized},
		{"a certificate not verified", http.MethodPost, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}, http.StatusUnauthorized},
		{"a verified certificate", http.MethodPost, verified, http.StatusAccepted},
		{"a verified certificate, GET", http.MethodGet, verified, http.StatusMethodNotAllowed},
	} {
		req := httptest.NewRequest(c.method, "/import", bytes.NewReader(good))
		req.TLS = c.tls
		rec := httptest.NewRecorder()
		im.ServeHTTP(rec, req)
		if rec.Code != c.code {
			t.Errorf("%s: %d %q, want %d", c.name, rec.Code, rec.Body.String(), c.code)
		}
		if c.code == http.StatusUnauthorized && rec.Body.String() != "a client certificate is required: send one that the authority of this server's http_tls_authority_certificate signed\n" {
			t.Errorf("%s: %q", c.name, rec.Body.String())
		}
	}
	if n := m.numCalls(); n != 1 {
		t.Errorf("%d merges, want 1", n)
	}
	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.request_error_total", "cause:client_certificate"); n != 4 {
		t.Errorf("import.request_error_total cause:client_certificate = %d, want 4", n)
	}
	// Without it, a plain request is served.
	if rec := postImport(t, NewImporter(m, ImporterConfig{}), "", good); rec.Code != http.StatusAccepted {
		t.Errorf("not required: %d %q", rec.Code, rec.Body.String())
	}
}

// Over real TLS, where the server asks for a certificate without requiring
// one: a client with one its authority signed is served, one without is
// refused with 401.
func TestImportRequireClientCertTLS(t *testing.T) {
	ca, caKey := newCert(t, "test authority", nil, nil)
	client, clientKey := newCert(t, "a local veneur", ca, caKey)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	m := &fakeMerger{}
	srv := httptest.NewUnstartedServer(NewImporter(m, ImporterConfig{RequireClientCert: true}))
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	defer srv.Close()

	post := func(c *http.Client) int {
		t.Helper()
		resp, err := c.Post(srv.URL+"/import", "application/json", bytes.NewReader(counterBody(t, "ok", 1)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(srv.Client()); code != http.StatusUnauthorized {
		t.Errorf("without a certificate: %d, want 401", code)
	}
	withCert := srv.Client()
	tr := withCert.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{{Certificate: [][]byte{client.Raw}, PrivateKey: clientKey}}
	withCert.Transport = tr
	if code := post(withCert); code != http.StatusAccepted {
		t.Errorf("with a certificate: %d, want 202", code)
	}
	if n := m.numCalls(); n != 1 {
		t.Errorf("%d merges, want 1", n)
	}
}

// newCert is a certificate for name, signed by parent (self-signed, as an
// authority, when parent is nil), and its key.
func newCert(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	} else {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// largeImport is a body of n metrics, about 250 bytes each: histograms,
// timers, sets and counters of distinct names and three tags.
func largeImport(t testing.TB, n int) []byte {
	t.Helper()
	values := make([]float64, 10)
	for i := range values {
		values[i] = float64(i*i) + 0.5
	}
	digest := encode(t, samplers.Forwarded{Type: samplers.HistogramMetric, Name: "x", Digest: digestOf(t, values...)}).Value
	sketch := encode(t, samplers.Forwarded{Type: samplers.SetMetric, Name: "x", Set: sketchOf("a", "b", "c")}).Value
	metrics := make([]JSONMetric, n)
	for i := range metrics {
		m := JSONMetric{Name: fmt.Sprintf("service.request.latency.%d", i), Tags: []string{"env:production", fmt.Sprintf("host:web-%04d", i%1000), "availability-zone:us-east-1a"}}
		switch i % 4 {
		case 0, 1:
			m.Type, m.Value = "histogram", digest
		case 2:
			m.Type, m.Value = "timer", digest
		case 3:
			if i%8 == 3 {
				m.Type, m.Value = "set", sketch
			} else {
				m.Type, m.Value = "counter", counterBytes(float64(i))
			}
		}
		metrics[i] = m
	}
	return marshal(t, metrics)
}

// A legitimate large import, 200,000 metrics in some 50 MB of JSON, is
// accepted whole, merged in parts of about importPartBytes of JSON, in
// order. The peak memory is logged (it includes the metrics the test's
// Merger keeps).
func TestImportLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB of JSON")
	}
	const n = 200_000
	body := largeImport(t, n)
	t.Logf("%d metrics in %s of JSON", n, byteSize(len(body)))
	if len(body) < 40<<20 {
		t.Fatalf("a body of only %d bytes", len(body))
	}
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	var rec *httptest.ResponseRecorder
	measureRSS(t, "a 50 MB import", 300, func() { rec = postImport(t, im, "", body) })
	var resp importResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); rec.Code != http.StatusAccepted || err != nil || resp.Accepted != n || resp.Rejected != 0 {
		t.Fatalf("%d %q", rec.Code, rec.Body.String())
	}
	if calls, parts := m.numCalls(), len(body)/importPartBytes; calls < parts || calls > parts+1 {
		t.Errorf("%d merges, want %d or %d", calls, parts, parts+1)
	}
	got := m.merged()
	if len(got) != n || got[0].Name != "service.request.latency.0" || got[n-1].Name != fmt.Sprintf("service.request.latency.%d", n-1) {
		t.Errorf("merged %d metrics", len(got))
	}
	types := map[samplers.MetricType]int{}
	for i := range got {
		types[got[i].Type]++
	}
	if types[samplers.HistogramMetric] != n/2 || types[samplers.TimerMetric] != n/4 || types[samplers.SetMetric] != n/8 || types[samplers.CounterMetric] != n/8 {
		t.Errorf("merged %v", types)
	}
}

// Four such imports at once are all accepted (at most MaxConcurrency are
// served at once). The peak memory is logged, and asserted under rssEnv:
// under 500 MiB, as each holds a part at most (a Merger that kept the
// metrics would hold them too).
func TestImportLargeAtOnce(t *testing.T) {
	if testing.Short() || raceDetector {
		t.Skip("4 × 50 MB of JSON: a measure, too slow with the race detector")
	}
	const n, at = 200_000, 4
	body := deflate(largeImport(t, n))
	m := &countingMerger{}
	im := NewImporter(m, ImporterConfig{MaxConcurrency: at})
	codes := make([]int, at)
	measureRSS(t, fmt.Sprintf("%d imports of 50 MB at once (deflated to %s)", at, byteSize(len(body))), 500, func() {
		var wg sync.WaitGroup
		for i := range at {
			wg.Go(func() { codes[i] = postImport(t, im, "deflate", body).Code })
		}
		wg.Wait()
	})
	for i, code := range codes {
		if code != http.StatusAccepted {
			t.Errorf("import %d: %d", i, code)
		}
	}
	if got := m.n.Load(); got != at*n {
		t.Errorf("merged %d metrics, want %d", got, at*n)
	}
}

// countingMerger counts the metrics it is given, and keeps none.
type countingMerger struct{ n atomic.Int64 }

func (m *countingMerger) Merge(metrics []samplers.Forwarded) error {
	m.n.Add(int64(len(metrics)))
	return nil
}
