// Package listen has veneur's listeners: UDP, TCP (with TLS), unix
// datagram and stream sockets, and the SSF socket, and the binding of
// their addresses, inherited sockets (fd@N, einhorn@N, systemd:NAME)
// included. A listener does only I/O: it reads datagrams, lines or spans and
// hands them to the Ingester it was given, one per reader goroutine. It
// never aggregates and never holds the server.
package listen

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

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
	// the datagram did not fit the receive buffer (max_datagram_bytes):
	// its last line is cut.
	Packet(p []byte, truncated bool)
	// Line processes one DogStatsD line, without its newline.
	Line(line []byte)
	// Skip counts a line skipped for err (samplers.ErrTooLong,
	// ErrUnterminated, ErrTruncated) without processing it.
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

// Options are what every listener takes besides its settings.
type Options struct {
	// Log receives the listener's logs; nil means a new logrus logger.
	Log *logrus.Logger
	// Guard, when not nil, is deferred at the top of every goroutine a
	// listener starts. It must call recover() itself (a deferred function
	// recovers only when it calls recover directly) and, having reported
	// the panic, should panic again so that the process still crashes.
	Guard func()
	// Bind binds the listeners' addresses; the listeners of one server
	// share it. nil binds with the defaults (see Binder).
	Bind *Binder
	// DatagramReaders is how many datagram readers the server runs in
	// all, over every datagram listener: each keeps a P while busy, and
	// GOMAXPROCS is raised to make room for all of them (see
	// reserveReaderProcs). 0 counts the listener's own.
	DatagramReaders int
}

// logger is o.Log, or a new logger when it is nil.
func (o Options) logger() *logrus.Logger {
	if o.Log == nil {
		return logrus.New()
	}
	return o.Log
}

// guard returns the function to defer at the top of a goroutine: Guard, or
// a no-op when it is nil (deferring a nil func panics). Guard is returned
// as is, not wrapped, so that its recover() runs in the deferred call
// itself and so stops the panic.
func (o Options) guard() func() {
	if o.Guard == nil {
		return func() {}
	}
	return o.Guard
}

// stopper tracks a listener's life: Start once, then Stop any number of
// times, every Stop waiting for the same end.
type stopper struct {
	mu      sync.Mutex
	started bool
	stopped bool
	// done is closed once the listener's goroutines have returned and its
	// sockets are closed.
	done chan struct{}
}

// start runs run, which binds and starts the listener, unless it was
// started before. The listener counts as started only if run succeeds; a
// concurrent stop waits until run has returned.
func (s *stopper) start(name string, run func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return fmt.Errorf("%s listener: already started", name)
	}
	if err := run(); err != nil {
		return err
	}
	s.started = true
	s.done = make(chan struct{})
	return nil
}

// stop runs begin on the first call after a successful start; begin starts
// the drain and must see to it that done is closed once the listener's
// goroutines have returned and its sockets are closed. Every call then
// waits until done is closed or ctx ends. Before Start it returns nil.
func (s *stopper) stop(ctx context.Context, name string, begin func(done chan<- struct{})) error {
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		return nil
	}
	done := s.done
	if !s.stopped {
		s.stopped = true
		begin(done)
	}
	s.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the %s listener's readers: %w", name, ctx.Err())
	}
}

// checkConfig checks what every listener's constructor is given.
func checkConfig(kind, address string, maxLength int, newIngester NewIngester) error {
	switch {
	case address == "":
		return fmt.Errorf("%s listener: no address", kind)
	case maxLength < 1:
		return fmt.Errorf("%s listener: maximum length %d, want at least 1", kind, maxLength)
	case newIngester == nil:
		return fmt.Errorf("%s listener: no ingester", kind)
	}
	return nil
}
