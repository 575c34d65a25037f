package veneur

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/internal/lograte"
)

// Sizes of the self-metrics client. The datadog-go defaults are made for
// an application sending many metrics: 32 workers and a pool and sender
// queue of 2,048 datagram buffers, 4.5 MB held for as long as the
// process runs. veneur sends at most a few hundred self-metrics per
// interval, most of them aggregated in the client and written at once
// when it flushes; a queue of statsQueue buffers carries several thousand
// of them, and the sender empties it as fast as it writes to the socket.
const (
	statsWorkers = 4
	statsQueue   = 128
)

// statsLogEvery is how often at most the self-metrics client's losses are
// logged.
const statsLogEvery = time.Minute

// selfStats is the client that sends the self-metrics to stats_address.
// What it loses is counted and reported with the next self-metrics:
// stats.dropped_total{cause:queue_full} (self-metrics dropped because its
// sender queue was full: the sender could not write as fast as they came)
// and stats.error_total{cause:write} (datagrams the socket refused, e.g.
// nothing listens at stats_address); each is logged at warn level at most
// once a minute.
type selfStats struct {
	*statsd.Client
	log *logrus.Logger

	queueFull, writeErrs       atomic.Uint64
	lastQueueLog, lastWriteLog atomic.Int64 // unix nanoseconds
}

// newStatsClient returns the client that sends the self-metrics to
// stats_address, each name after namespace.
func newStatsClient(addr, namespace string, log *logrus.Logger) (*selfStats, error) {
	s := &selfStats{log: log}
	c, err := statsd.New(addr,
		statsd.WithoutTelemetry(),
		statsd.WithNamespace(namespace),
		statsd.WithWorkersCount(statsWorkers),
		statsd.WithBufferPoolSize(statsQueue),
		statsd.WithSenderQueueSize(statsQueue),
		statsd.WithErrorHandler(s.lost),
	)
	if err != nil {
		return nil, err
	}
	s.Client = c
	return s, nil
}

// lost is the client's error handler. It runs on the client's goroutines.
func (s *selfStats) lost(err error) {
	var full *statsd.ErrorSenderChannelFull
	if errors.As(err, &full) {
		s.queueFull.Add(uint64(max(full.LostElements, 1)))
		if s.log != nil && lograte.Due(&s.lastQueueLog, statsLogEvery) {
			s.log.Warnf("self-metrics: the client's queue to stats_address was full; %d self-metrics dropped (counted in stats.dropped_total)", full.LostElements)
		}
		return
	}
	s.writeErrs.Add(1)
	if s.log != nil && lograte.Due(&s.lastWriteLog, statsLogEvery) {
		s.log.WithError(err).Warn("self-metrics: sending to stats_address failed (counted in stats.error_total)")
	}
}

// Report sends what the client lost since the last report.
func (s *selfStats) Report(stats statsd.ClientInterface) {
	if n := s.queueFull.Swap(0); n > 0 {
		stats.Count("stats.dropped_total", int64(n), []string{"cause:queue_full"}, 1)
	}
	if n := s.writeErrs.Swap(0); n > 0 {
		stats.Count("stats.error_total", int64(n), []string{"cause:write"}, 1)
	}
}
