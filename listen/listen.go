// Package listen has veneur's listeners: UDP, TCP (with TLS) and the SSF
// socket. A listener does only I/O: it reads datagrams, lines or spans and
// hands them to the Ingester it was given, one per reader goroutine. It
// never aggregates and never holds the server.
package listen

import (
	"context"
	"net"

	"github.com/DataDog/datadog-go/v5/statsd"

	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/ssf"
)

// Listener is one socket veneur receives on. New* functions build one
// from its settings and bind nothing; Start binds and starts its
// goroutines (an error leaves nothing running); Stop stops reading, drains
// what was already received into the ingesters, and returns once every
// reader goroutine has handed over what it held.
type Listener interface {
	Start() error
	Stop(ctx context.Context) error
	// Addr is the bound address, nil before Start.
	Addr() net.Addr
	// Report sends the listener's self-metrics since the last Report.
	Report(stats statsd.ClientInterface)
}

// Ingester takes what one reader goroutine receives. NewIngester gives
// every reader goroutine its own; an Ingester is not safe for concurrent
// use. Byte slices passed to it are only valid during the call.
type Ingester interface {
	// Packet processes one datagram of DogStatsD lines. truncated says
	// the datagram did not fit the receive buffer.
	Packet(p []byte, truncated bool)
	// Line processes one DogStatsD line, without its newline.
	Line(line []byte)
	// Skip counts a line skipped for err (samplers.ErrTooLong,
	// ErrUnterminated) without processing it.
	Skip(err error)
	// Check takes a service check (SSF STATUS samples).
	Check(c samplers.ServiceCheck)
	// Span takes an SSF trace span for the trace sinks.
	Span(sp *ssf.SSFSpan)
	// Flush hands over what the ingester holds. Readers call it after
	// every receive round, so that batches fill under load and go out at
	// once when traffic is light.
	Flush()
}

// NewIngester returns a new Ingester for one reader goroutine.
type NewIngester func() Ingester
