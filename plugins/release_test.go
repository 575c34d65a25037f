package plugins

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"
)

// releases counts the Release calls of each request body.
type releases struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *releases) of(body string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[body]
}

// track sets a Release on each delivery that counts per body.
func (r *releases) track(ds []Delivery) []Delivery {
	r.mu.Lock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.mu.Unlock()
	for i := range ds {
		body := string(ds[i].Body)
		ds[i].Release = func() {
			r.mu.Lock()
			r.n[body]++
			r.mu.Unlock()
		}
	}
	return ds
}

// A delivered body, one the destination refused for good, and one that
// grew too old while it was retried are each released once, after their
// last attempt.
func TestQueueReleasesSettledBodies(t *testing.T) {
	s := newStandIn(t, func(body string, attempt int) answer {
		switch {
		case body == "refused":
			return answer{status: http.StatusBadRequest}
		case body == "old":
			return answer{status: http.StatusInternalServerError}
		case body == "retried" && attempt == 1:
			return answer{status: http.StatusServiceUnavailable}
		}
		return answer{}
	})
	cfg := fastConfig()
	cfg.MaxAge = 200 * time.Millisecond
	q, _ := testQueue(t, s, cfg)
	var rel releases
	q.Send(rel.track(requests(s, "delivered", "refused", "retried", "old"))...)
	eventually(t, "every request settled", func() bool {
		return rel.of("delivered") > 0 && rel.of("refused") > 0 && rel.of("retried") > 0 && rel.of("old") > 0
	})
	closeQueue(t, q)
	rec := report(q)
	wantCount(t, rec, 2*itemsPer, "x.post_metrics_total")
	wantCount(t, rec, itemsPer, "x.dropped_total", "cause:rejected_4xx")
	wantCount(t, rec, itemsPer, "x.dropped_total", "cause:too_old")
	for _, b := range []string{"delivered", "refused", "retried", "old"} {
		if n := rel.of(b); n != 1 {
			t.Errorf("%s released %d times, want once", b, n)
		}
	}
}

// holdingTransport answers 200 at once and keeps the request bodies it is
// given open until release is called, as a transport still writing a body
// after an early answer does.
type holdingTransport struct {
	mu     sync.Mutex
	bodies []io.ReadCloser
}

func (h *holdingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.bodies = append(h.bodies, r.Body)
	h.mu.Unlock()
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: r}, nil
}

func (h *holdingTransport) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.bodies {
		b.Close()
	}
	h.bodies = nil
}

// A body the transport has not closed when the answer came is never
// released, even once the transport closes it: the Queue cannot know when
// it will stop reading.
func TestQueueKeepsBodiesTheTransportHolds(t *testing.T) {
	ht := &holdingTransport{}
	p := &Poster{Client: &http.Client{Transport: ht}}
	free, err := p.send(context.Background(), Request{Method: http.MethodPost, URL: "http://example.invalid/", What: "the test API", Body: []byte("held")})
	if err != nil || free {
		t.Fatalf("send to a transport holding the body: free %v, err %v; want false, nil", free, err)
	}
	ht.release()

	log, _ := test.NewNullLogger()
	q := NewQueue("test", p, fastConfig(), Env{Log: log}, "x")
	var rel releases
	q.Send(rel.track([]Delivery{{Request: Request{Method: http.MethodPost, URL: "http://example.invalid/", What: "the test API", Body: []byte("held")}, Count: itemsPer}})...)
	eventually(t, "the request sent", func() bool {
		ht.mu.Lock()
		defer ht.mu.Unlock()
		return len(ht.bodies) > 0
	})
	closeQueue(t, q)
	wantCount(t, report(q), itemsPer, "x.post_metrics_total")
	ht.release()
	if n := rel.of("held"); n != 0 {
		t.Errorf("a body the transport held was released %d times, want never", n)
	}

	// A transport that closes the body before answering frees it.
	s := newStandIn(t, nil)
	free, err = (&Poster{Client: s.srv.Client()}).send(context.Background(), requests(s, "read")[0].Request)
	if err != nil || !free {
		t.Fatalf("send to a server that read the body: free %v, err %v; want true, nil", free, err)
	}
}

// A request with its own Send is never released (the Queue cannot tell
// when that let go of the body); one Reclaim gives back keeps its Release
// for whoever sends it next, and is not released by the Queue.
func TestQueueReleaseOwnSendAndReclaim(t *testing.T) {
	log, _ := test.NewNullLogger()
	var sent atomic.Int32
	q := NewQueue("test", nil, fastConfig(), Env{Log: log}, "x")
	var rel releases
	ds := rel.track([]Delivery{{Request: Request{What: "a custom sender", Body: []byte("own")}, Count: itemsPer,
		Send: func(context.Context, Request) error { sent.Add(1); return nil }}})
	q.Send(ds...)
	eventually(t, "the request sent", func() bool { return sent.Load() == 1 })
	closeQueue(t, q)
	wantCount(t, report(q), itemsPer, "x.post_metrics_total")
	if n := rel.of("own"); n != 0 {
		t.Errorf("a request with its own Send was released %d times, want never", n)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/in"
	ln.Close()
	q2 := NewQueue("test", &Poster{Client: &http.Client{}}, fastConfig(), Env{Log: log}, "x")
	q2.Send(rel.track([]Delivery{{Request: Request{Method: http.MethodPost, URL: dead, What: "a dead global", Body: []byte("back")}, Count: itemsPer}})...)
	eventually(t, "a refused attempt", func() bool { return report(q2).Sum("x.error_total", "cause:post", "destination:test") > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	back, err := q2.Reclaim(ctx)
	if err != nil || len(back) != 1 {
		t.Fatalf("Reclaim gave back %d requests (%v), want 1", len(back), err)
	}
	if n := rel.of("back"); n != 0 {
		t.Errorf("a reclaimed request was released %d times by the queue, want never", n)
	}
	if back[0].Release == nil {
		t.Fatal("the reclaimed request lost its Release")
	}
	back[0].Release()
	if n := rel.of("back"); n != 1 {
		t.Errorf("the reclaimed request's own Release ran %d times, want once", n)
	}
}
