package veneur

import "github.com/DataDog/datadog-go/v5/statsd"

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

// newStatsClient returns the client that sends the self-metrics to
// stats_address, each name after namespace.
func newStatsClient(addr, namespace string) (*statsd.Client, error) {
	return statsd.New(addr,
		statsd.WithoutTelemetry(),
		statsd.WithNamespace(namespace),
		statsd.WithWorkersCount(statsWorkers),
		statsd.WithBufferPoolSize(statsQueue),
		statsd.WithSenderQueueSize(statsQueue),
	)
}
