package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/veneur/veneur/internal/statstest"
)

// answer is how the stand-in API answers one attempt.
type answer struct {
	status     int    // 0 means 200
	retryAfter string // the Retry-After header, when set
	// hold, when set, delays the answer until it closes; when the client
	// gives up first, there is no answer.
	hold chan struct{}
}

// standIn is a stand-in destination. A request's body names it; script
// picks the answer from the body and its attempt number (1 for the
// first). It records what it accepted, in order.
type standIn struct {
	t      *testing.T
	srv    *httptest.Server
	script func(body string, attempt int) answer

	mu          sync.Mutex
	attempts    map[string]int
	times       map[string][]time.Time // when each attempt arrived
	headers     map[string][]string    // X-Test-Id of each attempt
	accepted    []string
	inFlight    int
	maxInFlight int
	// arrivals gets each body as it arrives, when not nil.
	arrivals chan string
	// check runs on each arrival, under mu, with what was accepted
	// before it.
	check func(body string, accepted []string)
}

func newStandIn(t *testing.T, script func(body string, attempt int) answer) *standIn {
	t.Helper()
	s := &standIn{t: t, script: script, attempts: map[string]int{}, times: map[string][]time.Time{}, headers: map[string][]string{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *standIn) serve(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	body := string(b)
	s.mu.Lock()
	s.attempts[body]++
	n := s.attempts[body]
	s.times[body] = append(s.times[body], time.Now())
	s.headers[body] = append(s.headers[body], r.Header.Get("X-Test-Id"))
	if s.check != nil {
		s.check(body, s.accepted)
	}
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	arrivals := s.arrivals
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	if arrivals != nil {
		arrivals <- body
	}
	a := answer{}
	if s.script != nil {
		a = s.script(body, n)
	}
	if a.hold != nil {
		select {
		case <-a.hold:
		case <-r.Context().Done():
			return
		}
	}
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	status := a.status
	if status == 0 {
		status = http.StatusOK
	}
	if status/100 == 2 {
		s.mu.Lock()
		s.accepted = append(s.accepted, body)
		s.mu.Unlock()
	}
	w.WriteHeader(status)
	io.WriteString(w, "answer "+strconv.Itoa(status))
}

func (s *standIn) acceptedBodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.accepted)
}

func (s *standIn) attemptsOf(body string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[body]
}

// fastConfig retries at once, nearly: backoffs of a few milliseconds.
func fastConfig() DeliveryConfig {
	return DeliveryConfig{
		MaxBytes: 1 << 20, MaxAge: time.Minute, Concurrency: 4, Timeout: 10 * time.Second,
		BackoffInitial: time.Millisecond, BackoffMax: 4 * time.Millisecond,
	}
}

// testQueue returns a queue to s, with its log hook and stats. The test
// closes it at the end if it did not.
func testQueue(t *testing.T, s *standIn, cfg DeliveryConfig) (*Queue, *test.Hook) {
	t.Helper()
	log, hook := test.NewNullLogger()
	q := NewQueue("test", &Poster{Client: s.srv.Client()}, cfg, Env{Log: log, Common: Common{Interval: time.Second}}, "x")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		q.Close(ctx)
	})
	return q, hook
}

// itemsPer is the Count of every request of these tests, so that counts of
// items differ from counts of requests.
const itemsPer = 7

// requests are the deliveries whose bodies are names, to s.
func requests(s *standIn, names ...string) []Delivery {
	out := make([]Delivery, len(names))
	for i, n := range names {
		out[i] = Delivery{
			Request: Request{Method: http.MethodPost, URL: s.srv.URL + "/in", What: "the test API", Body: []byte(n)},
			Count:   itemsPer,
		}
	}
	return out
}

// eventually polls cond until it holds, and fails the test after 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func closeQueue(t *testing.T, q *Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// counts are the self-metrics a Report sent, by name and cause.
func report(q *Queue) *statstest.Recorder {
	rec := &statstest.Recorder{}
	q.Report(rec)
	return rec
}

func wantCount(t *testing.T, rec *statstest.Recorder, want int64, name string, tags ...string) {
	t.Helper()
	if got := rec.Sum(name, append(tags, "destination:test")...); got != want {
		t.Errorf("%s %v = %d, want %d", name, tags, got, want)
	}
}

func TestQueueRetries5xxThenDelivers(t *testing.T) {
	s := newStandIn(t, func(body string, n int) answer {
		if body == "a" && n <= 3 {
			return answer{status: http.StatusInternalServerError}
		}
		return answer{}
	})
	q, hook := testQueue(t, s, fastConfig())
	q.Send(requests(s, "a", "b")...)
	closeQueue(t, q)

	got := s.acceptedBodies()
	slices.Sort(got)
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("accepted %q, want a and b once each", got)
	}
	if n := s.attemptsOf("a"); n != 4 {
		t.Errorf("a was sent %d times, want 4", n)
	}
	rec := report(q)
	wantCount(t, rec, 2*itemsPer, "x.post_metrics_total")
	wantCount(t, rec, 3, "x.retry_total")
	wantCount(t, rec, 3, "x.error_total", "cause:response")
	wantCount(t, rec, 0, "x.dropped_total")
	if v, ok := rec.GaugeValue("x.spool_bytes", "destination:test"); !ok || v != 0 {
		t.Errorf("x.spool_bytes = %v (%v), want 0", v, ok)
	}
	e := hook.AllEntries()
	if len(e) == 0 || e[0].Level != logrus.ErrorLevel || !strings.Contains(e[0].Message, "sending to the test API failed; retrying in ") ||
		!strings.Contains(fmt.Sprint(e[0].Data[logrus.ErrorKey]), "500") {
		t.Errorf("first log entry %+v, want the 500 and the retry", e)
	}
}

func TestQueueHonoursRetryAfter(t *testing.T) {
	s := newStandIn(t, func(body string, n int) answer {
		if n == 1 {
			return answer{status: http.StatusTooManyRequests, retryAfter: "1"}
		}
		return answer{}
	})
	q, hook := testQueue(t, s, fastConfig())
	q.Send(requests(s, "a")...)
	closeQueue(t, q)
	if got := s.acceptedBodies(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("accepted %q", got)
	}
	s.mu.Lock()
	times := s.times["a"]
	s.mu.Unlock()
	// The backoff alone would retry within milliseconds.
	if gap := times[1].Sub(times[0]); gap < time.Second {
		t.Errorf("retried %s after the 429, want at least the 1s of Retry-After", gap)
	}
	if e := hook.LastEntry(); e == nil || !strings.HasSuffix(e.Message, "retrying in 1s") {
		t.Errorf("log entry %+v, want one that says retrying in 1s", e)
	}
	wantCount(t, report(q), 1, "x.retry_total")
}

// An API that hangs past the client's timeout is tried again; what it
// never answered is not counted as delivered.
func TestQueueRetriesAfterTimeout(t *testing.T) {
	never := make(chan struct{})
	s := newStandIn(t, func(body string, n int) answer {
		if n == 1 {
			return answer{hold: never}
		}
		return answer{}
	})
	log, _ := test.NewNullLogger()
	client := &http.Client{Timeout: 100 * time.Millisecond}
	q := NewQueue("test", &Poster{Client: client}, fastConfig(), Env{Log: log}, "x")
	q.Send(requests(s, "a")...)
	closeQueue(t, q)
	if got := s.acceptedBodies(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("accepted %q, want a once", got)
	}
	if n := s.attemptsOf("a"); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
	rec := report(q)
	wantCount(t, rec, itemsPer, "x.post_metrics_total")
	wantCount(t, rec, 1, "x.error_total", "cause:post")
	wantCount(t, rec, 1, "x.retry_total")
}

// A 4xx other than 429 is dropped at once; 429 and 5xx are retried.
func TestQueueRetriesOrDropsByStatus(t *testing.T) {
	for _, c := range []struct {
		status int
		retry  bool
	}{
		{http.StatusBadRequest, false},
		{http.StatusUnauthorized, false},
		{http.StatusForbidden, false},
		{http.StatusNotFound, false},
		{http.StatusRequestEntityTooLarge, false},
		{http.StatusTooManyRequests, true},
		{http.StatusInternalServerError, true},
		{http.StatusBadGateway, true},
		{http.StatusServiceUnavailable, true},
	} {
		t.Run(strconv.Itoa(c.status), func(t *testing.T) {
			s := newStandIn(t, func(body string, n int) answer {
				if body == "bad" && n == 1 {
					return answer{status: c.status}
				}
				return answer{}
			})
			q, hook := testQueue(t, s, fastConfig())
			q.Send(requests(s, "ok1", "bad", "ok2")...)
			closeQueue(t, q)
			got := s.acceptedBodies()
			slices.Sort(got)
			rec := report(q)
			if c.retry {
				if !slices.Equal(got, []string{"bad", "ok1", "ok2"}) || s.attemptsOf("bad") != 2 {
					t.Errorf("accepted %q after %d attempts of bad, want all, bad retried once", got, s.attemptsOf("bad"))
				}
				wantCount(t, rec, 3*itemsPer, "x.post_metrics_total")
				wantCount(t, rec, 0, "x.dropped_total")
				return
			}
			if !slices.Equal(got, []string{"ok1", "ok2"}) || s.attemptsOf("bad") != 1 {
				t.Errorf("accepted %q after %d attempts of bad, want ok1 and ok2, bad sent once", got, s.attemptsOf("bad"))
			}
			wantCount(t, rec, 2*itemsPer, "x.post_metrics_total")
			wantCount(t, rec, itemsPer, "x.dropped_total", "cause:rejected_4xx")
			wantCount(t, rec, 0, "x.retry_total")
			if e := hook.LastEntry(); e == nil || !strings.HasSuffix(e.Message, "dropped (rejected_4xx)") {
				t.Errorf("log entry %+v, want one that says dropped (rejected_4xx)", e)
			}
		})
	}
}

// Generation k+1 starts only when every request of generation k is
// settled, whatever fails on the way; within one, requests go out at
// most Concurrency at once.
func TestQueueKeepsGenerationOrder(t *testing.T) {
	const gens, per = 6, 7
	gen := func(body string) int { g, _, _ := strings.Cut(body, "."); n, _ := strconv.Atoi(g); return n }
	s := newStandIn(t, func(body string, n int) answer {
		// Every third request fails its first two attempts.
		if _, r, _ := strings.Cut(body, "."); r == "0" || r == "3" || r == "6" {
			if n <= 2 {
				return answer{status: http.StatusServiceUnavailable}
			}
		}
		return answer{}
	})
	s.check = func(body string, accepted []string) {
		g := gen(body)
		done := 0
		for _, a := range accepted {
			if gen(a) < g {
				done++
			}
		}
		if done != g*per {
			s.t.Errorf("%s arrived when %d requests of the generations before were delivered, want %d", body, done, g*per)
		}
	}
	cfg := fastConfig()
	cfg.Concurrency = 3
	q, _ := testQueue(t, s, cfg)
	for g := range gens {
		var names []string
		for r := range per {
			names = append(names, fmt.Sprintf("%d.%d", g, r))
		}
		q.Send(requests(s, names...)...)
	}
	closeQueue(t, q)
	got := s.acceptedBodies()
	if len(got) != gens*per {
		t.Fatalf("%d accepted, want %d: %q", len(got), gens*per, got)
	}
	seen := map[string]bool{}
	for i, b := range got {
		if seen[b] {
			t.Errorf("%s delivered twice", b)
		}
		seen[b] = true
		if i > 0 && gen(b) < gen(got[i-1]) {
			t.Errorf("%s delivered after %s", b, got[i-1])
		}
	}
	s.mu.Lock()
	most := s.maxInFlight
	s.mu.Unlock()
	if most > 3 {
		t.Errorf("%d requests in flight at once, want at most 3", most)
	}
	rec := report(q)
	wantCount(t, rec, gens*per*itemsPer, "x.post_metrics_total")
	wantCount(t, rec, gens*3*2, "x.retry_total")
}

// body is a body of n bytes that starts with name.
func body(name string, n int) string { return name + strings.Repeat(".", n-len(name)) }

// A destination down for longer than the spool holds: the oldest waiting
// requests go, the one in flight stays.
func TestQueueSpoolFullDropsOldest(t *testing.T) {
	release := make(chan struct{})
	s := newStandIn(t, func(b string, n int) answer {
		if strings.HasPrefix(b, "g1") {
			return answer{hold: release}
		}
		return answer{}
	})
	s.arrivals = make(chan string, 10)
	cfg := fastConfig()
	cfg.MaxBytes = 300
	q, hook := testQueue(t, s, cfg)
	q.Send(requests(s, body("g1", 100))...)
	if got := <-s.arrivals; got != body("g1", 100) {
		t.Fatalf("first arrival %q", got)
	}
	for _, g := range []string{"g2", "g3", "g4", "g5"} {
		q.Send(requests(s, body(g, 100))...)
	}
	rec := report(q)
	wantCount(t, rec, 2*itemsPer, "x.dropped_total", "cause:spool_full")
	if v, _ := rec.GaugeValue("x.spool_bytes", "destination:test"); v != 300 {
		t.Errorf("x.spool_bytes = %v, want 300", v)
	}
	if e := hook.LastEntry(); e == nil || !strings.Contains(e.Message, "dropped (spool_full)") {
		t.Errorf("log entry %+v, want one that says dropped (spool_full)", e)
	}
	close(release)
	closeQueue(t, q)
	want := []string{body("g1", 100), body("g4", 100), body("g5", 100)}
	if got := s.acceptedBodies(); !slices.Equal(got, want) {
		t.Errorf("accepted %q, want %q", got, want)
	}
	for _, g := range []string{"g2", "g3"} {
		if n := s.attemptsOf(body(g, 100)); n != 0 {
			t.Errorf("%s dropped but sent %d times", g, n)
		}
	}
	wantCount(t, report(q), 3*itemsPer, "x.post_metrics_total")
}

// A body larger than the whole spool is dropped alone, and what waits
// stays.
func TestQueueBodyLargerThanSpool(t *testing.T) {
	release := make(chan struct{})
	s := newStandIn(t, func(b string, n int) answer { return answer{hold: release} })
	cfg := fastConfig()
	cfg.MaxBytes = 300
	cfg.Concurrency = 1
	q, _ := testQueue(t, s, cfg)
	q.Send(requests(s, body("a", 100), body("b", 100))...)
	q.Send(requests(s, body("huge", 301))...)
	wantCount(t, report(q), itemsPer, "x.dropped_total", "cause:spool_full")
	close(release)
	closeQueue(t, q)
	if got := s.acceptedBodies(); !slices.Equal(got, []string{body("a", 100), body("b", 100)}) {
		t.Errorf("accepted %q", got)
	}
}

// A request waiting behind a slow one past MaxAge is dropped without
// being sent; one retried past MaxAge is dropped too.
func TestQueueDropsTooOld(t *testing.T) {
	t.Run("waiting", func(t *testing.T) {
		release := make(chan struct{})
		s := newStandIn(t, func(b string, n int) answer {
			if b == "first" {
				return answer{hold: release}
			}
			return answer{}
		})
		s.arrivals = make(chan string, 10)
		cfg := fastConfig()
		cfg.MaxAge = 100 * time.Millisecond
		q, _ := testQueue(t, s, cfg)
		q.Send(requests(s, "first")...)
		<-s.arrivals
		q.Send(requests(s, "second")...)
		rec := &statstest.Recorder{}
		eventually(t, "the second request to be dropped", func() bool {
			q.Report(rec)
			return rec.Sum("x.dropped_total", "cause:too_old") > 0
		})
		close(release)
		closeQueue(t, q)
		if got := s.acceptedBodies(); !slices.Equal(got, []string{"first"}) || s.attemptsOf("second") != 0 {
			t.Errorf("accepted %q, second sent %d times; want first alone", got, s.attemptsOf("second"))
		}
		q.Report(rec)
		wantCount(t, rec, itemsPer, "x.dropped_total", "cause:too_old")
		wantCount(t, rec, itemsPer, "x.post_metrics_total")
	})
	t.Run("retried", func(t *testing.T) {
		s := newStandIn(t, func(b string, n int) answer { return answer{status: http.StatusBadGateway} })
		cfg := fastConfig()
		cfg.MaxAge = 100 * time.Millisecond
		cfg.BackoffInitial, cfg.BackoffMax = 10*time.Millisecond, 20*time.Millisecond
		q, hook := testQueue(t, s, cfg)
		q.Send(requests(s, "a")...)
		rec := &statstest.Recorder{}
		eventually(t, "the request to be dropped", func() bool {
			q.Report(rec)
			return rec.Sum("x.dropped_total", "cause:too_old") > 0
		})
		closeQueue(t, q)
		q.Report(rec)
		wantCount(t, rec, itemsPer, "x.dropped_total", "cause:too_old")
		wantCount(t, rec, 0, "x.dropped_total", "cause:shutdown")
		if n := s.attemptsOf("a"); n < 2 {
			t.Errorf("%d attempts, want it retried before it got too old", n)
		}
		if e := hook.LastEntry(); e == nil || !strings.Contains(e.Message, "dropped (too_old)") {
			// The line may be held back by the rate limit; the count
			// above is what matters then.
			if e == nil || !strings.Contains(e.Message, "retrying") {
				t.Errorf("log entry %+v", e)
			}
		}
	})
}

// Send returns at once while the API hangs; Close then gives up at its
// deadline, drops what waits and what is in flight, and leaves no
// goroutine behind.
func TestQueueSendNeverBlocks(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	s := newStandIn(t, func(string, int) answer { return answer{hold: hang} })
	cfg := fastConfig()
	cfg.Concurrency = 2
	log, hook := test.NewNullLogger()
	q := NewQueue("test", &Poster{Client: s.srv.Client()}, cfg, Env{Log: log}, "x")
	const sends = 1000
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range sends {
			q.Send(requests(s, "r"+strconv.Itoa(i))...)
		}
	}()
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("Send blocked while the API hangs")
	}
	// Each Send is a generation of its own: the first is in flight, the
	// others wait behind it.
	eventually(t, "the first request in flight", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.inFlight == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := q.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "1000 requests (7000 items) dropped at shutdown") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want every request dropped at its deadline", err)
	}
	rec := report(q)
	wantCount(t, rec, sends*itemsPer, "x.dropped_total", "cause:shutdown")
	wantCount(t, rec, 0, "x.post_metrics_total")
	if v, _ := rec.GaugeValue("x.spool_bytes", "destination:test"); v != 0 {
		t.Errorf("x.spool_bytes = %v after Close, want 0", v)
	}
	if e := hook.LastEntry(); e == nil || e.Level != logrus.WarnLevel || e.Data["requests"] != sends || e.Data["items"] != sends*itemsPer {
		t.Errorf("log entry %+v, want a warning with the requests and items dropped", e)
	}
	noQueueGoroutines(t)
	// Closed, it takes nothing more.
	q.Send(requests(s, "late")...)
	wantCount(t, report(q), itemsPer, "x.dropped_total", "cause:shutdown")
	if n := s.attemptsOf("late"); n != 0 {
		t.Errorf("a request sent after Close went out")
	}
}

// noQueueGoroutines checks that the queue's goroutines are gone. A
// goroutine whose deferred WaitGroup.Done let Close return may still be on
// its way out for a moment, so a leak is one that stays.
func noQueueGoroutines(t *testing.T) {
	t.Helper()
	eventually(t, "the queue's goroutines to end", func() bool { return queueGoroutines() == 0 })
}

// queueGoroutines counts the goroutines running Queue code.
func queueGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "plugins.(*Queue).run") || strings.Contains(g, "plugins.(*Queue).attempt") {
			n++
		}
	}
	return n
}

// Close delivers what waits when the API comes back within its deadline.
func TestQueueCloseDeliversWhenTheAPIComesBack(t *testing.T) {
	var mu sync.Mutex
	failures := 5
	s := newStandIn(t, func(string, int) answer {
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			return answer{status: http.StatusServiceUnavailable}
		}
		return answer{}
	})
	q, _ := testQueue(t, s, fastConfig())
	q.Send(requests(s, "a1", "a2")...)
	q.Send(requests(s, "b1")...)
	q.Send(requests(s, "c1", "c2", "c3")...)
	closeQueue(t, q)
	got := s.acceptedBodies()
	if len(got) != 6 {
		t.Fatalf("accepted %q, want all 6", got)
	}
	slices.Sort(got[0:2])
	slices.Sort(got[3:6])
	if !slices.Equal(got, []string{"a1", "a2", "b1", "c1", "c2", "c3"}) {
		t.Errorf("accepted %q, want the generations in order", got)
	}
	rec := report(q)
	wantCount(t, rec, 6*itemsPer, "x.post_metrics_total")
	wantCount(t, rec, 0, "x.dropped_total")
	noQueueGoroutines(t)
}

// Close with nothing ever sent returns at once; Send after it drops.
func TestQueueCloseUnused(t *testing.T) {
	s := newStandIn(t, nil)
	q, _ := testQueue(t, s, fastConfig())
	closeQueue(t, q)
	q.Send(requests(s, "a")...)
	if n := s.attemptsOf("a"); n != 0 {
		t.Errorf("sent after Close")
	}
	wantCount(t, report(q), itemsPer, "x.dropped_total", "cause:shutdown")
}

// Headers go out with every attempt, the same each time; OnAccepted runs
// once, for what was accepted only.
func TestQueueHeadersAndOnAccepted(t *testing.T) {
	s := newStandIn(t, func(b string, n int) answer {
		switch {
		case b == "a" && n <= 2:
			return answer{status: http.StatusInternalServerError}
		case b == "rejected":
			return answer{status: http.StatusBadRequest}
		}
		return answer{}
	})
	q, _ := testQueue(t, s, fastConfig())
	var mu sync.Mutex
	calls := map[string]int{}
	ds := requests(s, "a", "rejected")
	for i := range ds {
		ds[i].Header = http.Header{"X-Test-Id": {"id-" + string(ds[i].Body)}}
		name := string(ds[i].Body)
		ds[i].OnAccepted = func() {
			mu.Lock()
			calls[name]++
			mu.Unlock()
		}
	}
	q.Send(ds...)
	closeQueue(t, q)
	s.mu.Lock()
	got := s.headers["a"]
	s.mu.Unlock()
	if !slices.Equal(got, []string{"id-a", "id-a", "id-a"}) {
		t.Errorf("X-Test-Id of the attempts of a: %q", got)
	}
	if calls["a"] != 1 || calls["rejected"] != 0 {
		t.Errorf("OnAccepted calls %v, want a once", calls)
	}
}

// The backoff doubles with failures in a row up to its cap, counts
// failures of requests in flight together once, and restarts after a
// success; each wait lies between half the backoff and all of it.
func TestQueueBackoff(t *testing.T) {
	q := NewQueue("test", &Poster{}, DeliveryConfig{BackoffInitial: 100 * time.Millisecond, BackoffMax: 500 * time.Millisecond}, Env{}, "x")
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for i, c := range []struct {
		start, end int // ms
		backoff    time.Duration
	}{
		{0, 10, 100 * time.Millisecond},
		{5, 11, 100 * time.Millisecond}, // in flight with the first
		{200, 210, 200 * time.Millisecond},
		{500, 510, 400 * time.Millisecond},
		{1000, 1010, 500 * time.Millisecond},
		{2000, 2010, 500 * time.Millisecond},
	} {
		q.resumeAt = time.Time{}
		wait := q.failed(at(c.start), at(c.end), nil)
		if q.backoff != c.backoff || wait < c.backoff/2 || wait > c.backoff {
			t.Errorf("failure %d: backoff %s, wait %s; want backoff %s", i, q.backoff, wait, c.backoff)
		}
	}
	q.backoff = 0 // as a success leaves it
	q.resumeAt = time.Time{}
	if wait := q.failed(at(3000), at(3010), nil); q.backoff != 100*time.Millisecond || wait > 100*time.Millisecond {
		t.Errorf("after a success: backoff %s, wait %s", q.backoff, wait)
	}
	// Retry-After wins, up to MaxAge.
	q.resumeAt = time.Time{}
	if wait := q.failed(at(4000), at(4010), &StatusError{RetryAfter: 3 * time.Second}); wait != 3*time.Second {
		t.Errorf("wait %s, want Retry-After's 3s", wait)
	}
	q.resumeAt = time.Time{}
	if wait := q.failed(at(9000), at(9010), &StatusError{RetryAfter: time.Hour}); wait != q.cfg.MaxAge {
		t.Errorf("wait %s, want MaxAge %s", wait, q.cfg.MaxAge)
	}
}

func TestLogLimiter(t *testing.T) {
	l := logLimiter{every: time.Second}
	t0 := time.Now()
	steps := []struct {
		at         time.Duration
		ok         bool
		suppressed int
	}{
		{0, true, 0},
		{100 * time.Millisecond, false, 0},
		{900 * time.Millisecond, false, 0},
		{time.Second, true, 2},
		{1500 * time.Millisecond, false, 0},
		{5 * time.Second, true, 1},
	}
	for _, s := range steps {
		ok, n := l.allow(t0.Add(s.at))
		if ok != s.ok || n != s.suppressed {
			t.Errorf("at %s: %v, %d; want %v, %d", s.at, ok, n, s.ok, s.suppressed)
		}
	}
}

func TestDeliveryDefaults(t *testing.T) {
	d := DefaultDelivery(10 * time.Second)
	want := DeliveryConfig{MaxBytes: 64 << 20, MaxAge: 100 * time.Second, Concurrency: 4, Timeout: 10 * time.Second,
		BackoffInitial: time.Second, BackoffMax: 10 * time.Second}
	if d != want {
		t.Errorf("DefaultDelivery(10s) = %+v, want %+v", d, want)
	}
	if d := DefaultDelivery(time.Minute); d.BackoffMax != 30*time.Second || d.MaxAge != 10*time.Minute {
		t.Errorf("DefaultDelivery(1m) = %+v, want the backoff capped at 30s", d)
	}
	if d := DefaultDelivery(0); d.MaxAge != 100*time.Second || d.BackoffMax != 10*time.Second {
		t.Errorf("DefaultDelivery(0) = %+v, want that of 10s", d)
	}
	if d := DefaultDelivery(100 * time.Millisecond); d.BackoffMax != time.Second {
		t.Errorf("DefaultDelivery(100ms) = %+v, want the backoff cap no lower than its start", d)
	}
	c := DeliveryConfig{MaxBytes: 5, Concurrency: 2, BackoffInitial: time.Minute}.WithDefaults(10 * time.Second)
	if c.MaxBytes != 5 || c.Concurrency != 2 || c.MaxAge != 100*time.Second || c.BackoffInitial != time.Minute || c.BackoffMax != time.Minute {
		t.Errorf("WithDefaults = %+v", c)
	}
	if err := (DeliveryConfig{}).Validate(); err != nil {
		t.Errorf("the zero config: %v", err)
	}
	err := DeliveryConfig{MaxBytes: -1, MaxAge: -time.Second, Concurrency: -1}.Validate()
	for _, key := range []string{"flush_spool_bytes = -1", "flush_spool_max_age -1s", "flush_max_concurrency = -1"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate = %v, want it to name %s", err, key)
		}
	}
}

// Reclaim gives back the requests a destination that refuses connections
// never received, and keeps those it may have: one that answered.
func TestQueueReclaimGivesBackWhatWasNeverReceived(t *testing.T) {
	// A port nothing listens on: connections are refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/in"
	ln.Close()
	log, _ := test.NewNullLogger()
	cfg := fastConfig()
	cfg.BackoffInitial, cfg.BackoffMax = 5*time.Millisecond, 10*time.Millisecond
	q := NewQueue("test", &Poster{Client: &http.Client{}}, cfg, Env{Log: log}, "x")
	var sent []Delivery
	for _, b := range []string{"a", "b", "c"} {
		sent = append(sent, Delivery{Request: Request{Method: http.MethodPost, URL: dead, What: "a dead global", Body: []byte(b)}, Count: itemsPer})
	}
	q.Send(sent[0])
	q.Send(sent[1], sent[2])
	// Let it fail at least once: refused.
	eventually(t, "a refused attempt", func() bool { return report(q).Sum("x.error_total", "cause:post", "destination:test") > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	back, err := q.Reclaim(ctx)
	if err != nil {
		t.Fatalf("Reclaim: %v", err)
	}
	var bodies []string
	for _, d := range back {
		bodies = append(bodies, string(d.Body))
	}
	slices.Sort(bodies)
	if !slices.Equal(bodies, []string{"a", "b", "c"}) {
		t.Errorf("Reclaim gave back %v, want a, b and c", bodies)
	}
	rec := report(q)
	wantCount(t, rec, 0, "x.dropped_total", "cause:shutdown")

	// A destination that answered 500 may have taken the request: it is
	// not given back, and Close drops it when its time is up.
	s := newStandIn(t, func(string, int) answer { return answer{status: http.StatusInternalServerError} })
	q2, _ := testQueue(t, s, cfg)
	q2.Send(requests(s, "x")...)
	eventually(t, "a failed attempt", func() bool { return s.attemptsOf("x") > 0 })
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	back, _ = q2.Reclaim(ctx2)
	if len(back) != 0 {
		t.Errorf("Reclaim gave back %d requests the destination answered, want none", len(back))
	}
}

func TestNotSentIsFoundThroughWrapping(t *testing.T) {
	err := fmt.Errorf("posting: %w", NotSent(errors.New("connect: connection refused")))
	if !errors.Is(err, ErrNotSent) {
		t.Error("errors.Is(wrapped NotSent, ErrNotSent) = false")
	}
	if errors.Is(errors.New("timeout"), ErrNotSent) {
		t.Error("a plain error is ErrNotSent")
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("NotSent hides the cause: %v", err)
	}
}
