package plugins

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// received is one request a test server saw.
type received struct {
	method, path, query, contentType, contentEncoding string
	body                                              []byte
}

// server answers every request with status and answer, and sends what it
// received on the returned channel.
func server(t *testing.T, status int, answer string) (*httptest.Server, <-chan received) {
	t.Helper()
	got := make(chan received, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- received{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding"), b}
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func TestPosterSendOK(t *testing.T) {
	srv, got := server(t, http.StatusAccepted, `{"status":"ok"}`)
	p := &Poster{Client: srv.Client(), Secret: "s3cret"}
	err := p.Send(context.Background(), Request{
		Method: http.MethodPut, URL: srv.URL + "/x?k=s3cret", What: "the test API", Body: []byte("hello"),
		ContentType: "text/plain", ContentEncoding: "identity",
	})
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	want := received{http.MethodPut, "/x", "k=s3cret", "text/plain", "identity", []byte("hello")}
	if r.method != want.method || r.path != want.path || r.query != want.query || r.contentType != want.contentType ||
		r.contentEncoding != want.contentEncoding || !bytes.Equal(r.body, want.body) {
		t.Errorf("server got %+v, want %+v", r, want)
	}
}

func TestPosterJSON(t *testing.T) {
	srv, got := server(t, http.StatusOK, "")
	p := &Poster{Client: srv.Client()}
	if err := p.JSON(context.Background(), http.MethodPost, srv.URL+"/j", "the test API", map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.method != http.MethodPost || r.contentType != "application/json" || r.contentEncoding != "" || string(r.body) != `{"a":1}` {
		t.Errorf("server got %+v", r)
	}
	if err := p.JSON(context.Background(), http.MethodPost, srv.URL, "the test API", func() {}); err == nil || !strings.HasPrefix(err.Error(), "the test API: ") {
		t.Errorf("err = %v, want a marshalling error naming the destination", err)
	}
}

func TestPosterStatusError(t *testing.T) {
	long := strings.Repeat("x", 2*snippetBytes)
	srv, _ := server(t, http.StatusInternalServerError, "  broken s3cret "+long)
	p := &Poster{Client: srv.Client(), Secret: "s3cret"}
	err := p.Send(context.Background(), Request{Method: http.MethodPost, URL: srv.URL, What: "the test API"})
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v (%T), want a *StatusError", err, err)
	}
	if se.Code != 500 || se.Status != "500 Internal Server Error" || se.What != "the test API" {
		t.Errorf("StatusError = %+v", se)
	}
	// The first snippetBytes bytes of the answer, the secret replaced and
	// the spaces trimmed.
	wantSnippet := "broken REDACTED " + strings.Repeat("x", snippetBytes-len("  broken s3cret "))
	if se.Snippet != wantSnippet {
		t.Errorf("snippet = %q, want %q", se.Snippet, wantSnippet)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "the test API answered 500 Internal Server Error: broken REDACTED xxx") || strings.Contains(msg, "s3cret") {
		t.Errorf("err = %q", msg)
	}
}

// Request.Header goes out as it is, beside Content-Type and
// Content-Encoding, and Send leaves it unchanged.
func TestPosterSendsHeader(t *testing.T) {
	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
	}))
	defer srv.Close()
	h := http.Header{"X-Batch": {"b1"}, "X-Two": {"1", "2"}}
	p := &Poster{Client: srv.Client()}
	err := p.Send(context.Background(), Request{Method: http.MethodPost, URL: srv.URL, What: "the test API",
		ContentType: "application/json", Header: h})
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.Get("X-Batch") != "b1" || strings.Join(r.Values("X-Two"), ",") != "1,2" || r.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", r)
	}
	if len(h) != 2 || h.Get("Content-Type") != "" {
		t.Errorf("Send changed the request's Header: %v", h)
	}
}

// A 429 or 503 carries its Retry-After in the StatusError.
func TestPosterRetryAfter(t *testing.T) {
	for _, c := range []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"2", 2 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"soon", 0},
		{"-3", 0},
		{"99999999999999999999", maxRetryAfter},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c.header != "" {
				w.Header().Set("Retry-After", c.header)
			}
			w.WriteHeader(http.StatusTooManyRequests)
		}))
		p := &Poster{Client: srv.Client()}
		err := p.Send(context.Background(), Request{Method: http.MethodPost, URL: srv.URL, What: "the test API"})
		srv.Close()
		var se *StatusError
		if !errors.As(err, &se) || se.Code != 429 || se.RetryAfter != c.want {
			t.Errorf("Retry-After %q: %v (%+v), want a 429 with RetryAfter %s", c.header, err, se, c.want)
		}
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		header string
		want   time.Duration
	}{
		{"Fri, 02 Jan 2026 03:04:35 GMT", 30 * time.Second},
		{"Friday, 02-Jan-26 03:04:15 GMT", 10 * time.Second}, // RFC 850
		{"Fri Jan  2 03:05:05 2026", time.Minute},            // ANSI C
		{"Fri, 02 Jan 2026 03:00:00 GMT", 0},                 // past
		{"Sat, 02 Jan 2027 03:04:05 GMT", maxRetryAfter},
	} {
		if got := retryAfter(c.header, now); got != c.want {
			t.Errorf("retryAfter(%q) = %s, want %s", c.header, got, c.want)
		}
	}
}

// roundTripFunc is an http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestPosterRedactsTransportErrors(t *testing.T) {
	// A transport whose error quotes the URL, key and all.
	quoting := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return nil, errors.New("cannot reach " + r.URL.String())
	})}
	// A server that is gone.
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	for _, c := range []struct {
		name   string
		client *http.Client
		url    string
	}{
		{"quoting transport", quoting, "http://127.0.0.1:1/x?api_key=s3cret"},
		{"closed server", gone.Client(), gone.URL + "/x?api_key=s3cret"},
		{"bad URL", http.DefaultClient, "http://[::1/x?api_key=s3cret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &Poster{Client: c.client, Secret: "s3cret"}
			err := p.Send(context.Background(), Request{Method: http.MethodPost, URL: c.url, What: "the test API"})
			if err == nil {
				t.Fatal("no error")
			}
			if msg := err.Error(); strings.Contains(msg, "s3cret") || !strings.HasPrefix(msg, "the test API: ") {
				t.Errorf("err = %q, want one naming the destination, without the secret", msg)
			}
		})
	}
}

func TestCompressRoundTrips(t *testing.T) {
	readers := map[Encoding]func(io.Reader) (io.ReadCloser, error){
		Deflate: func(r io.Reader) (io.ReadCloser, error) { return zlib.NewReader(r) },
		Gzip:    func(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) },
	}
	for enc, newReader := range readers {
		t.Run(string(enc), func(t *testing.T) {
			// Several rounds, so that pooled compressors are reused, each
			// into a buffer that already holds something.
			for i := range 3 {
				want := strings.Repeat("some text to compress ", 1000*(i+1))
				dst := bytes.NewBufferString("prefix")
				err := Compress(dst, enc, func(w io.Writer) error {
					_, err := io.WriteString(w, want)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(dst.Bytes(), []byte("prefix")) {
					t.Fatal("Compress overwrote what dst held")
				}
				zr, err := newReader(bytes.NewReader(dst.Bytes()[len("prefix"):]))
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(zr)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != want {
					t.Errorf("round %d: got %d bytes back, want %d", i, len(got), len(want))
				}
			}
		})
	}
}

func TestCompressErrors(t *testing.T) {
	var dst bytes.Buffer
	if err := Compress(&dst, "br", func(io.Writer) error { return nil }); err == nil {
		t.Error("an unknown encoding was accepted")
	}
	boom := errors.New("boom")
	if err := Compress(&dst, Gzip, func(io.Writer) error { return boom }); err != boom {
		t.Errorf("err = %v, want the writer's error", err)
	}
}
