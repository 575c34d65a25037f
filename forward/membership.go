package forward

import (
	"slices"
	"sync"
	"time"
)

// Membership says which ring routes the interval that starts at a given
// wall-clock boundary. Its methods are safe for concurrent use.
//
// Routing by interval start, not by the moment of sending, is what keeps
// an interval whole: a sender asks for the ring of the interval it
// flushes, and every sender that has seen the same membership state gets
// the same ring for it, so each series of an interval reaches one global
// however late it is sent.
type Membership interface {
	// RingFor returns the ring for the interval [start, start+interval)
	// and its epoch: the Unix second at which that ring took effect (0
	// for a static list). Every instance that has seen the same etcd
	// state returns the same ring and epoch for the same start.
	RingFor(start time.Time) (ring *Ring, epoch int64)
	// Snapshot is for GET /debug/ring and self-metrics: the current ring,
	// its epoch, and the pending changes with the boundary they apply at.
	Snapshot(now time.Time) MembershipSnapshot
	// Close stops watching; RingFor keeps answering from the last state.
	Close() error
}

// MembershipSnapshot is what a Membership knows at one moment, for
// GET /debug/ring (it marshals to JSON) and self-metrics.
type MembershipSnapshot struct {
	// Source is "static" or "etcd".
	Source string `json:"source"`
	// Start is the start of the interval in progress (etcd only: a static
	// list does not know the interval).
	Start time.Time `json:"start,omitzero"`
	// Members is the ring of that interval, sorted.
	Members []string `json:"members"`
	// Epoch is the Unix second at which that ring took effect, 0 for a
	// static list.
	Epoch int64 `json:"epoch"`
	// Pending are the changes already known that apply at a later
	// boundary, in order of their boundary.
	Pending []PendingChange `json:"pending,omitempty"`
	// Connected is whether the source answers: always true for a static
	// list; for etcd, whether the last list, watch or probe succeeded.
	Connected bool `json:"connected"`
	// Revision is the etcd revision the state is at (etcd only).
	Revision int64 `json:"revision,omitempty"`
}

// PendingChange is one member joining or leaving the ring at a boundary.
type PendingChange struct {
	// Address is the member's forward URL.
	Address string `json:"address"`
	// Join is true for a join, false for a leave.
	Join bool `json:"join"`
	// At is the start of the first interval the change applies to.
	At time.Time `json:"at"`
}

// Boundary returns the first multiple of interval, counted in Unix time,
// that is at or after t. An interval of zero or less returns t.
func Boundary(t time.Time, interval time.Duration) time.Time {
	if interval <= 0 {
		return t
	}
	ns := t.UnixNano()
	iv := int64(interval)
	b := ns - ns%iv // floor for ns >= 0
	if ns%iv < 0 {
		b -= iv
	}
	if b < ns {
		b += iv
	}
	return time.Unix(0, b)
}

// intervalStart is the last multiple of interval at or before t: the
// start of the interval t is in.
func intervalStart(t time.Time, interval time.Duration) time.Time {
	b := Boundary(t, interval)
	if b.After(t) {
		b = b.Add(-interval)
	}
	return b
}

// staticMembership is a fixed list: one ring for every interval.
type staticMembership struct{ ring *Ring }

// NewStaticMembership returns the membership of forward_addresses: the
// ring of urls for every interval, with epoch 0.
func NewStaticMembership(urls []string) Membership {
	return staticMembership{ring: NewRing(urls)}
}

func (s staticMembership) RingFor(time.Time) (*Ring, int64) { return s.ring, 0 }

func (s staticMembership) Snapshot(time.Time) MembershipSnapshot {
	return MembershipSnapshot{Source: "static", Members: s.ring.Members(), Connected: true}
}

func (s staticMembership) Close() error { return nil }

// span is a run of interval starts, in Unix seconds: [from, end), where an
// end of 0 means open.
type span struct{ from, end int64 }

func (s span) has(t int64) bool { return s.from <= t && (s.end == 0 || t < s.end) }

// clip returns the part of s before cut.
func (s span) before(cut int64) (span, bool) {
	if s.from >= cut {
		return span{}, false
	}
	if s.end == 0 || s.end > cut {
		s.end = cut
	}
	return s, true
}

// memberState is what a schedule knows of one address: the interval
// starts at which it is in the ring (sorted, disjoint, not touching) and
// whether its key is present in etcd now.
type memberState struct {
	spans   []span
	present bool
}

func (m *memberState) has(t int64) bool {
	for _, s := range m.spans {
		if s.has(t) {
			return true
		}
	}
	return false
}

// normalize sorts the spans, drops the empty ones and merges those that
// overlap or touch, so that every span edge is a change of membership.
func (m *memberState) normalize() {
	out := m.spans[:0]
	slices.SortFunc(m.spans, func(a, b span) int {
		switch {
		case a.from < b.from:
			return -1
		case a.from > b.from:
			return 1
		}
		return 0
	})
	for _, s := range m.spans {
		if s.end != 0 && s.end <= s.from {
			continue
		}
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.end == 0 || s.from <= last.end {
				if last.end != 0 && (s.end == 0 || s.end > last.end) {
					last.end = s.end
				}
				continue
			}
		}
		out = append(out, s)
	}
	m.spans = out
}

// forgetIntervals is how many intervals after it ended a span is kept,
// so that the rings of recent intervals (which a sender may still be
// routing, or retrying) are still known.
const forgetIntervals = 3

// schedule turns what is observed of the registrations (puts and deletes
// of values {address, from, until}, at observation times) into the member
// set of every interval start. It is the whole of the epoch rules and
// knows nothing of etcd; it is not safe for concurrent use.
//
// The rules, for an interval [s, s+interval):
//   - a value (from, until) observed for an unknown address puts it in for
//     from <= s < until (until 0: no end), as written;
//   - a value observed for a known address decides from its own from on;
//     what was known for starts before that from is kept, so that a
//     re-registration (which writes a new from) never takes a member out
//     of an interval that senders are already routing;
//   - a delete observed at t ends the address at Boundary(t+interval),
//     unless it had already ended: a member whose lease expired stays in
//     the ring to the end of the next full interval, and that boundary is
//     the same for every observer that sees the delete within the same
//     interval.
//
// Spans that ended more than forgetIntervals intervals ago are forgotten;
// their last edge is kept in floor, so that the epoch of a later ring does
// not change when they are.
type schedule struct {
	interval int64 // seconds
	members  map[string]*memberState
	floor    int64 // the latest edge of a forgotten span
}

func newSchedule(interval time.Duration) *schedule {
	return &schedule{interval: int64(interval / time.Second), members: map[string]*memberState{}}
}

// boundaryAfter is Boundary(t+interval) in Unix seconds.
func (s *schedule) boundaryAfter(t time.Time) int64 {
	return Boundary(t.Add(time.Duration(s.interval)*time.Second), time.Duration(s.interval)*time.Second).Unix()
}

// put records that the value (from, until) of address was observed
// (listed or watched); it reports whether the member set of any interval
// changed.
func (s *schedule) put(address string, from, until int64) bool {
	m := s.members[address]
	if m == nil {
		m = &memberState{}
		s.members[address] = m
	}
	m.present = true
	old := slices.Clone(m.spans)
	kept := m.spans[:0]
	for _, sp := range m.spans {
		if c, ok := sp.before(from); ok {
			kept = append(kept, c)
		}
	}
	m.spans = append(kept, span{from: from, end: until})
	m.normalize()
	return !slices.Equal(old, m.spans)
}

// remove records that the key of address was observed deleted at now (by
// a watch event, or by its absence from a fresh list); it reports whether
// the member set of any interval changed.
func (s *schedule) remove(address string, now time.Time) bool {
	m := s.members[address]
	if m == nil {
		return false
	}
	m.present = false
	end := s.boundaryAfter(now)
	old := slices.Clone(m.spans)
	kept := m.spans[:0]
	for _, sp := range m.spans {
		if c, ok := sp.before(end); ok {
			kept = append(kept, c)
		}
	}
	m.spans = kept
	return !slices.Equal(old, m.spans)
}

// forget drops the spans that ended more than forgetIntervals intervals
// before now, and the addresses with no span left and no key.
func (s *schedule) forget(now time.Time) {
	horizon := now.Unix() - forgetIntervals*s.interval
	for a, m := range s.members {
		kept := m.spans[:0]
		for _, sp := range m.spans {
			if sp.end != 0 && sp.end < horizon {
				s.floor = max(s.floor, sp.end)
				continue
			}
			kept = append(kept, sp)
		}
		m.spans = kept
		if len(m.spans) == 0 && !m.present {
			delete(s.members, a)
		}
	}
}

// membersAt returns the sorted addresses in the ring for start t (Unix
// seconds).
func (s *schedule) membersAt(t int64) []string {
	var in []string
	for a, m := range s.members {
		if m.has(t) {
			in = append(in, a)
		}
	}
	slices.Sort(in)
	return in
}

// epochAt is the latest span edge at or before t (Unix seconds): the
// boundary at which the member set of t took effect, or 0 when it has
// been the same since the first thing known.
func (s *schedule) epochAt(t int64) int64 {
	e := int64(0)
	if s.floor <= t {
		e = s.floor
	}
	for _, m := range s.members {
		for _, sp := range m.spans {
			if sp.from <= t {
				e = max(e, sp.from)
			}
			if sp.end != 0 && sp.end <= t {
				e = max(e, sp.end)
			}
		}
	}
	return e
}

// pending lists the edges after t (Unix seconds), in order.
func (s *schedule) pending(t int64) []PendingChange {
	var p []PendingChange
	for a, m := range s.members {
		for _, sp := range m.spans {
			if sp.from > t {
				p = append(p, PendingChange{Address: a, Join: true, At: time.Unix(sp.from, 0)})
			}
			if sp.end != 0 && sp.end > t {
				p = append(p, PendingChange{Address: a, Join: false, At: time.Unix(sp.end, 0)})
			}
		}
	}
	slices.SortFunc(p, func(a, b PendingChange) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		if a.Address < b.Address {
			return -1
		}
		if a.Address > b.Address {
			return 1
		}
		return 0
	})
	return p
}

// ringCache keeps the last ring built, so that asking for the ring of
// every interval builds (and hashes) a new one only when the member set
// changed, and callers may compare rings by pointer.
type ringCache struct {
	mu   sync.Mutex
	last *Ring
}

func (c *ringCache) get(members []string) *Ring {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last != nil && slices.Equal(c.last.members, members) {
		return c.last
	}
	c.last = NewRing(members)
	return c.last
}
