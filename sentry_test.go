package veneur

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
)

// fakeSentry stands in for a Sentry server: it keeps the body of every
// envelope posted to project 1.
type fakeSentry struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []string
}

func newFakeSentry(t *testing.T) *fakeSentry {
	f := &fakeSentry{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/1/envelope/" {
			t.Errorf("Sentry request to %s", r.URL.Path)
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				t.Errorf("gzip body: %v", err)
				return
			}
			body = zr
		}
		b, _ := io.ReadAll(body)
		f.mu.Lock()
		f.bodies = append(f.bodies, string(b))
		f.mu.Unlock()
		w.Write([]byte(`{"id":"0"}`))
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeSentry) dsn() string {
	return "http://publickey@" + strings.TrimPrefix(f.srv.URL, "http://") + "/1"
}

func (f *fakeSentry) all() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.bodies, "\n")
}

// A body the API refuses is logged as an error, and so reaches Sentry with
// the error and the release.
func TestSentryReceivesErrors(t *testing.T) {
	fs := newFakeSentry(t)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusBadRequest)
	}))
	defer api.Close()
	cfg := testConfig(t, "sentry_dsn: "+fs.dsn()+"\napi_hostname: "+api.URL+"\nkey: k\n")
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := NewFromConfig(cfg, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	sendUDP(t, s.UDPAddr(), "x:1|c")
	shutdown(t, s) // flushes, waits for the sink and flushes Sentry
	got := fs.all()
	for _, want := range []string{`"message":"sending to the Datadog API failed; dropped (rejected_4xx)"`, "400 Bad Request", `"release":"` + VERSION + `"`, `"server_name":"box"`} {
		if !strings.Contains(got, want) {
			t.Errorf("Sentry received no %s:\n%s", want, got)
		}
	}
}

// A panic in a server goroutine is reported to Sentry, then goes on.
func TestSentryGuard(t *testing.T) {
	fs := newFakeSentry(t)
	s := newServer(t, "sentry_dsn: "+fs.dsn()+"\n")
	repanicked := make(chan any, 1)
	go func() {
		defer func() { repanicked <- recover() }()
		defer s.guard()
		panic("kaboom in a worker")
	}()
	if p := <-repanicked; p != "kaboom in a worker" {
		t.Fatalf("recovered %v after guard, want the panic to go on", p)
	}
	if got := fs.all(); !strings.Contains(got, "kaboom in a worker") {
		t.Errorf("Sentry did not receive the panic:\n%s", got)
	}
}

func TestSentryDSNValidated(t *testing.T) {
	_, err := ParseConfig([]byte("udp_address: 127.0.0.1:0\nsentry_dsn: 'not a dsn'\n"))
	if err == nil || !strings.Contains(err.Error(), "sentry_dsn") {
		t.Errorf("err = %v, want one naming sentry_dsn", err)
	}
}
