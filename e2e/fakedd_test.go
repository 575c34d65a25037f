package e2e

import (
	"bytes"
	"compress/zlib"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// apiKey is the key every test daemon is configured with; the stand-in API
// rejects any other.
const apiKey = "e2e-test-api-key"

// maxBodyBytes caps both the compressed and the decompressed size of one
// series body accepted by the stand-in API.
const maxBodyBytes = 32 << 20

// wireBody is the JSON document POSTed to /api/v1/series.
type wireBody struct {
	Series []wireSeries `json:"series"`
}

// wireSeries is one element of the series array exactly as Datadog's v1 API
// accepts it. Pointers tell an absent field from a zero one.
type wireSeries struct {
	Metric     string      `json:"metric"`
	Points     [][]float64 `json:"points"`
	Tags       []string    `json:"tags"`
	Host       *string     `json:"host"`
	DeviceName *string     `json:"device_name"`
	Type       string      `json:"type"`
	Interval   *float64    `json:"interval"`
}

// series is a validated, flattened wireSeries.
type series struct {
	Metric    string
	Timestamp float64
	Value     float64
	Tags      []string
	Host      string
	Device    string
	Type      string
	Interval  float64 // 0 when the field was absent
}

// apiRequest is one POST the stand-in API received.
type apiRequest struct {
	At     time.Time
	Status int // status the stand-in API answered with
	Series []series
}

// fakeDD stands in for the Datadog series API. It validates every request
// against the wire contract, records what it decoded, and lets tests wait
// for series to arrive.
type fakeDD struct {
	srv     *httptest.Server
	created time.Time

	mu       sync.Mutex
	requests []apiRequest
	// events and checks are the decoded bodies posted to /api/v1/events
	// and /api/v1/check_run.
	events     []map[string]any
	checks     []map[string]any
	violations []string
	changed    chan struct{} // closed and replaced on every request
	status     int           // status to answer with
	// script, when not empty, answers the next series requests instead of
	// status, one entry each.
	script []scripted
	// delay is how long every series request takes to answer.
	delay time.Duration

	// Concurrency probe: when holdFor > 1 every request waits until holdFor
	// requests are in flight at once, or until holdMax has passed.
	holdFor     int
	holdMax     time.Duration
	inFlight    int
	maxInFlight int
	release     chan struct{}
}

// newFakeDD starts a stand-in API on 127.0.0.1 and closes it when the test
// ends.
func newFakeDD(t *testing.T) *fakeDD {
	t.Helper()
	f := &fakeDD{
		created: time.Now(),
		changed: make(chan struct{}),
		status:  http.StatusAccepted,
		release: make(chan struct{}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("stand-in API: listen on loopback: %v", err)
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serveHTTP))
	f.srv.Listener.Close()
	f.srv.Listener = ln
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

// URL is the value for the daemon's api_hostname.
func (f *fakeDD) URL() string { return f.srv.URL }

// scripted is one scripted answer: a status (with Retry-After when not
// empty), or, with hang set, no answer until the client gives up.
type scripted struct {
	status     int
	retryAfter string
	hang       bool
}

// failNext makes the next n series requests answer code (with a
// Retry-After header when retryAfter is not empty).
func (f *fakeDD) failNext(n, code int, retryAfter string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.script = append(f.script, scripted{status: code, retryAfter: retryAfter})
	}
}

// hangNext makes the next n series requests hang until the client gives
// up on them.
func (f *fakeDD) hangNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.script = append(f.script, scripted{status: http.StatusGatewayTimeout, hang: true})
	}
}

// setDelay makes every series request take d before it is answered.
func (f *fakeDD) setDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// setStatus makes every later request answer with code.
func (f *fakeDD) setStatus(code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = code
}

// holdUntilConcurrent makes requests wait until n of them are in flight at
// the same time (or limit has passed for the waiting ones).
func (f *fakeDD) holdUntilConcurrent(n int, limit time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holdFor = n
	f.holdMax = limit
}

// peakInFlight is the largest number of requests seen in flight at once.
func (f *fakeDD) peakInFlight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxInFlight
}

func (f *fakeDD) violate(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.violations = append(f.violations, fmt.Sprintf(format, args...))
	f.notifyLocked()
}

func (f *fakeDD) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// assertNoViolations fails the test for every request that broke the wire
// contract.
func (f *fakeDD) assertNoViolations(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.violations {
		t.Errorf("stand-in API: wire contract violation: %s", v)
	}
}

func (f *fakeDD) serveHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	if r.Method != http.MethodPost {
		f.violate("method %s, want POST", r.Method)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == "/api/v1/events" || r.URL.Path == "/api/v1/check_run" {
		f.serveEventAPI(w, r)
		return
	}
	if r.URL.Path != "/api/v1/series" {
		f.violate("path %q, want /api/v1/series", r.URL.Path)
		http.NotFound(w, r)
		return
	}
	if got := r.URL.Query().Get("api_key"); got != apiKey {
		f.violate("api_key query %q, want %q", got, apiKey)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	if got := r.Header.Get("Content-Encoding"); got != "deflate" {
		f.violate("Content-Encoding %q, want deflate", got)
		http.Error(w, "bad encoding", http.StatusBadRequest)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		f.violate("Content-Type %q, want application/json", r.Header.Get("Content-Type"))
		http.Error(w, "bad content type", http.StatusBadRequest)
		return
	}
	compressed, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		f.violate("reading body: %v", err)
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	zr, err := zlib.NewReader(bytes.NewReader(compressed))
	if err != nil {
		f.violate("body is not a zlib stream: %v", err)
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	plain, err := io.ReadAll(io.LimitReader(zr, maxBodyBytes+1))
	if err == nil {
		err = zr.Close()
	}
	if err != nil {
		f.violate("decompressing body: %v", err)
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	if len(plain) > maxBodyBytes {
		f.violate("decompressed body exceeds %d bytes", maxBodyBytes)
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	decoded, problems := decodeSeriesBody(plain, f.created, at)
	for _, p := range problems {
		f.violate("%s", p)
	}
	if decoded == nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}

	f.mu.Lock()
	status := f.status
	var next scripted
	if len(f.script) > 0 {
		next, f.script = f.script[0], f.script[1:]
		status = next.status
	}
	delay := f.delay
	f.requests = append(f.requests, apiRequest{At: at, Status: status, Series: decoded})
	f.notifyLocked()
	holdFor, holdMax := f.holdFor, f.holdMax
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	if f.inFlight >= holdFor && holdFor > 1 {
		select {
		case <-f.release:
		default:
			close(f.release)
		}
	}
	release := f.release
	f.mu.Unlock()

	if holdFor > 1 {
		timer := time.NewTimer(holdMax)
		select {
		case <-release:
		case <-timer.C:
		case <-r.Context().Done():
		}
		timer.Stop()
	}

	f.mu.Lock()
	f.inFlight--
	f.mu.Unlock()

	if next.hang {
		<-r.Context().Done() // the client's timeout ends it
		return
	}
	if delay > 0 {
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-r.Context().Done():
		}
		timer.Stop()
	}
	if next.retryAfter != "" {
		w.Header().Set("Retry-After", next.retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if status < 300 {
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	} else {
		_, _ = io.WriteString(w, `{"errors":["stand-in API failure"]}`)
	}
}

// decodeSeriesBody decodes one decompressed body strictly. It returns nil
// series when the body cannot be decoded at all, and a list of contract
// problems found.
func decodeSeriesBody(plain []byte, notBefore, arrived time.Time) ([]series, []string) {
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.DisallowUnknownFields()
	var body wireBody
	if err := dec.Decode(&body); err != nil {
		return nil, []string{fmt.Sprintf("strict JSON decode of %q: %v", truncate(plain), err)}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, []string{fmt.Sprintf("trailing data after the JSON object in %q", truncate(plain))}
	}
	var problems []string
	if len(body.Series) == 0 {
		problems = append(problems, "POST with an empty series list (nothing to send must mean no POST)")
	}
	lo := float64(notBefore.Unix() - 1)
	hi := float64(arrived.Unix() + 1)
	out := make([]series, 0, len(body.Series))
	for i, ws := range body.Series {
		bad := func(format string, args ...any) {
			problems = append(problems, fmt.Sprintf("series[%d] %q: %s", i, ws.Metric, fmt.Sprintf(format, args...)))
		}
		s := series{Metric: ws.Metric, Tags: ws.Tags, Type: ws.Type}
		if ws.Metric == "" {
			bad("empty metric name")
		}
		if len(ws.Points) != 1 || len(ws.Points[0]) != 2 {
			bad("points %v, want exactly one [timestamp, value] pair", ws.Points)
		} else {
			s.Timestamp, s.Value = ws.Points[0][0], ws.Points[0][1]
			if s.Timestamp != math.Trunc(s.Timestamp) {
				bad("timestamp %v is not whole Unix seconds", s.Timestamp)
			}
			if s.Timestamp < lo || s.Timestamp > hi {
				bad("timestamp %v outside [%v, %v] (test start, arrival)", s.Timestamp, lo, hi)
			}
		}
		if ws.Host == nil {
			bad("host field missing")
		} else {
			s.Host = *ws.Host
		}
		if ws.DeviceName != nil {
			if *ws.DeviceName == "" {
				bad("device_name present but empty; it must be omitted when empty")
			}
			s.Device = *ws.DeviceName
		}
		for _, tag := range ws.Tags {
			if tag == "" {
				bad("empty tag in %q", ws.Tags)
			}
		}
		switch ws.Type {
		case "rate":
			if ws.Interval == nil {
				bad("rate series without interval")
			} else {
				s.Interval = *ws.Interval
			}
		case "gauge":
			if ws.Interval != nil {
				bad("gauge series with interval %v; interval belongs on rate series only", *ws.Interval)
			}
		default:
			bad("type %q, want rate or gauge", ws.Type)
		}
		out = append(out, s)
	}
	return out, problems
}

func truncate(b []byte) string {
	const n = 300
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

// snapshot returns a copy of every request received so far.
func (f *fakeDD) snapshot() []apiRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]apiRequest(nil), f.requests...)
}

// waitFor blocks until done reports true for the requests received so far,
// or fails the test after timeout. It returns the requests done accepted.
func (f *fakeDD) waitFor(t *testing.T, timeout time.Duration, what string, done func([]apiRequest) bool) []apiRequest {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		f.mu.Lock()
		reqs := append([]apiRequest(nil), f.requests...)
		changed := f.changed
		f.mu.Unlock()
		if done(reqs) {
			return reqs
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("stand-in API: waited %v for %s; received %d requests: %s", timeout, what, len(reqs), describe(reqs))
			return nil
		}
	}
}

// waitForSeries waits until some request carries a series called name and
// returns the index of the first such request.
func (f *fakeDD) waitForSeries(t *testing.T, timeout time.Duration, name string) (int, []apiRequest) {
	t.Helper()
	reqs := f.waitFor(t, timeout, "series "+name, func(rs []apiRequest) bool {
		return firstRequestWith(rs, name) >= 0
	})
	return firstRequestWith(reqs, name), reqs
}

// firstRequestWith is the index of the first request that holds a series
// called name, or -1.
func firstRequestWith(reqs []apiRequest, name string) int {
	for i, r := range reqs {
		for _, s := range r.Series {
			if s.Metric == name {
				return i
			}
		}
	}
	return -1
}

// allSeries flattens the series of every request.
func allSeries(reqs []apiRequest) []series {
	var out []series
	for _, r := range reqs {
		out = append(out, r.Series...)
	}
	return out
}

// describe renders requests compactly for failure messages.
func describe(reqs []apiRequest) string {
	var b strings.Builder
	for i, r := range reqs {
		fmt.Fprintf(&b, "\n  request %d (status %d, %d series):", i, r.Status, len(r.Series))
		for _, s := range r.Series {
			fmt.Fprintf(&b, "\n    %s", s)
		}
	}
	return b.String()
}

func (s series) String() string {
	iv := ""
	if s.Interval != 0 {
		iv = fmt.Sprintf(" interval=%v", s.Interval)
	}
	dev := ""
	if s.Device != "" {
		dev = " device=" + s.Device
	}
	return fmt.Sprintf("%s %s value=%v tags=%q host=%s%s%s", s.Metric, s.Type, s.Value, s.Tags, s.Host, dev, iv)
}

// serveEventAPI takes an event (one JSON object) or service checks (a JSON
// array) as the Datadog API does, and records them.
func (f *fakeDD) serveEventAPI(w http.ResponseWriter, r *http.Request) {
	if got := r.URL.Query().Get("api_key"); got != apiKey {
		f.violate("%s: api_key query %q, want %q", r.URL.Path, got, apiKey)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		f.violate("%s: Content-Type %q, want application/json", r.URL.Path, r.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		f.violate("%s: reading body: %v", r.URL.Path, err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path == "/api/v1/events" {
		var e map[string]any
		if err := json.Unmarshal(body, &e); err != nil {
			f.violate("/api/v1/events: body %q is not one JSON object: %v", truncate(body), err)
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		f.events = append(f.events, e)
	} else {
		var cs []map[string]any
		if err := json.Unmarshal(body, &cs); err != nil {
			f.violate("/api/v1/check_run: body %q is not a JSON array: %v", truncate(body), err)
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		f.checks = append(f.checks, cs...)
	}
	f.notifyLocked()
	w.WriteHeader(http.StatusAccepted)
	w.Write([]byte(`{"status":"ok"}`))
}

// eventsAndChecks returns what serveEventAPI recorded.
func (f *fakeDD) eventsAndChecks() (events, checks []map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events), slices.Clone(f.checks)
}
