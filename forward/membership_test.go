package forward

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBoundary(t *testing.T) {
	for _, c := range []struct {
		t        time.Time
		interval time.Duration
		want     time.Time
	}{
		{time.Unix(100, 0), 10 * time.Second, time.Unix(100, 0)},
		{time.Unix(100, 1), 10 * time.Second, time.Unix(110, 0)},
		{time.Unix(109, 999999999), 10 * time.Second, time.Unix(110, 0)},
		{time.Unix(101, 0), 7 * time.Second, time.Unix(105, 0)}, // Unix multiples, not since year 1
		{time.Unix(0, 250_000_001), 250 * time.Millisecond, time.Unix(0, 500_000_000)},
		{time.Unix(-15, 0), 10 * time.Second, time.Unix(-10, 0)},
		{time.Unix(-20, 0), 10 * time.Second, time.Unix(-20, 0)},
		{time.Unix(-1, 0), 10 * time.Second, time.Unix(0, 0)},
		{time.Unix(103, 0), 0, time.Unix(103, 0)},
	} {
		if got := Boundary(c.t, c.interval); !got.Equal(c.want) {
			t.Errorf("Boundary(%d.%09d, %s) = %d.%09d, want %d.%09d", c.t.Unix(), c.t.Nanosecond(), c.interval,
				got.Unix(), got.Nanosecond(), c.want.Unix(), c.want.Nanosecond())
		}
	}
	for _, c := range []struct{ t, want int64 }{{100, 100}, {105, 100}, {109, 100}, {-15, -20}} {
		if got := intervalStart(time.Unix(c.t, 0), 10*time.Second); got.Unix() != c.want {
			t.Errorf("intervalStart(%d) = %d, want %d", c.t, got.Unix(), c.want)
		}
	}
}

func TestStaticMembership(t *testing.T) {
	m := NewStaticMembership([]string{"http://b:8127", "http://a:8127", "http://a:8127"})
	r1, e1 := m.RingFor(time.Unix(100, 0))
	r2, e2 := m.RingFor(time.Unix(1e9, 0))
	if r1 != r2 || e1 != 0 || e2 != 0 {
		t.Fatalf("RingFor: rings %p %p epochs %d %d; want one ring, epoch 0", r1, r2, e1, e2)
	}
	if want := []string{"http://a:8127", "http://b:8127"}; !slices.Equal(r1.Members(), want) {
		t.Fatalf("members %q, want %q", r1.Members(), want)
	}
	s := m.Snapshot(time.Now())
	if s.Source != "static" || !s.Connected || s.Epoch != 0 || len(s.Pending) != 0 || len(s.Members) != 2 {
		t.Fatalf("Snapshot = %+v", s)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

// Times in the schedule tests: T is a boundary of the 10s interval.
const (
	iv = 10 * time.Second
	T  = int64(1_700_000_000)
)

// at is the time T+s (seconds, fractions allowed).
func at(s float64) time.Time { return time.Unix(T, 0).Add(time.Duration(s * float64(time.Second))) }

// from is what a registrant writes at T+s: Boundary(now + interval).
func from(s float64) int64 { return Boundary(at(s).Add(iv), iv).Unix() }

const (
	gA = "http://global-a:8127"
	gB = "http://global-b:8127"
	gC = "grpc://global-c:8128"
)

// ringAt is the members and epoch of the interval starting at T+s.
func ringAt(s *schedule, off int64) string {
	return fmt.Sprintf("%v@%d", s.membersAt(T+off), s.epochAt(T+off)-T)
}

// expectRings checks the ring and epoch (relative to T) of each interval
// start from T-10 to T+140.
func expectRings(t *testing.T, s *schedule, want map[int64]string) {
	t.Helper()
	last := ""
	for off := int64(-10); off <= 140; off += 10 {
		if w, ok := want[off]; ok {
			last = w
		}
		if got := ringAt(s, off); got != last {
			t.Errorf("ring of T+%d = %s, want %s", off, got, last)
		}
	}
}

// TestScheduleJoinLeaveCrash walks one tier through a join, a graceful
// leave and a crash, with the rings of every interval checked after each.
func TestScheduleJoinLeaveCrash(t *testing.T) {
	s := newSchedule(iv)
	// A listed at start, registered long ago.
	s.put(gA, T-1000, 0)
	// B registers at T+3: in from T+20 (a full interval after T+10, the
	// first boundary after it was written).
	if got := from(3); got != T+20 {
		t.Fatalf("from(3) = T+%d, want T+20", got-T)
	}
	if !s.put(gB, from(3), 0) {
		t.Fatal("a join did not count as a change")
	}
	expectRings(t, s, map[int64]string{
		-10: fmt.Sprintf("[%s]@-1000", gA),
		20:  fmt.Sprintf("[%s %s]@20", gA, gB),
	})
	if got := s.pending(T + 10); len(got) != 1 || got[0] != (PendingChange{Address: gB, Join: true, At: time.Unix(T+20, 0)}) {
		t.Fatalf("pending at T+10 = %+v", got)
	}
	// A leaves at T+44: until = T+60, written under the same lease.
	if !s.put(gA, T-1000, from(44)) {
		t.Fatal("a leave did not count as a change")
	}
	// Its lease is revoked after it flushed: the delete changes nothing.
	if s.remove(gA, at(71)) {
		t.Fatal("the delete after a leave's until changed the ring")
	}
	// C joins at T+45 (from T+60, the same boundary A leaves at), then
	// crashes: its key is deleted (lease expired) at T+83.5, so it is out
	// from Boundary(T+93.5) = T+100.
	s.put(gC, from(45), 0)
	if !s.remove(gC, at(83.5)) {
		t.Fatal("a crash did not count as a change")
	}
	expectRings(t, s, map[int64]string{
		-10: fmt.Sprintf("[%s]@-1000", gA),
		20:  fmt.Sprintf("[%s %s]@20", gA, gB),
		60:  fmt.Sprintf("[%s %s]@60", gC, gB),
		100: fmt.Sprintf("[%s]@100", gB),
	})
	if got := s.pending(T + 60); len(got) != 1 || got[0] != (PendingChange{Address: gC, Join: false, At: time.Unix(T+100, 0)}) {
		t.Fatalf("pending at T+60 = %+v", got)
	}

	// Forgetting: A's span ended at T+60; at T+90 it is kept (the rings of
	// recent intervals are still asked for), at T+91 it is not. The epoch
	// of later rings does not change when it goes.
	s.forget(at(90))
	if ringAt(s, 50) != fmt.Sprintf("[%s %s]@20", gA, gB) {
		t.Fatalf("forgot A's span 3 intervals after its end: %s", ringAt(s, 50))
	}
	before := ringAt(s, 70)
	s.forget(at(91))
	if _, ok := s.members[gA]; ok {
		t.Fatal("A is remembered 3 intervals after its end with no key")
	}
	if after := ringAt(s, 70); after != before {
		t.Fatalf("forgetting A changed the ring of T+70 from %s to %s", before, after)
	}
	// C's key is gone but its span ends in the future: it stays.
	if _, ok := s.members[gC]; !ok {
		t.Fatal("C was forgotten before its span ended")
	}
}

// TestScheduleWatchersAgree: two watchers that see the same changes at
// different moments of an interval (and one that lists the state later)
// give the same ring and epoch for every interval.
func TestScheduleWatchersAgree(t *testing.T) {
	type event struct {
		addr        string
		from, until int64 // a put; from 0: a delete
	}
	history := []event{
		{gA, T - 500, 0},
		{gB, from(2), 0},  // written at T+2
		{gC, from(12), 0}, // written at T+12
		{gA, T - 500, 0},  // a rewrite of the same value
		{gB, from(2), 0},  // ...
		{gC, 0, 0},        // C's lease expires, deleted at T+31
		{gA, T - 500, from(35)},
	}
	written := []float64{0, 2, 12, 20, 22, 31, 35}
	early := newSchedule(iv)
	late := newSchedule(iv)
	for i, e := range history {
		// early sees each event at once; late a little later, within the
		// same interval.
		seen := []float64{written[i], written[i] + 0.99*float64(10-int(written[i])%10)}
		for j, s := range []*schedule{early, late} {
			if e.from == 0 {
				s.remove(e.addr, at(seen[j]))
			} else {
				s.put(e.addr, e.from, e.until)
			}
		}
	}
	for off := int64(-10); off <= 100; off += 10 {
		if a, b := ringAt(early, off), ringAt(late, off); a != b {
			t.Errorf("interval T+%d: early watcher %s, late watcher %s", off, a, b)
		}
	}
	if got, want := ringAt(early, 40), fmt.Sprintf("[%s %s %s]@30", gC, gA, gB); got != want {
		t.Errorf("ring of T+40 = %s, want %s", got, want) // C out at Boundary(T+31+10)
	}
	if got, want := ringAt(early, 50), fmt.Sprintf("[%s]@50", gB); got != want {
		t.Errorf("ring of T+50 = %s, want %s", got, want)
	}
	// A watcher that starts at T+36 lists A (leaving) and B; it never saw
	// C, whose key was deleted before: it agrees with the others from the
	// boundary at which C is out, epoch included.
	fresh := newSchedule(iv)
	fresh.put(gA, T-500, from(35))
	fresh.put(gB, from(2), 0)
	for off := int64(50); off <= 100; off += 10 {
		if a, b := ringAt(early, off), ringAt(fresh, off); a != b {
			t.Errorf("interval T+%d: watcher since the start %s, watcher since T+36 %s", off, a, b)
		}
	}
}

// TestScheduleReregister: a global whose lease was lost registers again
// with a new from; a global restarted within its lease's ttl writes a new
// value over its key. Neither takes it out of an interval that senders
// may already be routing.
func TestScheduleReregister(t *testing.T) {
	t.Run("lease lost, registered again within the interval", func(t *testing.T) {
		s := newSchedule(iv)
		s.put(gA, T-100, 0)
		s.put(gB, T-100, 0)
		s.remove(gA, at(51)) // out from T+70
		s.put(gA, from(52), 0)
		// From T+70 again: never out.
		expectRings(t, s, map[int64]string{-10: fmt.Sprintf("[%s %s]@-100", gA, gB)})
	})
	t.Run("lease lost, registered again in the next interval", func(t *testing.T) {
		s := newSchedule(iv)
		s.put(gA, T-100, 0)
		s.put(gB, T-100, 0)
		s.remove(gA, at(51)) // out from T+70
		s.put(gA, from(63), 0)
		// Out for the one interval T+70, back from T+80; the put does not
		// take it out of T+60, which senders route at T+70.
		expectRings(t, s, map[int64]string{
			-10: fmt.Sprintf("[%s %s]@-100", gA, gB),
			70:  fmt.Sprintf("[%s]@70", gB),
			80:  fmt.Sprintf("[%s %s]@80", gA, gB),
		})
	})
	t.Run("restart within the ttl, new from", func(t *testing.T) {
		s := newSchedule(iv)
		s.put(gA, T-100, 0)
		if s.put(gA, from(43), 0) {
			t.Fatal("a new from of a member that never left changed the ring")
		}
		expectRings(t, s, map[int64]string{-10: fmt.Sprintf("[%s]@-100", gA)})
	})
	t.Run("restart after a leave", func(t *testing.T) {
		s := newSchedule(iv)
		s.put(gA, T-100, 0)
		s.put(gB, T-100, 0)
		s.put(gA, T-100, from(21)) // until T+40
		s.remove(gA, at(52))
		s.put(gA, from(55), 0) // the new process, from T+70
		expectRings(t, s, map[int64]string{
			-10: fmt.Sprintf("[%s %s]@-100", gA, gB),
			40:  fmt.Sprintf("[%s]@40", gB),
			70:  fmt.Sprintf("[%s %s]@70", gA, gB),
		})
	})
	t.Run("a list without a known key removes it", func(t *testing.T) {
		s := newSchedule(iv)
		s.put(gA, T-100, 0)
		s.put(gB, T-100, 0)
		s.remove(gB, at(12)) // what a list at T+12 without B does
		expectRings(t, s, map[int64]string{
			-10: fmt.Sprintf("[%s %s]@-100", gA, gB),
			30:  fmt.Sprintf("[%s]@30", gA),
		})
		if s.remove("http://never-seen:8127", at(13)) {
			t.Fatal("removing an unknown address changed something")
		}
	})
}

func TestMembershipSnapshotJSON(t *testing.T) {
	s := MembershipSnapshot{
		Source: "etcd", Start: time.Unix(T, 0).UTC(), Members: []string{gA}, Epoch: T - 100,
		Pending:   []PendingChange{{Address: gB, Join: true, At: time.Unix(T+20, 0).UTC()}},
		Connected: true, Revision: 7,
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"source":"etcd","start":"2023-11-14T22:13:20Z","members":["http://global-a:8127"],"epoch":1699999900,` +
		`"pending":[{"address":"http://global-b:8127","join":true,"at":"2023-11-14T22:13:40Z"}],"connected":true,"revision":7}`
	if string(b) != want {
		t.Fatalf("JSON:\n%s\nwant\n%s", b, want)
	}
	b, _ = json.Marshal(NewStaticMembership([]string{gA}).Snapshot(time.Now()))
	if strings.Contains(string(b), "start") || strings.Contains(string(b), "pending") {
		t.Fatalf("static snapshot has etcd-only fields: %s", b)
	}
}
