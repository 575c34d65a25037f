// Package counter has ByCause: counters of one self-metric, split by the
// value of its cause tag.
package counter

import (
	"errors"
	"sync/atomic"

	"github.com/DataDog/datadog-go/v5/statsd"
)

// Other is the cause every ByCause ends with: what no listed cause names is
// counted there, never under another cause's name.
const Other = "other"

// Cause names one cause, and the error it stands for (nil when the cause
// is counted by index, not by error).
type Cause struct {
	Name string
	Err  error
}

// ByCause counts events (errors, drops) by cause. It is safe for concurrent
// use. A reader that counts on a hot path keeps a Local and adds it to the
// ByCause once per round.
type ByCause struct {
	causes []Cause
	n      []atomic.Uint64
}

// New returns counters for the named causes, then Other.
func New(names ...string) *ByCause {
	causes := make([]Cause, len(names))
	for i, n := range names {
		causes[i].Name = n
	}
	return NewErrors(causes...)
}

// NewErrors returns counters for the causes, then Other. Index finds a
// cause by its error.
func NewErrors(causes ...Cause) *ByCause {
	c := &ByCause{causes: append(causes[:len(causes):len(causes)], Cause{Name: Other})}
	c.n = make([]atomic.Uint64, len(c.causes))
	return c
}

// Len is the number of causes, Other included.
func (c *ByCause) Len() int { return len(c.causes) }

// Name is the name of cause i.
func (c *ByCause) Name(i int) string { return c.causes[i].Name }

// Index is the cause of err: the first cause whose error err is (or wraps),
// else Other.
func (c *ByCause) Index(err error) int {
	last := len(c.causes) - 1
	for i, cs := range c.causes[:last] {
		if cs.Err != nil && err == cs.Err {
			return i
		}
	}
	for i, cs := range c.causes[:last] {
		if cs.Err != nil && errors.Is(err, cs.Err) {
			return i
		}
	}
	return last
}

// IndexOf is the index of the cause called name, else Other's.
func (c *ByCause) IndexOf(name string) int {
	for i, cs := range c.causes {
		if cs.Name == name {
			return i
		}
	}
	return len(c.causes) - 1
}

// Add counts n events of cause i.
func (c *ByCause) Add(i int, n uint64) { c.n[i].Add(n) }

// AddErr counts one event of err's cause.
func (c *ByCause) AddErr(err error) { c.n[c.Index(err)].Add(1) }

// Load is the count of cause i since the last Report.
func (c *ByCause) Load(i int) uint64 { return c.n[i].Load() }

// Report sends the counts since the last Report as the count metric name,
// one per cause that has any, tagged cause:NAME and then tags, and returns
// their total.
func (c *ByCause) Report(stats statsd.ClientInterface, name string, tags ...string) uint64 {
	var total uint64
	for i := range c.n {
		n := c.n[i].Swap(0)
		if n == 0 {
			continue
		}
		total += n
		t := make([]string, 0, 1+len(tags))
		t = append(append(t, "cause:"+c.causes[i].Name), tags...)
		stats.Count(name, int64(n), t, 1)
	}
	return total
}

// Local is a reader's unpublished share of a ByCause: plain counters, so
// the hot path pays no atomic operation per event.
type Local struct {
	c   *ByCause
	n   []uint64
	any bool
}

// NewLocal returns a Local for c.
func (c *ByCause) NewLocal() Local { return Local{c: c, n: make([]uint64, len(c.causes))} }

// AddErr counts one event of err's cause.
func (l *Local) AddErr(err error) {
	l.n[l.c.Index(err)]++
	l.any = true
}

// Add counts n events of cause i.
func (l *Local) Add(i int, n uint64) {
	l.n[i] += n
	l.any = true
}

// Publish adds the local counts to the ByCause and clears them.
func (l *Local) Publish() {
	if !l.any {
		return
	}
	for i, n := range l.n {
		if n > 0 {
			l.c.n[i].Add(n)
			l.n[i] = 0
		}
	}
	l.any = false
}
