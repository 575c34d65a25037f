package main

import (
	"compress/gzip"
	"compress/zlib"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits on what the stand-in API accepts: a flush of workload c is about
// 220,000 series, well under these with flush_max_per_body 5000.
const (
	maxCompressedBody   = 64 << 20
	maxDecompressedBody = 512 << 20
	maxRecordedPosts    = 100_000
)

// seriesBody is the part of a /api/v1/series body the benchmark reads.
type seriesBody struct {
	Series []struct {
		Metric   string       `json:"metric"`
		Points   [][2]float64 `json:"points"`
		Type     string       `json:"type"`
		Interval float64      `json:"interval"`
	} `json:"series"`
}

// postSummary is what one POST carried.
type postSummary struct {
	series        int   // series named with the workload prefix
	counterSeries int   // of which counters
	counterSum    int64 // counter increments the counter series stand for
	badCounters   int   // counter series not shaped as the contract says
	// stamp is the timestamp of the body's points (Unix seconds), which
	// is the flush's: the bodies of one flush share it. 0 without points.
	stamp int64
}

// decodeSeries reads an uncompressed series body and sums the workload's
// counters. A counter arrives as type "rate" with value count/interval, so
// its count is value*interval rounded to the nearest integer.
func decodeSeries(r io.Reader) (postSummary, error) {
	var body seriesBody
	if err := json.NewDecoder(r).Decode(&body); err != nil {
		return postSummary{}, fmt.Errorf("decoding series JSON: %w", err)
	}
	var s postSummary
	for _, m := range body.Series {
		if s.stamp == 0 && len(m.Points) > 0 {
			s.stamp = int64(m.Points[0][0])
		}
		if !strings.HasPrefix(m.Metric, seriesPrefix) {
			continue
		}
		s.series++
		if !strings.HasPrefix(m.Metric, counterPrefix) {
			continue
		}
		s.counterSeries++
		if m.Type != "rate" || m.Interval <= 0 || len(m.Points) != 1 {
			s.badCounters++
			continue
		}
		s.counterSum += int64(math.Round(m.Points[0][1] * m.Interval))
	}
	return s, nil
}

// postRecord is one POST as the stand-in API saw it.
type postRecord struct {
	arrival time.Time
	postSummary
}

// standInAPI plays Datadog's /api/v1/series for one trial at a time.
type standInAPI struct {
	key      string
	inflight atomic.Int64

	mu      sync.Mutex
	posts   []postRecord
	dropped int // posts beyond maxRecordedPosts
	errs    []string
	// seen holds the SHA-256 of every body received; repeats counts the
	// bodies received again: veneur sends a body again when an answer
	// came after its delivery timeout (the interval), which a stand-in
	// API on a busy CPU may be slow enough for. A repeat is counted once.
	seen    map[[sha256.Size]byte]bool
	repeats int
}

func newStandInAPI(key string) *standInAPI { return &standInAPI{key: key} }

// reset forgets everything received, for the next trial.
func (a *standInAPI) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.posts, a.dropped, a.errs, a.seen, a.repeats = nil, 0, nil, nil, 0
}

// repeated is how many bodies arrived again since the last reset.
func (a *standInAPI) repeated() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.repeats
}

// snapshot returns the posts received so far, ordered by arrival, and the
// errors seen.
func (a *standInAPI) snapshot() ([]postRecord, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	posts := append([]postRecord(nil), a.posts...)
	sort.Slice(posts, func(i, j int) bool { return posts[i].arrival.Before(posts[j].arrival) })
	errs := append([]string(nil), a.errs...)
	if a.dropped > 0 {
		errs = append(errs, fmt.Sprintf("%d POSTs beyond the %d recorded were ignored", a.dropped, maxRecordedPosts))
	}
	return posts, errs
}

func (a *standInAPI) fail(w http.ResponseWriter, code int, msg string) {
	a.mu.Lock()
	if len(a.errs) < 20 {
		a.errs = append(a.errs, msg)
	}
	a.mu.Unlock()
	http.Error(w, msg, code)
}

func (a *standInAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	arrival := time.Now()
	a.inflight.Add(1)
	defer a.inflight.Add(-1)
	if r.URL.Path != "/api/v1/series" || r.Method != http.MethodPost {
		a.fail(w, http.StatusNotFound, fmt.Sprintf("unexpected %s %s; only POST /api/v1/series is served", r.Method, r.URL.Path))
		return
	}
	if got := r.URL.Query().Get("api_key"); got != a.key {
		a.fail(w, http.StatusForbidden, fmt.Sprintf("api_key %q, want %q", got, a.key))
		return
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, maxCompressedBody)
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "deflate":
		zr, err := zlib.NewReader(body)
		if err != nil {
			a.fail(w, http.StatusBadRequest, fmt.Sprintf("deflate body: %v", err))
			return
		}
		defer zr.Close()
		body = zr
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			a.fail(w, http.StatusBadRequest, fmt.Sprintf("gzip body: %v", err))
			return
		}
		defer zr.Close()
		body = zr
	case "":
	default:
		a.fail(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q; send deflate", enc))
		return
	}
	lr := &io.LimitedReader{R: body, N: maxDecompressedBody + 1}
	h := sha256.New()
	tee := io.TeeReader(lr, h)
	sum, err := decodeSeries(tee)
	if err == nil {
		_, err = io.Copy(io.Discard, tee) // the whole body is hashed
	}
	if err == nil && lr.N <= 0 {
		err = errors.New("decompressed body over the limit")
	}
	if err != nil {
		a.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	a.mu.Lock()
	if a.seen == nil {
		a.seen = map[[sha256.Size]byte]bool{}
	}
	if a.seen[key] {
		a.repeats++
	} else if len(a.posts) < maxRecordedPosts {
		a.seen[key] = true
		a.posts = append(a.posts, postRecord{arrival: arrival, postSummary: sum})
	} else {
		a.dropped++
	}
	a.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, `{"status":"ok"}`)
}

// waitIdle waits until no request is being handled, up to timeout.
func (a *standInAPI) waitIdle(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for a.inflight.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// flushGroup is the POSTs of one flush: those whose points carry its
// timestamp.
type flushGroup struct {
	stamp         int64
	first, last   time.Time
	posts         int
	series        int
	counterSeries int
	counterSum    int64
}

// groupFlushes assigns posts to flushes by their points' timestamp, the
// flush's, and orders the flushes by it. (The bodies of one flush may
// arrive over more than a second when the flush shares one CPU with the
// readers.) A post without points belongs to no flush.
func groupFlushes(posts []postRecord) []flushGroup {
	var groups []flushGroup
	index := map[int64]int{}
	for _, p := range posts {
		if p.stamp == 0 {
			continue
		}
		i, ok := index[p.stamp]
		if !ok {
			i = len(groups)
			index[p.stamp] = i
			groups = append(groups, flushGroup{stamp: p.stamp, first: p.arrival, last: p.arrival})
		}
		g := &groups[i]
		if p.arrival.Before(g.first) {
			g.first = p.arrival
		}
		if p.arrival.After(g.last) {
			g.last = p.arrival
		}
		g.posts++
		g.series += p.series
		g.counterSeries += p.counterSeries
		g.counterSum += p.counterSum
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].stamp < groups[j].stamp })
	return groups
}

// flushCheck is the verdict on flush completeness and timing for a trial.
type flushCheck struct {
	flushes  int           // flushes judged for timing
	interior int           // flushes whose whole interval lay inside the sending window
	complete int           // interior flushes that carried every series
	maxGap   time.Duration // largest gap between consecutive judged flushes
	// maxLate is the longest time from a judged flush's timestamp (the
	// interval's end) to its first POST's arrival.
	maxLate time.Duration
	// unjudged, when set, is why interior flushes were not required to
	// carry every series.
	unjudged string
	problems []string
}

func (c flushCheck) ok() bool { return len(c.problems) == 0 }

// completeness is "n/m complete", or why completeness was not judged.
func (c flushCheck) completeness() string {
	if c.unjudged != "" {
		return fmt.Sprintf("%d interior, completeness not judged: %s", c.interior, c.unjudged)
	}
	return fmt.Sprintf("%d/%d complete", c.complete, c.interior)
}

// String is the verdict in a few words, for reports.
func (c flushCheck) String() string {
	return fmt.Sprintf("%s, max gap %v, first POST at most %v after the boundary", c.completeness(), c.maxGap.Round(time.Millisecond), c.maxLate.Round(time.Millisecond))
}

// minLinesPerSeries is how many lines each series must get per interval,
// on average, for every interior flush to be required to carry every
// series. The sender sends each series in turn, so at one line per series
// per interval the lines of a series come one interval apart, and any
// jitter moves one across a boundary: that interval has none and the next
// two, which is the rate's doing, not the server's.
const minLinesPerSeries = 1.1

// seriesJudgement says whether flushes at this many lines per series per
// interval must be complete, and if not, why (flushCheck.unjudged).
func seriesJudgement(linesPerSeries float64) string {
	if linesPerSeries >= minLinesPerSeries {
		return ""
	}
	return fmt.Sprintf("each series got %.2f lines per interval (under %.1f), so lines near a boundary move series between flushes", linesPerSeries, minLinesPerSeries)
}

// checkFlushes judges the flushes of a trial that sent from start to end
// and then stopped the server, which flushed once more. Posts are grouped
// into flushes by their timestamp. Only flushes whose first post came at
// least half an interval before end are judged, so that the final flush is
// not. A judged flush is interior when the flush before it is stamped at
// or after start: its interval began after sending did. Every interior
// flush must carry wantSeries series, wantCounters of them counters, and
// the first posts of consecutive judged flushes must be at most
// interval+interval/4 apart. unjudged (see seriesJudgement), when set,
// waives the series count.
func checkFlushes(posts []postRecord, start, end time.Time, interval time.Duration, wantSeries, wantCounters int, unjudged string) flushCheck {
	half, slack := interval/2, interval/4
	groups := groupFlushes(posts)
	c := flushCheck{unjudged: unjudged}
	for i := range groups {
		g := groups[i]
		if g.first.After(end.Add(-half)) {
			break
		}
		c.flushes++
		c.maxLate = max(c.maxLate, g.first.Sub(time.Unix(g.stamp, 0)))
		if i == 0 {
			continue
		}
		prev := groups[i-1]
		gap := g.first.Sub(prev.first)
		c.maxGap = max(c.maxGap, gap)
		if gap > interval+slack {
			c.problems = append(c.problems, fmt.Sprintf("flush %d came %v after the previous one, interval is %v", i, gap.Round(time.Millisecond), interval))
		}
		if time.Unix(prev.stamp, 0).Before(start) {
			continue
		}
		c.interior++
		if g.series == wantSeries && g.counterSeries == wantCounters {
			c.complete++
		} else if unjudged == "" {
			c.problems = append(c.problems, fmt.Sprintf("flush %d carried %d series (%d counters), want %d (%d)", i, g.series, g.counterSeries, wantSeries, wantCounters))
		}
	}
	if c.interior < 2 {
		c.problems = append(c.problems, fmt.Sprintf("only %d flushes lay wholly inside the sending window, need 2; run longer trials", c.interior))
	}
	return c
}
