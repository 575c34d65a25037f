// Package plugins holds the sinks veneur publishes to, each in a package of
// its own behind the Sink interface, and what they share: the defaults
// every sink applies (Common) and HTTP delivery (Poster).
package plugins

import (
	"context"
	"math"
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

// Batch is one interval's output.
type Batch struct {
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
