package forward

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"

	"github.com/veneur/veneur/internal/counter"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// ShardedConfig sets up a Sharded forwarder.
type ShardedConfig struct {
	// Membership says which globals own which series in each interval.
	Membership Membership
	// NewMember builds the sink that delivers to one global, given its
	// forward URL: a Client for http(s)://, a GRPCClient for grpc(s)://.
	NewMember func(address string) (plugins.Sink, error)
	// Interval is the flush interval; a member that has left the ring
	// keeps its sink (and what it still holds to deliver) for two more
	// intervals before the sink is closed.
	Interval time.Duration
}

// Sharded forwards over a tier of globals: it splits the series of each
// flush by their owner in the ring of the flush's interval (see
// Membership.RingFor) and sends each global its share, as one request,
// through a sink of its own (so each global has its own retries and
// spool). Every sender that sees the same membership routes a series to
// the same global in a given interval, so no global publishes a series
// that another one publishes for the same interval.
//
// It is the forward sink of a local with several globals, and the router
// of veneur-proxy (Merge).
type Sharded struct {
	cfg   ShardedConfig
	log   logger
	stats statsd.ClientInterface
	// now is the clock of Merge (tests set it).
	now func() time.Time

	mu      sync.Mutex
	members map[string]*shardMember
	closed  bool
	// closing are the sinks of members that left, being closed.
	closing sync.WaitGroup

	// dropped counts series that no global could take:
	// forward.ring.dropped_total{cause:no_member|member}.
	dropped *counter.ByCause
	// resent counts the series taken back from members that left the
	// ring, sent again: forward.ring.resent_total.
	resent atomic.Uint64
	// epoch is the last epoch routed by, for forward.ring.epoch.
	epoch int64
}

// shardMember is the sink of one global and what it was sent lately.
type shardMember struct {
	address string
	sink    plugins.Sink
	// lastUsed is the start of the last interval that routed to it.
	lastUsed time.Time
	// series is the number of series sent in the last interval, and
	// total since the last Report.
	series int
}

// The causes of Sharded.dropped.
const (
	causeNoMember = iota // the ring was empty
	causeMember          // the member's sink could not be built
)

type logger interface {
	Warnf(format string, args ...any)
}

var (
	_ plugins.Sink     = (*Sharded)(nil)
	_ plugins.Closer   = (*Sharded)(nil)
	_ plugins.Reporter = (*Sharded)(nil)
	_ Merger           = (*Sharded)(nil)
)

// NewSharded returns a Sharded forwarder for cfg. It builds a member's
// sink when the first series is routed to it.
func NewSharded(cfg ShardedConfig, env plugins.Env) (*Sharded, error) {
	if cfg.Membership == nil || cfg.NewMember == nil {
		return nil, errors.New("forward: NewSharded needs a Membership and NewMember")
	}
	if cfg.Interval <= 0 {
		return nil, errors.New("forward: NewSharded needs the interval")
	}
	s := &Sharded{
		cfg:     cfg,
		stats:   env.Stats,
		now:     time.Now,
		members: map[string]*shardMember{},
		dropped: counter.New("no_member", "member"),
	}
	if env.Log != nil {
		s.log = env.Log
	}
	if s.stats == nil {
		s.stats = &statsd.NoOpClient{}
	}
	return s, nil
}

// Name names the sink in self-metrics.
func (s *Sharded) Name() string { return "forward" }

// Flush sends each global its share of b.Forward, routed by the ring of
// the interval that starts at b.Start.
func (s *Sharded) Flush(ctx context.Context, b *plugins.Batch) error {
	if len(b.Forward) == 0 {
		s.retire(b.Start)
		return nil
	}
	return s.send(ctx, b.Start, b.Forward)
}

// Merge routes series imported by veneur-proxy. They were flushed by their
// local at the boundary that starts the interval in progress, so they
// belong to the interval before it, and are routed by its ring.
func (s *Sharded) Merge(metrics []samplers.Forwarded) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if len(metrics) == 0 {
		return nil
	}
	last := alignDownUnix(s.now(), s.cfg.Interval)
	return s.send(context.Background(), last.Add(-s.cfg.Interval), metrics)
}

func (s *Sharded) send(ctx context.Context, start time.Time, metrics []samplers.Forwarded) error {
	ring, epoch := s.cfg.Membership.RingFor(start)
	if ring == nil || ring.Len() == 0 {
		s.dropped.Add(causeNoMember, uint64(len(metrics)))
		return fmt.Errorf("no global instance in the ring for the interval starting %s: %d series dropped", start.UTC().Format(time.RFC3339), len(metrics))
	}
	parts := make([][]samplers.Forwarded, ring.Len())
	var key []byte
	var sorted []string
	for i := range metrics {
		m := &metrics[i]
		tags := m.Tags
		if !slices.IsSorted(tags) {
			// An imported series (veneur-proxy) may carry its tags in any
			// order; its owner is that of its sorted tags.
			sorted = append(sorted[:0], tags...)
			slices.Sort(sorted)
			tags = sorted
		}
		key = samplers.AppendForwardedKey(key[:0], &samplers.Forwarded{Type: m.Type, Scope: m.Scope, Name: m.Name, Tags: tags})
		o := ring.Owner(key)
		parts[o] = append(parts[o], *m)
	}
	var errs []error
	for i, part := range parts {
		if len(part) == 0 {
			continue
		}
		address := ring.Members()[i]
		sink, err := s.member(address, start, len(part))
		if err != nil {
			s.dropped.Add(causeMember, uint64(len(part)))
			errs = append(errs, err)
			continue
		}
		if err := sink.Flush(ctx, &plugins.Batch{Forward: part, Start: start}); err != nil {
			errs = append(errs, fmt.Errorf("forwarding to %s: %w", address, err))
		}
	}
	s.mu.Lock()
	s.epoch = epoch
	s.mu.Unlock()
	s.retire(start)
	return errors.Join(errs...)
}

// member returns the sink of address, building it the first time.
func (s *Sharded) member(address string, start time.Time, series int) (plugins.Sink, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.members[address]
	if m == nil {
		sink, err := s.cfg.NewMember(address)
		if err != nil {
			return nil, fmt.Errorf("global instance %s: %w", address, err)
		}
		m = &shardMember{address: address, sink: sink}
		s.members[address] = m
	}
	if start.After(m.lastUsed) {
		m.lastUsed = start
		m.series = 0
	}
	m.series += series
	return m.sink, nil
}

// Reclaimer is a member's sink that can give back, when its member has
// left the ring, the series its global provably never received (Client
// and GRPCClient do).
type Reclaimer interface {
	Reclaim(ctx context.Context) ([]samplers.Forwarded, error)
}

// retire closes, in the background, the sinks of members that are in
// neither the ring of start nor that of the next interval: they left the
// ring. What such a sink still holds that its global provably never
// received (its connection was refused, or it was never sent) is sent
// again, to the series' owners in the interval in progress, and counted in
// forward.ring.resent_total; the rest is delivered, or dropped and counted
// by the sink, within ten intervals.
func (s *Sharded) retire(start time.Time) {
	ring, _ := s.cfg.Membership.RingFor(start)
	next, _ := s.cfg.Membership.RingFor(start.Add(s.cfg.Interval))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for address, m := range s.members {
		if slices.Contains(ring.Members(), address) || slices.Contains(next.Members(), address) {
			continue
		}
		delete(s.members, address)
		s.closing.Add(1)
		go func() {
			defer s.closing.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*s.cfg.Interval)
			defer cancel()
			var err error
			switch sink := m.sink.(type) {
			case Reclaimer:
				var back []samplers.Forwarded
				back, err = sink.Reclaim(ctx)
				if len(back) > 0 {
					s.resent.Add(uint64(len(back)))
					if s.log != nil {
						s.log.Warnf("forward: %s left the ring without taking %d series; sending them to their new owners", address, len(back))
					}
					now := s.now()
					if serr := s.send(ctx, alignDownUnix(now, s.cfg.Interval), back); serr != nil {
						err = errors.Join(err, serr)
					}
				}
			case plugins.Closer:
				err = sink.Close(ctx)
			}
			if err != nil && s.log != nil {
				s.log.Warnf("forward: closing the sink of %s, which left the ring: %v", address, err)
			}
			if r, ok := m.sink.(plugins.Reporter); ok {
				r.Report(s.stats)
			}
		}()
	}
}

// alignDownUnix is the last multiple of interval, in Unix time, at or
// before t.
func alignDownUnix(t time.Time, interval time.Duration) time.Time {
	b := Boundary(t, interval)
	if !b.Equal(t) {
		b = b.Add(-interval)
	}
	return b
}

// Close delivers what every member's sink holds until ctx ends.
func (s *Sharded) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	members := make([]*shardMember, 0, len(s.members))
	for _, m := range s.members {
		members = append(members, m)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(members))
	for i, m := range members {
		c, ok := m.sink.(plugins.Closer)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Close(ctx)
		}()
	}
	wg.Wait()
	s.closing.Wait()
	return errors.Join(errs...)
}

// Report sends the members' delivery self-metrics and the ring's:
// forward.ring.series{member} (series sent to each member in its last
// interval), forward.ring.epoch and forward.ring.dropped_total.
func (s *Sharded) Report(stats statsd.ClientInterface) {
	s.mu.Lock()
	type row struct {
		sink   plugins.Sink
		tag    string
		series int
	}
	rows := make([]row, 0, len(s.members))
	for _, m := range s.members {
		rows = append(rows, row{m.sink, "member:" + m.address, m.series})
	}
	epoch := s.epoch
	s.mu.Unlock()
	for _, r := range rows {
		stats.Gauge("forward.ring.series", float64(r.series), []string{r.tag}, 1)
		if rep, ok := r.sink.(plugins.Reporter); ok {
			rep.Report(stats)
		}
	}
	stats.Gauge("forward.ring.epoch", float64(epoch), nil, 1)
	if n := s.resent.Swap(0); n > 0 {
		stats.Count("forward.ring.resent_total", int64(n), nil, 1)
	}
	s.dropped.Report(stats, "forward.ring.dropped_total")
	if r, ok := s.cfg.Membership.(plugins.Reporter); ok {
		r.Report(stats)
	}
}

// Shares is the number of series sent to each member in the last
// interval that routed to it, for GET /debug/ring.
func (s *Sharded) Shares() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.members))
	for a, m := range s.members {
		out[a] = m.series
	}
	return out
}
