// Package statstest records self-metrics for tests: a statsd client that
// keeps what it is sent.
package statstest

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
)

// Recorder is a statsd.ClientInterface that keeps every count, gauge and
// timing it is sent. It is safe for concurrent use.
type Recorder struct {
	statsd.NoOpClient
	mu     sync.Mutex
	counts map[string]int64
	gauges map[string]float64
	timing map[string]int
}

var _ statsd.ClientInterface = (*Recorder)(nil)

// key is name|tag,tag with the tags sorted.
func key(name string, tags []string) string {
	t := slices.Clone(tags)
	slices.Sort(t)
	return name + "|" + strings.Join(t, ",")
}

// Count records a count.
func (r *Recorder) Count(name string, value int64, tags []string, _ float64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = map[string]int64{}
	}
	r.counts[key(name, tags)] += value
	return nil
}

// Incr records a count of 1.
func (r *Recorder) Incr(name string, tags []string, rate float64) error {
	return r.Count(name, 1, tags, rate)
}

// Gauge records a gauge's last value.
func (r *Recorder) Gauge(name string, value float64, tags []string, _ float64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gauges == nil {
		r.gauges = map[string]float64{}
	}
	r.gauges[key(name, tags)] = value
	return nil
}

// TimeInMilliseconds records that a timing was sent.
func (r *Recorder) TimeInMilliseconds(name string, _ float64, tags []string, _ float64) error {
	return r.timed(name, tags)
}

// Timing records that a timing was sent.
func (r *Recorder) Timing(name string, _ time.Duration, tags []string, _ float64) error {
	return r.timed(name, tags)
}

// Histogram records that a histogram value was sent.
func (r *Recorder) Histogram(name string, _ float64, tags []string, _ float64) error {
	return r.timed(name, tags)
}

func (r *Recorder) timed(name string, tags []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.timing == nil {
		r.timing = map[string]int{}
	}
	r.timing[key(name, tags)]++
	return nil
}

// Sum is the total of the counts named name whose tags include every one
// of tags.
func (r *Recorder) Sum(name string, tags ...string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var total int64
	for k, v := range r.counts {
		if matches(k, name, tags) {
			total += v
		}
	}
	return total
}

// GaugeValue is the last value of the gauge with exactly these tags.
func (r *Recorder) GaugeValue(name string, tags ...string) (float64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.gauges[key(name, tags)]
	return v, ok
}

// Timings is how many timings named name, with tags among theirs, were sent.
func (r *Recorder) Timings(name string, tags ...string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, v := range r.timing {
		if matches(k, name, tags) {
			n += v
		}
	}
	return n
}

// Names lists the count names recorded, each once, sorted.
func (r *Recorder) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	for k := range r.counts {
		names = append(names, k[:strings.IndexByte(k, '|')])
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func matches(k, name string, tags []string) bool {
	n, t, _ := strings.Cut(k, "|")
	if n != name {
		return false
	}
	have := strings.Split(t, ",")
	for _, want := range tags {
		if !slices.Contains(have, want) {
			return false
		}
	}
	return true
}
