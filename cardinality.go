package veneur

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/veneur/veneur/internal/yield"
)

// seriesCap is max_series_per_interval: the count of series the workers
// hold, shared by all of them, against the cap. A worker adds one when it
// creates a series and gives its interval's count back when it hands the
// interval over, so the count is always the series of the intervals being
// filled and the cap applies afresh from each flush. While a flush
// collects the workers one after another, a worker already collected fills
// its new interval while the next still fills its old one: both count
// against the cap, so the workers never hold more than the cap between
// them.
//
// A nil *seriesCap is no cap. Only a new series touches the count; a
// sample of a known series never does.
type seriesCap struct {
	max int64
	n   atomic.Int64
}

func newSeriesCap(max int) *seriesCap {
	if max <= 0 {
		return nil
	}
	return &seriesCap{max: int64(max)}
}

// take reserves room for one new series and reports whether there was
// any. Once the cap is reached, a plain load answers, so the workers
// refusing a flood of new keys share the cache line without writing it.
func (c *seriesCap) take() bool {
	if c == nil {
		return true
	}
	if c.n.Load() >= c.max {
		return false
	}
	if c.n.Add(1) > c.max {
		c.n.Add(-1) // another worker took the last place first
		return false
	}
	return true
}

// give returns the places of n series.
func (c *seriesCap) give(n int) {
	if c != nil && n > 0 {
		c.n.Add(-int64(n))
	}
}

// maxDropNames bounds the metric names whose drops one worker counts
// apart in one interval. The cap exists because keys can be unbounded, and
// names can be too (an id in the name); drops of names past the bound
// count in the total only.
const maxDropNames = 1000

// A flush of fewer than cardinalityCheap series counts them per metric name
// for /debug/cardinality every time; a larger one when cardinalityEvery has
// passed since the last interval counted (every flush at intervals of 10 s
// or more, every few at shorter ones). Counting 100,000 names costs about
// a tenth of a flush's CPU time, for a report that needs to be recent, not
// new every second.
const (
	cardinalityCheap = 10000
	cardinalityEvery = 10 * time.Second
)

// Limits of GET /debug/cardinality's ?top=N.
const (
	cardinalityDefaultTop = 20
	cardinalityMaxTop     = 1000
)

// nameCardinality is one metric name's line in /debug/cardinality.
type nameCardinality struct {
	Name string `json:"name"`
	// Series is how many series (name, tags, host, device, type) of the
	// name the interval flushed.
	Series int `json:"series"`
	// Dropped is how many samples of new series of the name were refused
	// because the interval held max_series_per_interval series already.
	Dropped uint64 `json:"dropped"`
}

// cardinalityReport is what /debug/cardinality serves: the last completed
// interval's series and drops per metric name.
type cardinalityReport struct {
	// IntervalEnd is when the interval was flushed; absent before the
	// first flush.
	IntervalEnd time.Time `json:"interval_end,omitzero"`
	// MaxSeriesPerInterval is the cap; 0 means none.
	MaxSeriesPerInterval int `json:"max_series_per_interval"`
	SeriesTotal          int `json:"series_total"`
	// DroppedTotal counts every refused sample, including those of names
	// a worker did not count apart (see maxDropNames), so it may exceed
	// the sum over the names listed.
	DroppedTotal uint64 `json:"dropped_total"`
	// Names is how many distinct metric names had series or drops.
	Names int `json:"names_total"`
	// Top is at most ?top=N names, by series plus drops, most first;
	// equal ones by name.
	Top []nameCardinality `json:"top"`
}

// cardinality is what bounds and shows the workers' series: the cap of
// max_series_per_interval they share, and the report of the last completed
// interval, which the flusher replaces at every flush and GET
// /debug/cardinality serves.
type cardinality struct {
	limit *seriesCap // nil: no cap
	max   int
	mu    sync.Mutex
	last  *cardinalityReport // replaced whole, never changed in place
}

func newCardinality(maxSeries int) *cardinality {
	return &cardinality{
		limit: newSeriesCap(maxSeries),
		max:   maxSeries,
		last:  &cardinalityReport{MaxSeriesPerInterval: maxSeries, Top: []nameCardinality{}},
	}
}

// publish builds the report of an interval from its series per name and
// drops per name, keeping the cardinalityMaxTop names that any request may
// ask for, and makes it the one served. It runs on the flush goroutine;
// the lock covers only the swap.
func (c *cardinality) publish(end time.Time, perName map[string]int, drops map[string]uint64, seriesTotal int, droppedTotal uint64, y *yield.Slicer) {
	if c == nil {
		return
	}
	r := &cardinalityReport{
		IntervalEnd:          end,
		MaxSeriesPerInterval: c.max,
		SeriesTotal:          seriesTotal,
		DroppedTotal:         droppedTotal,
	}
	top := newTopNames(cardinalityMaxTop, byVolume)
	i := 0
	for name, n := range perName {
		if i++; i%flushStep == 0 {
			y.Tick() // see flushStep
		}
		top.offer(nameCardinality{Name: name, Series: n, Dropped: drops[name]})
	}
	r.Names = len(perName)
	for name, d := range drops {
		if _, ok := perName[name]; !ok {
			r.Names++
			top.offer(nameCardinality{Name: name, Dropped: d})
		}
	}
	r.Top = top.sorted()
	// The names are substrings of the series' keys: copies let the keys go
	// with their interval.
	for i := range r.Top {
		r.Top[i].Name = strings.Clone(r.Top[i].Name)
	}
	c.mu.Lock()
	c.last = r
	c.mu.Unlock()
}

func (c *cardinality) report() *cardinalityReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// ServeHTTP answers GET /debug/cardinality with the last report, cut to
// ?top=N names (default 20, at most 1000).
func (c *cardinality) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	n := cardinalityDefaultTop
	if v := r.URL.Query().Get("top"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		if err != nil || n < 1 || n > cardinalityMaxTop {
			http.Error(w, fmt.Sprintf("top=%q: want a whole number from 1 to %d", v, cardinalityMaxTop), http.StatusBadRequest)
			return
		}
	}
	rep := *c.report() // a copy, so cutting Top changes nothing shared
	rep.Top = rep.Top[:min(n, len(rep.Top))]
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(&rep)
}

// byVolume ranks names by series plus drops, most first, then by name.
func byVolume(a, b nameCardinality) int {
	if c := cmp.Compare(uint64(b.Series)+b.Dropped, uint64(a.Series)+a.Dropped); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// byDropped ranks names by drops, most first, then by name.
func byDropped(a, b nameCardinality) int {
	if c := cmp.Compare(b.Dropped, a.Dropped); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// topNames keeps the n first names by rank among those offered, in a heap
// whose root is the last kept: a name that ranks after it costs one
// comparison, so picking the top from a million names costs little more
// than looking at each once.
type topNames struct {
	n    int
	rank func(a, b nameCardinality) int // < 0: a ranks before b
	heap []nameCardinality
}

func newTopNames(n int, rank func(a, b nameCardinality) int) *topNames {
	return &topNames{n: n, rank: rank}
}

func (t *topNames) offer(x nameCardinality) {
	h := t.heap
	if len(h) < t.n {
		h = append(h, x)
		// Sift up: a parent ranks after its children.
		for i := len(h) - 1; i > 0; {
			p := (i - 1) / 2
			if t.rank(h[i], h[p]) <= 0 {
				break
			}
			h[i], h[p] = h[p], h[i]
			i = p
		}
		t.heap = h
		return
	}
	if t.n == 0 || t.rank(x, h[0]) >= 0 {
		return
	}
	h[0] = x
	// Sift down.
	for i := 0; ; {
		last, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && t.rank(h[l], h[last]) > 0 {
			last = l
		}
		if r < len(h) && t.rank(h[r], h[last]) > 0 {
			last = r
		}
		if last == i {
			return
		}
		h[i], h[last] = h[last], h[i]
		i = last
	}
}

// sorted returns the names kept, first by rank first.
func (t *topNames) sorted() []nameCardinality {
	out := t.heap
	if out == nil {
		out = []nameCardinality{}
	}
	slices.SortFunc(out, t.rank)
	t.heap = nil
	return out
}

// maxSeries is max_series_per_interval, 0 for no cap.
func (c *cardinality) maxSeries() int {
	if c == nil {
		return 0
	}
	return c.max
}
