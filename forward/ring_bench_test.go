package forward

import (
	"fmt"
	"testing"
	"time"

	"github.com/veneur/veneur/samplers"
)

// benchKeys returns n series keys of one local, as AppendForwardedKey
// writes them.
func benchKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		f := samplers.Forwarded{
			Type: samplers.HistogramMetric,
			Name: fmt.Sprintf("service%d.request.duration", i%50),
			Tags: []string{"env:prod", "host:i-0123456789abcdef", fmt.Sprintf("route:/v1/r%d", i/50)},
		}
		keys[i] = samplers.AppendForwardedKey(nil, &f)
	}
	return keys
}

// BenchmarkKeyHash hashes one series key (about 70 bytes).
func BenchmarkKeyHash(b *testing.B) {
	key := benchKeys(1)[0]
	b.SetBytes(int64(len(key)))
	b.ReportAllocs()
	var sink uint64
	for b.Loop() {
		sink += KeyHash(key)
	}
	_ = sink
}

// BenchmarkRingOwner routes one series key over tiers of 1 to 30 globals:
// the hash plus one weight per member.
func BenchmarkRingOwner(b *testing.B) {
	keys := benchKeys(1024)
	for _, n := range []int{1, 3, 10, 30} {
		b.Run(fmt.Sprintf("globals=%d", n), func(b *testing.B) {
			r := NewRing(globals(n))
			b.ReportAllocs()
			i, sink := 0, 0
			for b.Loop() {
				sink += r.Owner(keys[i&1023])
				i++
			}
			_ = sink
		})
	}
}

// BenchmarkRingForEtcd is the ring lookup a sender does once per flush,
// with 10 members in the schedule (the ring itself is cached).
func BenchmarkRingForEtcd(b *testing.B) {
	m := &EtcdMembership{cfg: EtcdConfig{Interval: iv}, sched: newSchedule(iv)}
	for i, g := range globals(10) {
		m.sched.put(g, T-100+int64(i)*10, 0)
	}
	start := time.Unix(T, 0)
	b.ReportAllocs()
	for b.Loop() {
		m.RingFor(start)
	}
}
