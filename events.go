package veneur

import (
	"context"
	"sync"

	"github.com/veneur/veneur/samplers"
)

// maxEventsPerInterval bounds the events, and separately the service
// checks, one interval keeps; more are dropped and counted.
const maxEventsPerInterval = 10_000

// eventBuffer collects DogStatsD events and service checks until the next
// flush. They are rare next to metrics, so readers share it under a lock.
type eventBuffer struct {
	mu            sync.Mutex
	events        []samplers.Event
	checks        []samplers.ServiceCheck
	nEvents       uint64 // received this interval, kept or not
	nChecks       uint64
	droppedEvents uint64
	droppedChecks uint64
}

func (b *eventBuffer) addEvent(e samplers.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nEvents++
	appendCapped(&b.events, e, &b.droppedEvents)
}

func (b *eventBuffer) addCheck(c samplers.ServiceCheck) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nChecks++
	appendCapped(&b.checks, c, &b.droppedChecks)
}

// appendCapped appends v to *list unless it holds maxEventsPerInterval
// items already, in which case it counts a drop.
func appendCapped[T any](list *[]T, v T, dropped *uint64) {
	if len(*list) >= maxEventsPerInterval {
		*dropped++
		return
	}
	*list = append(*list, v)
}

// eventInterval is what an eventBuffer held since the last swap.
type eventInterval struct {
	events                       []samplers.Event
	checks                       []samplers.ServiceCheck
	nEvents, nChecks             uint64
	droppedEvents, droppedChecks uint64
}

func (b *eventBuffer) swap() eventInterval {
	b.mu.Lock()
	defer b.mu.Unlock()
	iv := eventInterval{b.events, b.checks, b.nEvents, b.nChecks, b.droppedEvents, b.droppedChecks}
	b.events, b.checks = nil, nil
	b.nEvents, b.nChecks, b.droppedEvents, b.droppedChecks = 0, 0, 0, 0
	return iv
}

// EventSink is a sink that also publishes events and service checks.
type EventSink interface {
	FlushEvents(ctx context.Context, events []samplers.Event, checks []samplers.ServiceCheck) error
}

// flushEvents reports the interval's events and hands them to the sinks
// that take them.
func (s *Server) flushEvents(ctx context.Context) {
	iv := s.events.swap()
	for _, c := range []struct {
		typ               string
		received, dropped uint64
	}{{"event", iv.nEvents, iv.droppedEvents}, {"service_check", iv.nChecks, iv.droppedChecks}} {
		if c.received > 0 {
			s.stats.Count("events.received_total", int64(c.received), []string{"type:" + c.typ}, 1)
		}
		if c.dropped > 0 {
			s.stats.Count("events.dropped_total", int64(c.dropped), []string{"type:" + c.typ}, 1)
			s.log.WithField("type", c.typ).WithField("dropped", c.dropped).Warn("more events than one interval keeps; the rest were dropped")
		}
	}
	if len(iv.events) == 0 && len(iv.checks) == 0 {
		return
	}
	for _, sink := range s.sinks {
		es, ok := sink.(EventSink)
		if !ok {
			continue
		}
		s.background(ctx, func(fctx context.Context) {
			if err := es.FlushEvents(fctx, iv.events, iv.checks); err != nil {
				s.stats.Count("sink.error_total", 1, []string{"sink:" + sink.Name(), "part:events"}, 1)
				s.log.WithError(err).WithField("sink", sink.Name()).Error("flushing events and service checks failed")
			}
		})
	}
}
