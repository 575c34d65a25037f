// Package plugins holds the sinks veneur publishes to, each in a package of
// its own behind the Sink interface, and what they share: the defaults
// every sink applies (Common), HTTP requests (Poster) and their durable
// delivery (Queue: retries, backoff and a bounded spool per destination).
package plugins

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/ssf"
)

// Sink publishes what each flush produced. Flush runs in the background,
// once per interval, and must return within ctx. A sink takes the parts of
// the Batch it publishes and ignores the rest; it must not keep the batch,
// or modify it, after Flush returns.
type Sink interface {
	// Name tags the sink's self-metrics (veneur.sink.*, sink:NAME).
	Name() string
	Flush(ctx context.Context, b *Batch) error
}

// Closer is a sink that still holds work after Flush returned, such as
// the requests its Queue retries. The instance calls Close once, at
// shutdown, after the final Flush: Close delivers what waits until ctx
// ends, drops the rest (counted), and returns once the sink's goroutines
// have returned. Its error says what was dropped.
type Closer interface {
	Close(ctx context.Context) error
}

// Reporter is a part with self-metrics of its own, such as a sink's
// delivery counts. The instance calls Report at every flush; each call
// sends the counts since the previous one.
type Reporter interface {
	Report(stats statsd.ClientInterface)
}

// Batch is one interval's output.
type Batch struct {
	// Start is the start of the interval the batch holds. The flush loop
	// flushes at wall-clock boundaries (Unix time a multiple of the
	// interval), so every instance of a tier agrees on it.
	Start time.Time
	// Metrics are the values flushed here.
	Metrics []samplers.InterMetric
	// Forward is the state of the series a global instance publishes:
	// empty unless this instance forwards.
	Forward []samplers.Forwarded
	// Events and Checks are the DogStatsD events and service checks.
	Events []samplers.Event
	Checks []samplers.ServiceCheck
	// Spans are the SSF trace spans.
	Spans []*ssf.SSFSpan
}

// Env is what every sink is built with besides its own settings.
type Env struct {
	Common
	Log   *logrus.Logger
	Stats statsd.ClientInterface
}

// Common are the settings every sink applies alike.
type Common struct {
	// Hostname is the host of series, events and checks that name none.
	Hostname string
	// Tags are appended to the tags of everything published.
	Tags []string
	// Interval is the flush interval.
	Interval time.Duration
}

// Host is h, or the default hostname when h is empty.
func (c Common) Host(h string) string {
	if h == "" {
		return c.Hostname
	}
	return h
}

// WithTags is tags followed by the configured tags, in a new slice.
func (c Common) WithTags(tags []string) []string {
	out := make([]string, 0, len(tags)+len(c.Tags))
	return append(append(out, tags...), c.Tags...)
}

// IntervalSeconds is the interval in whole seconds, at least 1: the
// interval of rate values.
func (c Common) IntervalSeconds() int64 {
	return max(1, int64(math.Round(c.Interval.Seconds())))
}

// PartError is the failure of one part of what a sink publishes, such as
// "events" for a sink that publishes series and events, so that the error
// of each part is counted and logged apart (sink.error_total carries the
// tag part:PART) from the failures of the sink's metrics.
type PartError struct {
	Part string
	Err  error
}

func (e *PartError) Error() string { return e.Err.Error() }

func (e *PartError) Unwrap() error { return e.Err }

// Part marks err as the failure of part; a nil err stays nil.
func Part(part string, err error) error {
	if err == nil {
		return nil
	}
	return &PartError{Part: part, Err: err}
}

// Parts splits the error a Flush returned by part: one PartError per part
// that failed, in the order of first appearance, with Part "" for the
// failures not marked with Part. An error that wraps a mark belongs to the
// marked part, whole; errors joined (errors.Join, or fmt.Errorf with
// several %w) are looked into when some of them are marked. The errors of
// one part are joined. A nil error has no parts.
func Parts(err error) []PartError {
	var out []PartError
	add := func(part string, err error) {
		for i := range out {
			if out[i].Part == part {
				out[i].Err = errors.Join(out[i].Err, err)
				return
			}
		}
		out = append(out, PartError{Part: part, Err: err})
	}
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		var pe *PartError
		if !errors.As(err, &pe) {
			add("", err)
			return
		}
		if err == error(pe) {
			add(pe.Part, pe.Err)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		add(pe.Part, err)
	}
	walk(err)
	return out
}

// CheckURL checks the value of the config key key: an absolute http(s)
// URL with a host. The error names the key and gives example as the fix.
func CheckURL(key, value, example string) error {
	if value == "" {
		return fmt.Errorf("%s is empty; use a URL such as %s", key, example)
	}
	u, err := url.Parse(value)
	if err != nil {
		return fmt.Errorf("%s: %w; use an absolute URL such as %s", key, err, example)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s %q: not an absolute http(s) URL; use a URL such as %s", key, value, example)
	}
	return nil
}
