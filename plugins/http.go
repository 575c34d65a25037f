package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
)

// Poster sends the requests of HTTP sinks: the body as it is given
// (compressed by Compress, or not), the status checked, and errors that
// name the destination and quote the start of the answer, never the URL or
// the secret it may carry.
type Poster struct {
	Client *http.Client
	// Secret (an API key, say) is replaced in every error text.
	Secret string
}

// Request is one HTTP request of a sink.
type Request struct {
	Method string
	URL    string
	// What names the destination in errors, e.g. "the Datadog API".
	What string
	Body []byte
	// ContentType and ContentEncoding are sent when not empty.
	ContentType, ContentEncoding string
	// Header holds more headers to send, such as the batch id of a
	// forward. A Queue sends the same Header on every attempt; Send
	// neither changes nor keeps it.
	Header http.Header
}

// StatusError is an answer other than 2xx.
type StatusError struct {
	What string
	Code int
	// Status is the status line, e.g. "503 Service Unavailable".
	Status string
	// Snippet is the start of the answer's body.
	Snippet string
	// RetryAfter is how long the answer's Retry-After header (seconds
	// or an HTTP date) asks the client to wait; 0 when it has none, or
	// none that parses, or a date already past.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s answered %s: %s", e.What, e.Status, e.Snippet)
}

// snippetBytes is how much of an error answer an error quotes.
const snippetBytes = 512

// Send sends r and returns nil for a 2xx answer, a *StatusError for
// another answer, and otherwise the transport's error.
func (p *Poster) Send(ctx context.Context, r Request) error {
	_, err := p.send(ctx, r)
	return err
}

// bodyCloseWait bounds how long send waits, once it has the answer, for
// the transport to close the request body. It normally has (the server
// read the body before it answered); one that answered early may still be
// writing it.
const bodyCloseWait = 100 * time.Millisecond

// send is Send, and also says whether the transport is done with r.Body
// (it closed every reader of it it was given), so that the caller may
// reuse the body's memory. RoundTrip may close a body after it returns.
func (p *Poster) send(ctx context.Context, r Request) (free bool, err error) {
	t := &bodyTracker{b: r.Body}
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, t.reader())
	if err != nil {
		return true, p.redact(fmt.Errorf("%s: %w", r.What, err))
	}
	req.ContentLength = int64(len(r.Body))
	req.GetBody = func() (io.ReadCloser, error) { return t.reader(), nil }
	defer func() { free = t.released(bodyCloseWait) }()
	if r.Header != nil {
		req.Header = r.Header.Clone()
	}
	if r.ContentType != "" {
		req.Header.Set("Content-Type", r.ContentType)
	}
	if r.ContentEncoding != "" {
		req.Header.Set("Content-Encoding", r.ContentEncoding)
	}
	resp, err := p.Client.Do(req)
	if err != nil {
		refused := errors.Is(err, syscall.ECONNREFUSED)
		var ue *url.Error
		if errors.As(err, &ue) {
			err = fmt.Errorf("%s: %w", ue.Op, ue.Err)
		}
		err = p.redact(fmt.Errorf("%s: %w", r.What, err))
		if refused {
			err = NotSent(err)
		}
		return false, err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, snippetBytes))
	// Read a little more so that the connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return false, &StatusError{What: r.What, Code: resp.StatusCode, Status: resp.Status,
			Snippet:    p.scrub(strings.TrimSpace(string(snippet))),
			RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	}
	return false, nil
}

// maxRetryAfter bounds what a Retry-After header is read as, so that a
// huge number of seconds cannot overflow a Duration. A Queue caps the wait
// further, at its MaxAge.
const maxRetryAfter = 24 * time.Hour

// retryAfter reads a Retry-After value, delay-seconds or an HTTP date, as
// the wait it asks for from now; 0 when v is empty, malformed or past.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		// delay-seconds; too many digits for a uint64 is long enough.
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil || secs >= uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(at.Sub(now), 0), maxRetryAfter)
}

// JSON sends v as an uncompressed JSON body.
func (p *Poster) JSON(ctx context.Context, method, url, what string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return p.Send(ctx, Request{Method: method, URL: url, What: what, Body: body, ContentType: "application/json"})
}

func (p *Poster) scrub(s string) string {
	if p.Secret == "" {
		return s
	}
	return strings.ReplaceAll(s, p.Secret, "REDACTED")
}

// ErrNotSent is what errors.Is finds in the error of a send after which
// the destination provably received nothing of the request: it refused
// the connection. A Queue can give such requests back (Reclaim), to be
// sent elsewhere without risk of their being taken twice.
var ErrNotSent = errors.New("the destination received nothing")

// NotSent marks err as ErrNotSent.
func NotSent(err error) error { return notSentError{err} }

type notSentError struct{ error }

func (e notSentError) Is(target error) bool { return target == ErrNotSent }
func (e notSentError) Unwrap() error        { return e.error }

func (p *Poster) redact(err error) error {
	if p.Secret == "" || !strings.Contains(err.Error(), p.Secret) {
		return err
	}
	return errors.New(p.scrub(err.Error()))
}

// Encoding is a Content-Encoding that Compress writes.
type Encoding string

// Encodings Compress writes.
const (
	Deflate Encoding = "deflate" // zlib format, as HTTP's deflate is
	Gzip    Encoding = "gzip"
)

// zlibWriters keeps compressors for Deflate between bodies. Unlike a
// sync.Pool it survives garbage collections: a compressor is a few hundred
// kilobytes of tables, and a flush that had to build them again after
// every collection would allocate as much as it sends.
var zlibWriters = make(chan *zlibWriter, 8)

var gzipWriters sync.Pool // *gzip.Writer at BestSpeed

// Compress appends to dst what write writes, compressed with enc at the
// fastest level, through a pooled compressor: the uncompressed body never
// needs to sit in memory whole.
func Compress(dst *bytes.Buffer, enc Encoding, write func(io.Writer) error) error {
	var zw interface {
		io.WriteCloser
		Reset(io.Writer)
	}
	switch enc {
	case Deflate:
		var w *zlibWriter
		select {
		case w = <-zlibWriters:
		default:
			w = newZlibWriter(dst)
		}
		defer func() {
			select {
			case zlibWriters <- w:
			default:
			}
		}()
		zw = w
	case Gzip:
		w, _ := gzipWriters.Get().(*gzip.Writer)
		if w == nil {
			w, _ = gzip.NewWriterLevel(dst, gzip.BestSpeed)
		}
		defer gzipWriters.Put(w)
		zw = w
	default:
		return fmt.Errorf("unknown encoding %q", enc)
	}
	zw.Reset(dst)
	if err := write(zw); err != nil {
		zw.Close()
		return err
	}
	return zw.Close()
}

// bodyTracker hands out readers of one request body and knows whether
// they are all closed.
type bodyTracker struct {
	b    []byte
	mu   sync.Mutex
	open int
	idle chan struct{} // when set, closed once open drops to 0
}

func (t *bodyTracker) reader() io.ReadCloser {
	t.mu.Lock()
	t.open++
	t.mu.Unlock()
	return &trackedBody{Reader: bytes.NewReader(t.b), t: t}
}

// released waits at most wait for every reader to be closed and says
// whether they are.
func (t *bodyTracker) released(wait time.Duration) bool {
	t.mu.Lock()
	if t.open == 0 {
		t.mu.Unlock()
		return true
	}
	idle := make(chan struct{})
	t.idle = idle
	t.mu.Unlock()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-idle:
		return true
	case <-timer.C:
		return false
	}
}

type trackedBody struct {
	*bytes.Reader
	t    *bodyTracker
	once sync.Once
}

func (b *trackedBody) Close() error {
	b.once.Do(func() {
		t := b.t
		t.mu.Lock()
		t.open--
		if t.open == 0 && t.idle != nil {
			close(t.idle)
			t.idle = nil
		}
		t.mu.Unlock()
	})
	return nil
}
