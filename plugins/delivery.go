package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/internal/counter"
)

// Defaults of DeliveryConfig. DefaultDelivery applies them for an interval.
const (
	// DefaultSpoolBytes is the default MaxBytes (flush_spool_bytes):
	// 64 MiB of compressed bodies per destination.
	DefaultSpoolBytes int64 = 64 << 20
	// DefaultSpoolAgeIntervals is the default MaxAge (flush_spool_max_age)
	// in flush intervals.
	DefaultSpoolAgeIntervals = 10
	// DefaultMaxConcurrency is the default Concurrency
	// (flush_max_concurrency).
	DefaultMaxConcurrency = 4
	// DefaultBackoffInitial is the first wait after a failure.
	DefaultBackoffInitial = time.Second
	// DefaultBackoffMax is the most the wait doubles to: the interval,
	// but never more than this (nor less than DefaultBackoffInitial).
	DefaultBackoffMax = 30 * time.Second
	// fallbackInterval stands in for an unset (zero) interval.
	fallbackInterval = 10 * time.Second
)

// DeliveryConfig bounds a Queue. A zero field takes its default
// (DefaultDelivery); WithDefaults fills them in.
type DeliveryConfig struct {
	// MaxBytes bounds the bytes of the bodies a Queue holds, waiting or
	// being sent (flush_spool_bytes). Past it, the oldest waiting
	// requests are dropped (cause spool_full).
	MaxBytes int64
	// MaxAge is how long a request may wait (flush_spool_max_age): one
	// older is dropped (cause too_old) instead of being sent or sent
	// again.
	MaxAge time.Duration
	// Concurrency is how many requests of one generation are sent at
	// once (flush_max_concurrency).
	Concurrency int
	// Timeout bounds each attempt, besides the http.Client's own
	// timeout; default the interval.
	Timeout time.Duration
	// BackoffInitial is the wait after the first failure; it doubles
	// with each failure in a row, up to BackoffMax. Each wait is drawn
	// at random between half the backoff and all of it, so that
	// instances that failed together do not come back together.
	BackoffInitial, BackoffMax time.Duration
}

// DefaultDelivery is the DeliveryConfig of a sink that flushes every
// interval: 64 MiB, ten intervals, 4 at once, a timeout of one interval,
// and a backoff from 1s doubling to the interval, at most 30s. A zero
// interval counts as 10s.
func DefaultDelivery(interval time.Duration) DeliveryConfig {
	if interval <= 0 {
		interval = fallbackInterval
	}
	return DeliveryConfig{
		MaxBytes:       DefaultSpoolBytes,
		MaxAge:         DefaultSpoolAgeIntervals * interval,
		Concurrency:    DefaultMaxConcurrency,
		Timeout:        interval,
		BackoffInitial: DefaultBackoffInitial,
		BackoffMax:     min(max(interval, DefaultBackoffInitial), DefaultBackoffMax),
	}
}

// WithDefaults is c with each zero field set from DefaultDelivery(interval).
// A BackoffMax below BackoffInitial is raised to it.
func (c DeliveryConfig) WithDefaults(interval time.Duration) DeliveryConfig {
	d := DefaultDelivery(interval)
	if c.MaxBytes == 0 {
		c.MaxBytes = d.MaxBytes
	}
	if c.MaxAge == 0 {
		c.MaxAge = d.MaxAge
	}
	if c.Concurrency == 0 {
		c.Concurrency = d.Concurrency
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.BackoffInitial == 0 {
		c.BackoffInitial = d.BackoffInitial
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = max(d.BackoffMax, c.BackoffInitial)
	}
	c.BackoffMax = max(c.BackoffMax, c.BackoffInitial)
	return c
}

// Validate reports negative settings, naming their config keys.
func (c DeliveryConfig) Validate() error {
	var errs []error
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("flush_spool_bytes = %d: must not be negative; leave it unset for the default (%d, 64 MiB)", c.MaxBytes, DefaultSpoolBytes))
	}
	if c.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("flush_spool_max_age %s: must not be negative; leave it unset for the default (%d intervals)", c.MaxAge, DefaultSpoolAgeIntervals))
	}
	if c.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("flush_max_concurrency = %d: must not be negative; leave it unset for the default (%d)", c.Concurrency, DefaultMaxConcurrency))
	}
	if c.Timeout < 0 || c.BackoffInitial < 0 || c.BackoffMax < 0 {
		errs = append(errs, errors.New("delivery timeout and backoff must not be negative"))
	}
	return errors.Join(errs...)
}

// Delivery is one request of a generation handed to a Queue.
type Delivery struct {
	Request
	// Count is how many series (or events, spans, points) the request
	// carries: the unit of the accepted and dropped counts.
	Count int
	// OnAccepted, when set, runs once the destination accepted the
	// request (a 2xx answer), on a delivery goroutine. It must not block.
	OnAccepted func()
	// Send, when set, makes each attempt instead of the Queue's Poster:
	// for a destination not reached over HTTP, such as the forward
	// client's gRPC. It is given the Request as the Poster would be (the
	// same Body and Header on every attempt) and must answer as
	// Poster.Send does: nil when the destination accepted the request, a
	// *StatusError when it answered otherwise, with Code the HTTP status
	// that stands for the answer (a 4xx other than 429 drops the request;
	// any other is retried, after RetryAfter when it is set), and any
	// other error when there was no answer (retried).
	Send func(ctx context.Context, r Request) error
	// Release, when set, runs once the Queue will not read the Body again
	// and nothing it gave the Body to still holds it: the request was
	// delivered or dropped and the Queue's Poster saw the transport close
	// every reader of it. The sender may then reuse the Body's memory. It
	// runs at most once, with the Queue's lock held, and must not block.
	// It does not run for a request whose own Send made an attempt (the
	// Queue cannot know when that let go of the Body), for a request
	// Reclaim gives back, or for one an attempt's transport kept reading.
	Release func()
}

// Causes of <prefix>.dropped_total, in the order of Queue.dropped.
const (
	causeSpoolFull = iota
	causeTooOld
	causeRejected
	causeShutdown
)

// Causes of <prefix>.error_total, in the order of Queue.errs.
const (
	causePost     = iota // no answer: connection error, timeout
	causeResponse        // an answer other than 2xx
)

// Queue delivers the requests of one destination durably: it retries them
// with backoff, keeps them (compressed, as they were given) in a bounded
// spool meanwhile, and counts what it delivered, retried and dropped.
//
// Send hands it one generation: the requests of one flush. Generations go
// out oldest first, and the requests of a generation start only once every
// request of the one before was delivered or dropped, so that a
// destination never sees a flush before the one that preceded it; within
// a generation up to Concurrency requests are in flight at once.
//
// A connection error, a timeout, a 5xx and a 429 are retried; the wait
// doubles with each failure in a row (BackoffInitial to BackoffMax, with
// jitter), or is what the answer's Retry-After asks, at most MaxAge. The
// wait pauses the whole destination: a destination that fails one request
// is not sent the others meanwhile. Any other 4xx drops the request at
// once (cause rejected_4xx): sending it again would get the same answer.
//
// Self-metrics, sent by Report and tagged destination:NAME:
//
//   - <prefix>.post_metrics_total: series (items) the destination accepted;
//   - <prefix>.retry_total: attempts after a request's first;
//   - <prefix>.error_total (cause post: no answer; response: not 2xx):
//     failed attempts;
//   - <prefix>.dropped_total (cause spool_full, too_old, rejected_4xx,
//     shutdown): series (items) dropped, never delivered;
//   - <prefix>.spool_bytes (gauge): bytes of the bodies held, waiting or
//     being sent.
//
// As they happen, it also sends the timers <prefix>.duration_ns (tags
// part:post, destination:NAME) for every attempt that got an answer and
// <prefix>.total_duration_ns (tag destination:NAME) from the Send of a
// generation until its last request was delivered or dropped.
//
// NewQueue starts nothing; the first Send starts the delivery goroutines,
// and Close stops them.
type Queue struct {
	name   string
	prefix string
	poster *Poster
	cfg    DeliveryConfig
	log    *logrus.Logger
	stats  statsd.ClientInterface
	tags   []string // destination:NAME
	// postTags are the tags of the post timer.
	postTags []string

	accepted atomic.Uint64
	retries  atomic.Uint64
	held     atomic.Int64     // mirrors heldBytes for Report
	dropped  *counter.ByCause // items, by cause*
	errs     *counter.ByCause // failed attempts, by cause*
	limit    logLimiter

	// ctx ends attempts in flight when Close gives up.
	ctx   context.Context
	abort context.CancelFunc
	// wake tells the dispatcher to look again: a Send, an attempt's end,
	// Close.
	wake chan struct{}
	// done closes when the dispatcher returns.
	done chan struct{}
	wg   sync.WaitGroup

	mu        sync.Mutex
	gens      []*generation // oldest first; gens[0] is the one being sent
	heldBytes int64
	inFlight  int
	started   bool
	closing   bool
	// backoff is the current backoff (0 after a success); lastFail is
	// when the last failure was seen, and resumeAt is when the
	// destination may be sent to again.
	backoff  time.Duration
	lastFail time.Time
	resumeAt time.Time
	// holding, set by Reclaim, starts no attempt; settled tells Reclaim
	// that an attempt in flight has ended.
	holding bool
	settled *sync.Cond
	// shutdownReqs and shutdownItems are what was dropped with cause
	// shutdown, for Close's summary.
	shutdownReqs, shutdownItems int
}

// generation is the requests of one Send.
type generation struct {
	entries []*entry
	left    int // entries neither delivered nor dropped
	start   time.Time
}

type entryState uint8

const (
	waiting entryState = iota
	inFlight
	settled // delivered or dropped
)

// entry is one request in the queue.
type entry struct {
	d        Delivery
	gen      *generation
	enqueued time.Time
	attempts int
	state    entryState
	// reached is set once an attempt may have reached the destination
	// (any outcome but ErrNotSent): Reclaim does not give it back.
	reached bool
	// held is set once an attempt may have left the Body with someone
	// else: d.Release is then never run.
	held bool
}

// NewQueue returns a Queue that sends to one destination, called name in
// logs and in the destination tag, through p (which may be nil when every
// Delivery has its own Send), with self-metrics named prefix.*. Zero
// fields of cfg take their defaults for env.Interval. It logs to env.Log
// and sends its timers to env.Stats (either may be nil).
func NewQueue(name string, p *Poster, cfg DeliveryConfig, env Env, prefix string) *Queue {
	cfg = cfg.WithDefaults(env.Interval)
	log := env.Log
	if log == nil {
		log = logrus.New()
		log.SetOutput(io.Discard)
	}
	stats := env.Stats
	if stats == nil {
		stats = &statsd.NoOpClient{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	dest := "destination:" + name
	return &Queue{
		name:     name,
		prefix:   prefix,
		poster:   p,
		cfg:      cfg,
		log:      log,
		stats:    stats,
		tags:     []string{dest},
		postTags: []string{"part:post", dest},
		dropped:  counter.New("spool_full", "too_old", "rejected_4xx", "shutdown"),
		errs:     counter.New("post", "response"),
		limit:    logLimiter{every: time.Second},
		ctx:      ctx,
		abort:    cancel,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// Send enqueues the requests of one generation, in order, and returns at
// once: it never waits for the destination. Their bodies must not change
// afterwards. When the spool would hold more than MaxBytes, the oldest
// waiting requests (of this generation too, when it is that large) are
// dropped, never one being sent. After Close it drops them (cause
// shutdown).
func (q *Queue) Send(ds ...Delivery) {
	if len(ds) == 0 {
		return
	}
	now := time.Now()
	var notes []note
	q.mu.Lock()
	if q.closing {
		for _, d := range ds {
			q.dropped.Add(causeShutdown, uint64(d.Count))
			q.shutdownReqs++
			q.shutdownItems += d.Count
			notes = append(notes, note{what: d.What, count: d.Count, next: "dropped (shutdown): the queue is closed"})
		}
		q.mu.Unlock()
		q.logNotes(notes)
		return
	}
	g := &generation{start: now}
	for _, d := range ds {
		if int64(len(d.Body)) > q.cfg.MaxBytes {
			// Alone it overflows the spool: dropping older requests
			// would not make room.
			q.dropped.Add(causeSpoolFull, uint64(d.Count))
			notes = append(notes, note{what: d.What, count: d.Count,
				next: fmt.Sprintf("dropped (spool_full): a body of %d bytes is larger than the whole spool (%d bytes)", len(d.Body), q.cfg.MaxBytes)})
			continue
		}
		g.entries = append(g.entries, &entry{d: d, gen: g, enqueued: now})
		g.left++
		q.heldBytes += int64(len(d.Body))
	}
	if g.left > 0 {
		q.gens = append(q.gens, g)
	}
	notes = q.trim(notes)
	q.held.Store(q.heldBytes)
	if !q.started && len(q.gens) > 0 {
		q.started = true
		q.wg.Add(1)
		go q.run()
	}
	q.mu.Unlock()
	q.signal()
	q.logNotes(notes)
}

// trim drops the oldest waiting requests while the spool holds more than
// MaxBytes. The requests in flight fit: they fitted when they came.
func (q *Queue) trim(notes []note) []note {
	for _, g := range q.gens {
		for _, e := range g.entries {
			if q.heldBytes <= q.cfg.MaxBytes {
				return notes
			}
			if e.state != waiting {
				continue
			}
			notes = append(notes, note{what: e.d.What, count: e.d.Count, attempts: e.attempts,
				next: fmt.Sprintf("dropped (spool_full): more than %d bytes wait", q.cfg.MaxBytes)})
			q.drop(e, causeSpoolFull)
		}
	}
	return notes
}

// drop settles e without delivering it, counting its items under cause.
func (q *Queue) drop(e *entry, cause int) {
	q.dropped.Add(cause, uint64(e.d.Count))
	if cause == causeShutdown {
		q.shutdownReqs++
		q.shutdownItems += e.d.Count
	}
	q.settle(e)
}

// settle marks e delivered or dropped and lets go of its body.
func (q *Queue) settle(e *entry) {
	e.state = settled
	e.gen.left--
	q.heldBytes -= int64(len(e.d.Body))
	q.held.Store(q.heldBytes)
	if e.d.Release != nil && !e.held {
		e.d.Release()
	}
	e.d.Body = nil
	e.d.OnAccepted = nil
	e.d.Send = nil
	e.d.Release = nil
}

// signal wakes the dispatcher without waiting.
func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run is the dispatcher: it drops what got too old, starts the attempts
// the head generation may start, and sleeps until something changes or a
// wait ends. It returns when Close found the queue empty, or gave up and
// every attempt in flight has returned.
func (q *Queue) run() {
	defer q.wg.Done()
	defer close(q.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.mu.Lock()
		now := time.Now()
		aborted := q.ctx.Err() != nil
		var notes []note
		if aborted {
			q.dropWaiting(causeShutdown)
		} else {
			notes = q.expire(now)
		}
		q.prune(now)
		if (aborted || q.closing) && len(q.gens) == 0 && q.inFlight == 0 {
			q.mu.Unlock()
			q.logNotes(notes)
			return
		}
		var next time.Time
		if !aborted {
			next = q.dispatch(now)
		}
		q.mu.Unlock()
		q.logNotes(notes)

		var tick <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			tick = timer.C
		}
		abort := q.ctx.Done()
		if aborted {
			abort = nil // already seen; wait for the attempts to end
		}
		select {
		case <-q.wake:
		case <-tick:
		case <-abort:
		}
		timer.Stop()
	}
}

// expire drops the waiting requests that are MaxAge old.
func (q *Queue) expire(now time.Time) []note {
	var notes []note
	for _, g := range q.gens {
		for _, e := range g.entries {
			if e.state == waiting && !now.Before(e.enqueued.Add(q.cfg.MaxAge)) {
				notes = append(notes, note{what: e.d.What, count: e.d.Count, attempts: e.attempts,
					next: fmt.Sprintf("dropped (too_old): waited %s", q.cfg.MaxAge)})
				q.drop(e, causeTooOld)
			}
		}
	}
	return notes
}

// dropWaiting drops every waiting request with cause.
func (q *Queue) dropWaiting(cause int) {
	for _, g := range q.gens {
		for _, e := range g.entries {
			if e.state == waiting {
				q.drop(e, cause)
			}
		}
	}
}

// prune removes the generations that are done, timing each.
func (q *Queue) prune(now time.Time) {
	kept := q.gens[:0]
	for _, g := range q.gens {
		if g.left > 0 {
			kept = append(kept, g)
			continue
		}
		q.stats.TimeInMilliseconds(q.prefix+".total_duration_ns", float64(now.Sub(g.start).Nanoseconds()), q.tags, 1)
	}
	clear(q.gens[len(kept):])
	q.gens = kept
}

// dispatch starts what the head generation may start now, and returns when
// the dispatcher must look again by itself (zero: only when woken): when
// the destination's pause ends or the next waiting request gets too old.
func (q *Queue) dispatch(now time.Time) time.Time {
	var next time.Time
	earliest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	if len(q.gens) > 0 && !q.holding {
		if now.Before(q.resumeAt) {
			earliest(q.resumeAt)
		} else {
			for _, e := range q.gens[0].entries {
				if q.inFlight >= q.cfg.Concurrency {
					break
				}
				if e.state != waiting {
					continue
				}
				e.state = inFlight
				q.inFlight++
				if e.attempts > 0 {
					q.retries.Add(1)
				}
				e.attempts++
				q.wg.Add(1)
				go q.attempt(e, e.d.Request, e.d.Send, now)
			}
		}
	}
	for _, g := range q.gens {
		for _, e := range g.entries {
			if e.state == waiting {
				earliest(e.enqueued.Add(q.cfg.MaxAge))
			}
		}
	}
	return next
}

// attempt sends r, the request of e, once with send (the Queue's Poster
// when nil), and settles e or puts it back to wait.
func (q *Queue) attempt(e *entry, r Request, send func(context.Context, Request) error, start time.Time) {
	defer q.wg.Done()
	ctx, cancel := context.WithTimeout(q.ctx, q.cfg.Timeout)
	var err error
	free := false
	if send != nil {
		err = send(ctx, r)
	} else {
		free, err = q.poster.send(ctx, r)
	}
	cancel()
	end := time.Now()
	var se *StatusError
	if err == nil || errors.As(err, &se) {
		q.stats.TimeInMilliseconds(q.prefix+".duration_ns", float64(end.Sub(start).Nanoseconds()), q.postTags, 1)
	}

	var onAccepted func()
	var n *note
	q.mu.Lock()
	if !free {
		e.held = true
	}
	q.inFlight--
	if q.holding {
		q.settled.Broadcast()
	}
	switch {
	case err == nil:
		q.accepted.Add(uint64(e.d.Count))
		onAccepted = e.d.OnAccepted
		q.backoff = 0
		q.settle(e)
	case q.ctx.Err() != nil:
		// Close gave up on it; its summary reports the drop.
		q.drop(e, causeShutdown)
	default:
		if !errors.Is(err, ErrNotSent) {
			e.reached = true
		}
		if se != nil {
			q.errs.Add(causeResponse, 1)
		} else {
			q.errs.Add(causePost, 1)
		}
		n = &note{err: err, what: r.What, count: e.d.Count, attempts: e.attempts}
		if se != nil && se.Code/100 == 4 && se.Code != http.StatusTooManyRequests {
			n.next = "dropped (rejected_4xx)"
			q.drop(e, causeRejected)
			break
		}
		wait := q.failed(start, end, se)
		if !end.Add(wait).Before(e.enqueued.Add(q.cfg.MaxAge)) {
			n.next = fmt.Sprintf("dropped (too_old): the retry in %s would come after %s", roundWait(wait), q.cfg.MaxAge)
			q.drop(e, causeTooOld)
			break
		}
		n.next = "retrying in " + roundWait(wait).String()
		e.state = waiting
	}
	q.mu.Unlock()
	if onAccepted != nil {
		onAccepted()
	}
	if n != nil {
		q.logNotes([]note{*n})
	}
	q.signal()
}

// failed records a retryable failure of an attempt that started at start
// and ended at end, pauses the destination, and returns the pause. The
// backoff doubles only for an attempt that started after the previous
// failure: requests in flight together that fail together are one failure
// of the destination, not several.
func (q *Queue) failed(start, end time.Time, se *StatusError) time.Duration {
	switch {
	case q.backoff == 0:
		q.backoff = q.cfg.BackoffInitial
	case start.After(q.lastFail):
		q.backoff = min(2*q.backoff, q.cfg.BackoffMax)
	}
	q.lastFail = end
	wait := q.backoff/2 + rand.N(q.backoff/2+1)
	if se != nil && se.RetryAfter > 0 {
		// The destination said when; waiting longer than MaxAge would
		// only make the request too old.
		wait = min(se.RetryAfter, q.cfg.MaxAge)
	}
	if resume := end.Add(wait); resume.After(q.resumeAt) {
		q.resumeAt = resume
	}
	return q.resumeAt.Sub(end)
}

// roundWait rounds a wait for a log line.
func roundWait(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

// Reclaim closes the queue and gives back the requests its destination
// provably never received: those waiting that were never attempted, or
// whose every attempt was refused (ErrNotSent). It first lets the attempts
// in flight end (each is bounded by Timeout), starting no other. What it
// gives back is neither delivered nor counted as dropped: the caller sends
// it elsewhere. The rest is closed as Close does, within ctx.
func (q *Queue) Reclaim(ctx context.Context) ([]Delivery, error) {
	var out []Delivery
	q.mu.Lock()
	q.holding = true
	if q.settled == nil {
		q.settled = sync.NewCond(&q.mu)
	}
	for q.inFlight > 0 {
		q.settled.Wait()
	}
	q.holding = false
	for _, g := range q.gens {
		for _, e := range g.entries {
			if e.state == waiting && !e.reached {
				out = append(out, e.d)
				// The body goes with the request, and with it the
				// Release.
				e.d.Release = nil
				q.settle(e)
			}
		}
	}
	q.mu.Unlock()
	q.signal()
	return out, q.Close(ctx)
}

// Close stops taking requests and delivers what waits, retrying as
// usual, until the queue is empty or ctx ends; then it drops what is left
// (cause shutdown), ending the attempts in flight, logs how much it
// dropped at warn level, and returns an error saying so. It returns once
// every goroutine of the queue has returned. Calling it again waits for
// the first call's work and returns nil.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	already := q.closing
	q.closing = true
	started := q.started
	q.mu.Unlock()
	if !started {
		q.abort()
		return nil
	}
	q.signal()
	select {
	case <-q.done:
	case <-ctx.Done():
		q.abort()
		<-q.done
	}
	q.wg.Wait()
	q.abort()
	if already {
		return nil
	}
	q.mu.Lock()
	reqs, items := q.shutdownReqs, q.shutdownItems
	q.mu.Unlock()
	if reqs == 0 {
		return nil
	}
	q.log.WithFields(logrus.Fields{"destination": q.name, "requests": reqs, "items": items}).
		Warn("shutting down before the destination took everything; the rest was dropped")
	return fmt.Errorf("%s: %d requests (%d items) dropped at shutdown: %w", q.name, reqs, items, context.Cause(ctx))
}

// Report sends the counts since the last Report and the spool's size.
func (q *Queue) Report(stats statsd.ClientInterface) {
	if stats == nil {
		return
	}
	if n := q.accepted.Swap(0); n > 0 {
		stats.Count(q.prefix+".post_metrics_total", int64(n), q.tags, 1)
	}
	if n := q.retries.Swap(0); n > 0 {
		stats.Count(q.prefix+".retry_total", int64(n), q.tags, 1)
	}
	q.dropped.Report(stats, q.prefix+".dropped_total", q.tags...)
	q.errs.Report(stats, q.prefix+".error_total", q.tags...)
	stats.Gauge(q.prefix+".spool_bytes", float64(q.held.Load()), q.tags, 1)
}

// note is one failed or dropped request to log.
type note struct {
	err      error
	what     string // the destination, as Request.What names it
	count    int
	attempts int
	next     string // what happens next: "retrying in 2s", "dropped (cause)"
}

// logNotes logs each note at error level, at most one a second; the
// next line logged says how many were left out meanwhile.
func (q *Queue) logNotes(notes []note) {
	for _, n := range notes {
		ok, suppressed := q.limit.allow(time.Now())
		if !ok {
			continue
		}
		l := q.log.WithFields(logrus.Fields{"destination": q.name, "items": n.count})
		if n.attempts > 0 {
			l = l.WithField("attempts", n.attempts)
		}
		if suppressed > 0 {
			l = l.WithField("suppressed", suppressed)
		}
		if n.err != nil {
			l = l.WithError(n.err)
			l.Errorf("sending to %s failed; %s", n.what, n.next)
			continue
		}
		l.Errorf("request to %s %s", n.what, n.next)
	}
}

// logLimiter lets one line through per period, and counts the others.
type logLimiter struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

// allow says whether a line may be logged at now and, when it may, how
// many were held back since the last one.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.suppressed = 0
	l.last = now
	return true, n
}
