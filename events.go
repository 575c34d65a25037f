package veneur

import (
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
	appendCapped(&b.events, e, &b.droppedEvents, maxEventsPerInterval)
}

func (b *eventBuffer) addCheck(c samplers.ServiceCheck) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nChecks++
	appendCapped(&b.checks, c, &b.droppedChecks, maxEventsPerInterval)
}

// appendCapped appends v to *list unless it holds limit items already, in
// which case it counts a drop.
func appendCapped[T any](list *[]T, v T, dropped *uint64, limit int) {
	if len(*list) >= limit {
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
