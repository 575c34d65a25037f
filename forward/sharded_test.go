package forward

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// recordingSink keeps what each member was sent.
type recordingSink struct {
	address string
	mu      sync.Mutex
	batches []*plugins.Batch
	closed  bool
}

func (r *recordingSink) Name() string { return "forward" }
func (r *recordingSink) Flush(_ context.Context, b *plugins.Batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, b)
	return nil
}
func (r *recordingSink) Close(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

type recordingMembers struct {
	mu    sync.Mutex
	sinks map[string]*recordingSink
	fail  string // an address whose sink cannot be built
}

func (m *recordingMembers) build(address string) (plugins.Sink, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if address == m.fail {
		return nil, errors.New("cannot build")
	}
	if m.sinks == nil {
		m.sinks = map[string]*recordingSink{}
	}
	s := &recordingSink{address: address}
	m.sinks[address] = s
	return s, nil
}

func counters(n int) []samplers.Forwarded {
	out := make([]samplers.Forwarded, n)
	for i := range out {
		out[i] = samplers.Forwarded{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: fmt.Sprintf("c.%d", i), Tags: []string{"a:1", "b:2"}, Counter: float64(i)}
	}
	return out
}

// movable is a Membership whose ring the test sets per interval start.
type movable struct {
	mu    sync.Mutex
	rings map[int64]*Ring
	def   *Ring
}

func (m *movable) RingFor(start time.Time) (*Ring, int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.rings[start.Unix()]; ok {
		return r, start.Unix()
	}
	return m.def, 0
}
func (m *movable) Snapshot(time.Time) MembershipSnapshot { return MembershipSnapshot{} }
func (m *movable) Close() error                          { return nil }

func TestShardedSendsEachSeriesToItsOwnerOnce(t *testing.T) {
	members := []string{"http://g1:8127", "http://g2:8127", "grpc://g3:8128"}
	rec := &recordingMembers{}
	s, err := NewSharded(ShardedConfig{Membership: NewStaticMembership(members), NewMember: rec.build, Interval: time.Second}, plugins.Env{})
	if err != nil {
		t.Fatal(err)
	}
	in := counters(3000)
	start := time.Unix(1_700_000_000, 0)
	if err := s.Flush(context.Background(), &plugins.Batch{Start: start, Forward: in}); err != nil {
		t.Fatal(err)
	}
	ring := NewRing(members)
	seen := map[string]string{}
	for address, sink := range rec.sinks {
		if len(sink.batches) != 1 {
			t.Fatalf("%s got %d requests, want one per flush", address, len(sink.batches))
		}
		b := sink.batches[0]
		if !b.Start.Equal(start) {
			t.Errorf("%s: batch start %v, want %v", address, b.Start, start)
		}
		for _, f := range b.Forward {
			if prev, dup := seen[f.Name]; dup {
				t.Fatalf("%s sent to %s and %s", f.Name, prev, address)
			}
			seen[f.Name] = address
			key := samplers.AppendForwardedKey(nil, &f)
			if owner := ring.Members()[ring.Owner(key)]; owner != address {
				t.Fatalf("%s sent to %s, its owner is %s", f.Name, address, owner)
			}
		}
		// An even spread: 3000 series over 3 members.
		if n := len(b.Forward); n < 800 || n > 1200 {
			t.Errorf("%s got %d of 3000 series", address, n)
		}
	}
	if len(seen) != len(in) {
		t.Fatalf("%d series sent, want %d", len(seen), len(in))
	}
	shares := s.Shares()
	total := 0
	for _, n := range shares {
		total += n
	}
	if total != len(in) || len(shares) != 3 {
		t.Errorf("Shares() = %v, want 3 members summing to %d", shares, len(in))
	}
}

func TestShardedUnsortedTagsRouteLikeSorted(t *testing.T) {
	members := []string{"http://g1:8127", "http://g2:8127", "http://g3:8127", "http://g4:8127"}
	rec := &recordingMembers{}
	s, _ := NewSharded(ShardedConfig{Membership: NewStaticMembership(members), NewMember: rec.build, Interval: time.Second}, plugins.Env{})
	var in []samplers.Forwarded
	for i := range 200 {
		in = append(in, samplers.Forwarded{Type: samplers.HistogramMetric, Scope: samplers.MixedScope, Name: fmt.Sprintf("h.%d", i), Tags: []string{"z:1", "a:2"}})
		in = append(in, samplers.Forwarded{Type: samplers.HistogramMetric, Scope: samplers.MixedScope, Name: fmt.Sprintf("h.%d", i), Tags: []string{"a:2", "z:1"}})
	}
	if err := s.Flush(context.Background(), &plugins.Batch{Start: time.Unix(100, 0), Forward: in}); err != nil {
		t.Fatal(err)
	}
	where := map[string]string{}
	for address, sink := range rec.sinks {
		for _, b := range sink.batches {
			for _, f := range b.Forward {
				if prev, ok := where[f.Name]; ok && prev != address {
					t.Fatalf("%s: tags in another order went to %s and %s", f.Name, prev, address)
				}
				where[f.Name] = address
			}
		}
	}
	if len(where) != 200 {
		t.Fatalf("%d names routed, want 200", len(where))
	}
}

func TestShardedEmptyRingDropsAndCounts(t *testing.T) {
	rec := &recordingMembers{}
	stats := &statstest.Recorder{}
	s, _ := NewSharded(ShardedConfig{Membership: NewStaticMembership(nil), NewMember: rec.build, Interval: time.Second}, plugins.Env{Stats: stats})
	err := s.Flush(context.Background(), &plugins.Batch{Start: time.Unix(100, 0), Forward: counters(7)})
	if err == nil || !strings.Contains(err.Error(), "no global instance") {
		t.Fatalf("Flush with no member: %v, want an error saying there is no global", err)
	}
	s.Report(stats)
	if n := stats.Sum("forward.ring.dropped_total", "cause:no_member"); n != 7 {
		t.Errorf("forward.ring.dropped_total{cause:no_member} = %d, want 7", n)
	}
}

func TestShardedMemberThatCannotBeBuiltIsCounted(t *testing.T) {
	members := []string{"http://g1:8127", "http://g2:8127"}
	rec := &recordingMembers{fail: "http://g2:8127"}
	stats := &statstest.Recorder{}
	s, _ := NewSharded(ShardedConfig{Membership: NewStaticMembership(members), NewMember: rec.build, Interval: time.Second}, plugins.Env{Stats: stats})
	err := s.Flush(context.Background(), &plugins.Batch{Start: time.Unix(100, 0), Forward: counters(100)})
	if err == nil || !strings.Contains(err.Error(), "g2") {
		t.Fatalf("Flush: %v, want an error naming g2", err)
	}
	s.Report(stats)
	sent := len(rec.sinks["http://g1:8127"].batches[0].Forward)
	if n := stats.Sum("forward.ring.dropped_total", "cause:member"); int(n) != 100-sent || n == 0 {
		t.Errorf("dropped{cause:member} = %d, want %d", n, 100-sent)
	}
}

// The ring of the batch's interval routes it: a member that joins at a
// boundary gets series from that interval on, and one that is gone from
// the rings of the next intervals has its sink closed.
func TestShardedFollowsTheRingOfEachInterval(t *testing.T) {
	iv := time.Second
	t0 := time.Unix(1_700_000_000, 0)
	m := &movable{def: NewRing([]string{"http://a:1", "http://b:1"}), rings: map[int64]*Ring{}}
	rec := &recordingMembers{}
	s, _ := NewSharded(ShardedConfig{Membership: m, NewMember: rec.build, Interval: iv}, plugins.Env{})
	// From t0+1s on, c joins and b is gone.
	after := NewRing([]string{"http://a:1", "http://c:1"})
	for i := 1; i < 10; i++ {
		m.rings[t0.Add(time.Duration(i)*iv).Unix()] = after
	}
	flush := func(start time.Time) {
		t.Helper()
		if err := s.Flush(context.Background(), &plugins.Batch{Start: start, Forward: counters(300)}); err != nil {
			t.Fatal(err)
		}
	}
	flush(t0)
	if _, ok := rec.sinks["http://c:1"]; ok {
		t.Fatal("c was sent series of an interval before it joined")
	}
	flush(t0.Add(iv))
	if got := len(rec.sinks["http://b:1"].batches); got != 1 {
		t.Fatalf("b got %d batches, want only the one of the interval it owned", got)
	}
	if len(rec.sinks["http://c:1"].batches) != 1 {
		t.Fatal("c got nothing in the interval it joined")
	}
	// b is closed once it was unused for two intervals.
	flush(t0.Add(2 * iv))
	flush(t0.Add(3 * iv))
	flush(t0.Add(4 * iv))
	s.closing.Wait()
	if !rec.sinks["http://b:1"].closed {
		t.Error("the sink of b, which left, was not closed")
	}
	if rec.sinks["http://a:1"].closed {
		t.Error("the sink of a, still a member, was closed")
	}
}

// Merge (veneur-proxy) routes by the interval that ended at the last
// boundary: the one its locals flushed.
func TestShardedMergeUsesThePreviousInterval(t *testing.T) {
	iv := 10 * time.Second
	t0 := time.Unix(1_700_000_000, 0) // a multiple of 10 s
	m := &movable{def: NewRing([]string{"http://old:1"}), rings: map[int64]*Ring{t0.Unix(): NewRing([]string{"http://new:1"})}}
	rec := &recordingMembers{}
	s, _ := NewSharded(ShardedConfig{Membership: m, NewMember: rec.build, Interval: iv}, plugins.Env{})
	s.now = func() time.Time { return t0.Add(iv + 3*time.Second) } // in [t0+10, t0+20): the locals flushed [t0, t0+10)
	if err := s.Merge(counters(5)); err != nil {
		t.Fatal(err)
	}
	if _, ok := rec.sinks["http://new:1"]; !ok || len(rec.sinks) != 1 {
		t.Fatalf("Merge routed to %v, want the ring of the interval starting at t0", slices.Collect(maps.Keys(rec.sinks)))
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Merge(counters(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Merge after Close: %v, want ErrClosed", err)
	}
}

// A member that left the ring without taking its share (its connection
// was refused) has that share sent to the new owner, once, and counted.
func TestShardedResendsWhatALeftMemberNeverTook(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	iv := time.Second
	t0 := time.Unix(1_700_000_000, 0)
	m := &movable{def: NewRing([]string{"http://alive:1"}), rings: map[int64]*Ring{t0.Unix(): NewRing([]string{dead, "http://alive:1"})}}
	rec := &recordingMembers{}
	stats := &statstest.Recorder{}
	env := plugins.Env{Stats: stats}
	build := func(address string) (plugins.Sink, error) {
		if address == dead {
			return NewClient(ClientConfig{Address: address, Delivery: plugins.DeliveryConfig{BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond, MaxAge: time.Minute}}, env)
		}
		return rec.build(address)
	}
	s, _ := NewSharded(ShardedConfig{Membership: m, NewMember: build, Interval: iv}, env)
	s.now = func() time.Time { return t0.Add(2*iv + 100*time.Millisecond) }
	in := counters(300)
	if err := s.Flush(context.Background(), &plugins.Batch{Start: t0, Forward: in}); err != nil {
		t.Fatal(err)
	}
	first := len(rec.sinks["http://alive:1"].batches[0].Forward)
	if first == len(in) || first == 0 {
		t.Fatalf("the alive member got %d of %d series, want a share", first, len(in))
	}
	// The dead member is gone from the next intervals: the next flush
	// retires it, and what it never took goes to the alive one.
	if err := s.Flush(context.Background(), &plugins.Batch{Start: t0.Add(iv)}); err != nil {
		t.Fatal(err)
	}
	s.closing.Wait()
	got := map[string]int{}
	for _, b := range rec.sinks["http://alive:1"].batches {
		for _, f := range b.Forward {
			got[f.Name]++
			if want := fmt.Sprintf("c.%d", int(f.Counter)); f.Name != want {
				t.Errorf("%s arrived with the counter of %s", f.Name, want)
			}
		}
	}
	if len(got) != len(in) {
		t.Fatalf("the alive member got %d distinct series in all, want %d", len(got), len(in))
	}
	for name, n := range got {
		if n != 1 {
			t.Errorf("%s sent %d times, want once", name, n)
		}
	}
	s.Report(stats)
	if n := stats.Sum("forward.ring.resent_total"); n != int64(len(in)-first) {
		t.Errorf("forward.ring.resent_total = %d, want %d", n, len(in)-first)
	}
}
