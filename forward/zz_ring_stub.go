package forward

// Temporary stand-in for the ring API of branch i12ring; removed at merge.

import (
	"context"
	"errors"
	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"
	"hash/fnv"
	"slices"
	"time"
)

type Ring struct{ members []string }

func NewRing(members []string) *Ring {
	m := slices.Clone(members)
	slices.Sort(m)
	return &Ring{members: slices.Compact(m)}
}
func (r *Ring) Members() []string { return r.members }
func (r *Ring) Len() int          { return len(r.members) }
func (r *Ring) Owner(key []byte) int {
	if len(r.members) == 0 {
		return -1
	}
	best, bw := -1, uint64(0)
	for i, m := range r.members {
		h := fnv.New64a()
		h.Write(key)
		h.Write([]byte(m))
		if w := h.Sum64(); best < 0 || w > bw {
			best, bw = i, w
		}
	}
	return best
}

type MembershipSnapshot struct {
	Members []string
	Epoch   int64
}

type Membership interface {
	RingFor(start time.Time) (*Ring, int64)
	Snapshot(now time.Time) MembershipSnapshot
	Close() error
}

type static struct{ r *Ring }

func NewStaticMembership(urls []string) Membership { return static{NewRing(urls)} }
func (s static) RingFor(time.Time) (*Ring, int64)  { return s.r, 0 }
func (s static) Snapshot(time.Time) MembershipSnapshot {
	return MembershipSnapshot{Members: s.r.Members()}
}
func (s static) Close() error { return nil }

func Boundary(t time.Time, interval time.Duration) time.Time {
	tr := t.Truncate(interval)
	if tr.Before(t) {
		tr = tr.Add(interval)
	}
	return tr
}

type EtcdConfig struct {
	Endpoints   []string
	Prefix      string
	Interval    time.Duration
	DialTimeout time.Duration
	Log         *logrus.Logger
	Stats       statsd.ClientInterface
}
type EtcdMembership struct{ static }

func WatchEtcd(ctx context.Context, cfg EtcdConfig) (*EtcdMembership, error) {
	return nil, errors.New("stub")
}

type Registration struct{}

func RegisterEtcd(ctx context.Context, cfg EtcdConfig, advertise string, ttl time.Duration) (*Registration, error) {
	return nil, errors.New("stub")
}
func (r *Registration) From() time.Time                              { return time.Time{} }
func (r *Registration) Leave(ctx context.Context) (time.Time, error) { return time.Time{}, nil }
func (r *Registration) Close(ctx context.Context) error              { return nil }
