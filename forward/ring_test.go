package forward

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/veneur/veneur/samplers"
)

func TestRingMembers(t *testing.T) {
	r := NewRing([]string{"http://b:8127", "", "http://a:8127", "http://b:8127", "grpc://c:8128"})
	want := []string{"grpc://c:8128", "http://a:8127", "http://b:8127"}
	if got := r.Members(); !slices.Equal(got, want) {
		t.Fatalf("Members() = %q, want %q (sorted, no duplicates, no empty)", got, want)
	}
	if r.Len() != 3 {
		t.Fatalf("Len() = %d, want 3", r.Len())
	}
	r.Members()[0] = "mutated"
	if r.Member(0) != want[0] {
		t.Fatalf("Members() shares the ring's own slice: Member(0) = %q after writing to a copy", r.Member(0))
	}
	for i, m := range want {
		if r.Index(m) != i || r.Member(i) != m {
			t.Fatalf("Index(%q) = %d, Member(%d) = %q; want %d, %q", m, r.Index(m), i, r.Member(i), i, m)
		}
	}
	if r.Index("http://d:8127") != -1 {
		t.Fatal("Index of a non-member is not -1")
	}
	if !r.Equal(NewRing(want)) || r.Equal(NewRing(want[:2])) {
		t.Fatal("Equal does not compare member sets")
	}

	for name, e := range map[string]*Ring{"nil": nil, "empty": NewRing(nil), "only empty strings": NewRing([]string{"", ""})} {
		if e.Len() != 0 || e.Owner([]byte("k")) != -1 || e.OwnerOfHash(1) != -1 || e.Index("x") != -1 || len(e.Members()) != 0 {
			t.Fatalf("%s ring: Len %d, Owner %d, OwnerOfHash %d, Index %d, Members %q; want 0, -1, -1, -1, none",
				name, e.Len(), e.Owner([]byte("k")), e.OwnerOfHash(1), e.Index("x"), e.Members())
		}
		if !e.Equal(NewRing(nil)) || e.Equal(r) {
			t.Fatalf("%s ring: Equal is wrong", name)
		}
	}
}

// TestKeyHashGolden pins KeyHash: it is part of the contract between the
// senders of a tier, and an instance of another version that hashed
// differently would send series to other globals mid-interval. The values
// were checked against an implementation of FNV-1a 64 and SplitMix64's
// finalizer written separately.
func TestKeyHashGolden(t *testing.T) {
	for _, c := range []struct {
		key  string
		want uint64
	}{
		{"", 0xf52a15e9a9b5e89b},
		{"a", 0x2c0bdbf481420f8},
		{"veneur", 0x79d9920fea12c21},
		{"http://global-0:8127", 0x2d403f55b3843671},
	} {
		if got := KeyHash([]byte(c.key)); got != c.want {
			t.Errorf("KeyHash(%q) = %#x, want %#x", c.key, got, c.want)
		}
	}
}

// TestRingGoldenOwners pins the owners of a few series keys, as
// samplers.AppendForwardedKey writes them, over a fixed tier: a change in
// the key layout, the hash or the weight moves series between globals, and
// must be a decision, not an accident. The owners were checked against a
// separate implementation of the weight.
func TestRingGoldenOwners(t *testing.T) {
	r := NewRing([]string{"http://global-0:8127", "http://global-1:8127", "http://global-2:8127", "grpc://global-3:8128", "http://global-4:8127"})
	for _, c := range []struct {
		f     samplers.Forwarded
		hash  uint64
		owner string
	}{
		{samplers.Forwarded{Type: samplers.HistogramMetric, Name: "api.latency", Tags: []string{"env:prod", "host:web-1"}}, 0xac52122814c99831, "grpc://global-3:8128"},
		{samplers.Forwarded{Type: samplers.SetMetric, Name: "users.unique", Tags: []string{"service:login"}}, 0xa5bb5df5b0ece896, "grpc://global-3:8128"},
		{samplers.Forwarded{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: "requests"}, 0xbd8a9436814ec4cd, "grpc://global-3:8128"},
		{samplers.Forwarded{Type: samplers.HistogramMetric, Scope: samplers.GlobalOnly, Name: "db.query.time", Tags: []string{"db:users", "host:db-7", "shard:3"}}, 0xe66265442aaec38a, "http://global-2:8127"},
		{samplers.Forwarded{Type: samplers.TimerMetric, Name: "render", Tags: []string{"page:home"}}, 0xaee9a770eb29f822, "http://global-0:8127"},
		{samplers.Forwarded{Type: samplers.SetMetric, Scope: samplers.GlobalOnly, Name: "sessions", Tags: []string{"region:eu"}}, 0xd59d545cdef1804e, "http://global-1:8127"},
		{samplers.Forwarded{Type: samplers.HistogramMetric, Name: "queue.wait", Tags: []string{"host:worker-42", "queue:email"}}, 0x2495c6ed07a5cf70, "http://global-0:8127"},
		{samplers.Forwarded{Type: samplers.TimerMetric, Name: "gc.pause", Tags: []string{"host:api-3"}}, 0xc1dbd1b0ea9717fc, "http://global-1:8127"},
	} {
		key := samplers.AppendForwardedKey(nil, &c.f)
		if h := KeyHash(key); h != c.hash {
			t.Errorf("%s %v: KeyHash = %#x, want %#x", c.f.Name, c.f.Tags, h, c.hash)
		}
		if i := r.Owner(key); i < 0 || r.Member(i) != c.owner {
			t.Errorf("%s %v: owner %d (%v), want %s", c.f.Name, c.f.Tags, i, r.Members(), c.owner)
		}
	}
}

// TestRingTie: on equal weights the member that sorts first owns the key.
func TestRingTie(t *testing.T) {
	r := &Ring{members: []string{"a", "b", "c"}, hashes: []uint64{7, 9, 9}}
	// b and c have the same member hash, so they tie for every key; a
	// wins only where its weight is higher.
	for h := range uint64(1000) {
		got := r.OwnerOfHash(h)
		wa, wb := fmix64(h^7), fmix64(h^9)
		want := 1
		if wa > wb {
			want = 0
		}
		if got != want {
			t.Fatalf("OwnerOfHash(%d) = %d, want %d (c ties with b and must lose)", h, got, want)
		}
	}
}

// TestRingOrderIndependent: the owner of a key depends on the member set,
// not the order it was given in.
func TestRingOrderIndependent(t *testing.T) {
	members := globals(7)
	ref := NewRing(members)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		shuffled := slices.Clone(members)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		shuffled = append(shuffled, shuffled[0]) // a duplicate too
		r := NewRing(shuffled)
		for k := range 2000 {
			key := fmt.Appendf(nil, "series-%d", k)
			if a, b := ref.Owner(key), r.Owner(key); ref.Member(a) != r.Member(b) {
				t.Fatalf("key %s: owner %s with members %q, %s with %q", key, ref.Member(a), members, r.Member(b), shuffled)
			}
		}
	}
}

// TestRingMinimalMovement: adding a member moves keys only to it, about
// 1/N of them; removing one moves only its keys, to the others.
func TestRingMinimalMovement(t *testing.T) {
	const keys = 200_000
	for _, n := range []int{1, 2, 3, 5, 10, 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			base := globals(n + 1)
			r := NewRing(base[:n])
			grown := NewRing(base)
			var shrunk *Ring
			removed := base[0]
			if n > 1 {
				shrunk = NewRing(base[1:n])
			}
			joined, left := 0, 0
			for k := range keys {
				h := KeyHash(fmt.Appendf(nil, "series-%d", k))
				before := r.Member(r.OwnerOfHash(h))
				if after := grown.Member(grown.OwnerOfHash(h)); after != before {
					if after != base[n] {
						t.Fatalf("join: key %d moved from %s to %s, not to the new member %s", k, before, after, base[n])
					}
					joined++
				}
				if shrunk == nil {
					continue
				}
				if after := shrunk.Member(shrunk.OwnerOfHash(h)); after != before {
					if before != removed {
						t.Fatalf("leave: key %d moved from %s, which stayed, to %s", k, before, after)
					}
					left++
				} else if before == removed {
					t.Fatalf("leave: key %d still owned by the removed member", k)
				}
			}
			checkFraction(t, "join", float64(joined)/keys, 1/float64(n+1))
			if shrunk != nil {
				checkFraction(t, "leave", float64(left)/keys, 1/float64(n))
			}
		})
	}
}

// checkFraction fails when a moved fraction is off its ideal by more than
// 5% of it (at 200,000 keys the binomial spread is well under 2%).
func checkFraction(t *testing.T, what string, got, ideal float64) {
	t.Helper()
	if got < ideal*0.95 || got > ideal*1.05 {
		t.Errorf("%s moved %.4f of the keys, want about %.4f", what, got, ideal)
	}
}

// globals returns the forward URLs of n globals.
func globals(n int) []string {
	g := make([]string, n)
	for i := range g {
		g[i] = fmt.Sprintf("http://veneur-global-%d.prod.internal:8127", i)
	}
	return g
}

// TestRingSimulation is the tier's sizing figure: 1,000 locals, each with
// 10,000 series of its own (their keys include host:), over 10 globals.
// It checks the spread of series over the globals (max/mean share at most
// 1.1) and how many series change owner when an 11th global joins and
// when one of the 10 leaves (ideally 1/11 and 1/10, and no other), and
// logs the figures (go test ./forward -run TestRingSimulation -v).
func TestRingSimulation(t *testing.T) {
	locals, series := 1000, 10_000
	if raceDetector || testing.Short() {
		locals = 50
	}
	const n = 10
	members := globals(n + 1)
	ring := NewRing(members[:n])
	grown := NewRing(members)
	removed := members[3]
	shrunk := NewRing(slices.Delete(slices.Clone(members[:n]), 3, 4))

	share := make([]int, n)
	localMaxOverMean := 0.0
	joined, left := 0, 0
	var key []byte
	perLocal := make([]int, n)
	f := samplers.Forwarded{Tags: make([]string, 3)}
	names := make([]string, series)
	routes := make([]string, series)
	for s := range series {
		names[s] = fmt.Sprintf("service%d.request.duration%d", s%25, s/25%40)
		routes[s] = fmt.Sprintf("route:/v1/r%d", s/1000)
	}
	for l := range locals {
		clear(perLocal)
		host := fmt.Sprintf("host:i-%08x", l*7919)
		for s := range series {
			f.Type = samplers.HistogramMetric
			if s%4 == 3 {
				f.Type = samplers.SetMetric
			}
			f.Name = names[s]
			f.Tags[0] = "env:prod"
			f.Tags[1] = host
			f.Tags[2] = routes[s]
			key = samplers.AppendForwardedKey(key[:0], &f)
			h := KeyHash(key)
			o := ring.OwnerOfHash(h)
			share[o]++
			perLocal[o]++
			if grown.Member(grown.OwnerOfHash(h)) != ring.Member(o) {
				joined++
			}
			if shrunk.Member(shrunk.OwnerOfHash(h)) != ring.Member(o) {
				if ring.Member(o) != removed {
					t.Fatalf("leave moved a series of %s, which stayed", ring.Member(o))
				}
				left++
			}
		}
		localMaxOverMean = max(localMaxOverMean, float64(slices.Max(perLocal))*n/float64(series))
	}
	total := locals * series
	mean := float64(total) / n
	maxOverMean := float64(slices.Max(share)) / mean
	minOverMean := float64(slices.Min(share)) / mean
	joinFrac := float64(joined) / float64(total)
	leaveFrac := float64(left) / float64(total)
	t.Logf("%d locals x %d series = %d series over %d globals", locals, series, total, n)
	t.Logf("spread: max/mean share %.4f, min/mean %.4f (shares %v)", maxOverMean, minOverMean, share)
	t.Logf("spread of one local's series: worst max/mean over the locals %.4f", localMaxOverMean)
	t.Logf("an 11th global joins: %.4f of the series move (ideal 1/11 = %.4f), all to it", joinFrac, 1.0/11)
	t.Logf("one of 10 leaves: %.4f of the series move (ideal: its share, about 1/10), only its own", leaveFrac)
	if maxOverMean > 1.1 {
		t.Errorf("max/mean share %.4f > 1.1", maxOverMean)
	}
	checkFraction(t, "join", joinFrac, 1.0/11)
	checkFraction(t, "leave", leaveFrac, 0.1)
	if want := float64(share[ring.Index(removed)]) / float64(total); leaveFrac != want {
		t.Errorf("leave moved %.6f of the series, but the leaver owned %.6f", leaveFrac, want)
	}
}
