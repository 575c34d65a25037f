package veneur

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/plugins"
)

// tier is this instance's part in a global tier (see the README's
// "Global tier"): as a local (or veneur-proxy) it shards its forwards over
// the members of forward_addresses or of etcd; as a global with
// etcd_advertise_address it registers itself in etcd while it runs, and
// announces its leave before it stops.
type tier struct {
	// members is what the sharded forwarder routes by: the static list,
	// or etcd's members once the watch has started (an empty ring
	// before).
	members *swappableMembership
	sharded *forward.Sharded
	etcd    forward.EtcdConfig
	// watch is set when members come from etcd.
	watch bool
	// advertise and ttl are the registration of a global; reg is set by
	// start once it succeeded.
	advertise string
	ttl       time.Duration
	reg       atomic.Pointer[forward.Registration]

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// swappableMembership is a forward.Membership whose source is set once it
// is ready: nothing is routed (an empty ring) before.
type swappableMembership struct {
	m atomic.Pointer[forward.Membership]
}

var empty = forward.NewRing(nil)

func (s *swappableMembership) RingFor(start time.Time) (*forward.Ring, int64) {
	if m := s.m.Load(); m != nil {
		return (*m).RingFor(start)
	}
	return empty, 0
}

func (s *swappableMembership) Snapshot(now time.Time) forward.MembershipSnapshot {
	if m := s.m.Load(); m != nil {
		return (*m).Snapshot(now)
	}
	return forward.MembershipSnapshot{}
}

func (s *swappableMembership) Close() error {
	if m := s.m.Load(); m != nil {
		return (*m).Close()
	}
	return nil
}

// Report sends the self-metrics of the membership, when it has any.
func (s *swappableMembership) Report(stats statsd.ClientInterface) {
	if m := s.m.Load(); m != nil {
		if r, ok := (*m).(plugins.Reporter); ok {
			r.Report(stats)
		}
	}
}

func (s *swappableMembership) set(m forward.Membership) { s.m.Store(&m) }

// newTier returns the tier settings of cfg, or nil when the instance is
// in no tier of several globals (no forward_addresses, no etcd).
func newTier(cfg Config, env plugins.Env) (*tier, error) {
	if len(cfg.ForwardAddresses) == 0 && len(cfg.EtcdEndpoints) == 0 {
		return nil, nil
	}
	interval, err := cfg.ParseInterval()
	if err != nil {
		return nil, err
	}
	t := &tier{
		members: &swappableMembership{},
		etcd: forward.EtcdConfig{
			Endpoints: cfg.EtcdEndpoints, Prefix: cfg.EtcdPrefix, Interval: interval,
			DialTimeout: 5 * time.Second, Log: env.Log, Stats: env.Stats,
		},
	}
	switch {
	case len(cfg.ForwardAddresses) > 0:
		t.members.set(forward.NewStaticMembership(cfg.ForwardAddresses))
	case cfg.EtcdAdvertiseAddress == "":
		t.watch = true
	}
	if cfg.EtcdAdvertiseAddress != "" {
		t.advertise = cfg.EtcdAdvertiseAddress
		t.ttl, _ = cfg.ParseEtcdLeaseTTL()
	}
	return t, nil
}

// start connects to etcd in the background: the watch of a local, the
// registration of a global. Each is tried again every few seconds until
// it succeeds: etcd being down at start delays joining the tier but does
// not stop the instance (a local counts what it cannot route in
// forward.ring.dropped_total{cause:no_member}).
func (t *tier) start(log *logrus.Logger, stats statsd.ClientInterface, guard func()) {
	if t == nil || (!t.watch && t.advertise == "") {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	retry := func(cause, what string, try func() error) {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer guard()
			for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
				err := try()
				if err == nil || ctx.Err() != nil {
					return
				}
				log.WithError(err).WithField("retry_in", wait.String()).Warn(what)
				stats.Count("forward.etcd.error_total", 1, []string{"cause:" + cause}, 1)
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}()
	}
	if t.watch {
		retry("start_watch", "cannot watch the global tier's members in etcd", func() error {
			m, err := forward.WatchEtcd(ctx, t.etcd)
			if err != nil {
				return err
			}
			t.members.set(m)
			return nil
		})
	}
	if t.advertise != "" {
		retry("start_register", "cannot register in etcd as a member of the global tier", func() error {
			reg, err := forward.RegisterEtcd(ctx, t.etcd, t.advertise, t.ttl)
			if err != nil {
				return err
			}
			t.reg.Store(reg)
			log.WithField("address", t.advertise).WithField("from", reg.From().UTC().Format(time.RFC3339)).Info("registered in etcd as a member of the global tier")
			return nil
		})
	}
}

// leave announces that this global leaves the tier, and returns the
// boundary from which no local routes to it any more: the interval
// that starts just before it is the last this global imports, and the
// flush at until+interval publishes it. It returns the zero time when
// the instance is not registered.
func (t *tier) leave(ctx context.Context) (time.Time, error) {
	if t == nil {
		return time.Time{}, nil
	}
	reg := t.reg.Load()
	if reg == nil {
		return time.Time{}, nil
	}
	return reg.Leave(ctx)
}

// stop revokes the registration and stops watching etcd.
func (t *tier) stop(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if t.cancel != nil {
		t.cancel()
	}
	t.wg.Wait()
	var err error
	if reg := t.reg.Load(); reg != nil {
		err = reg.Close(ctx)
	}
	if cerr := t.members.Close(); err == nil {
		err = cerr
	}
	return err
}

// ringView is the JSON of GET /debug/ring.
type ringView struct {
	forward.MembershipSnapshot
	// Registered is this global's own registration, when it has one.
	Registered string `json:"registered,omitempty"`
	// SeriesSent is the number of series sent to each member in the last
	// interval that routed to it.
	SeriesSent map[string]int `json:"series_sent,omitempty"`
	// Share is each member's expected share of the series (1/members) in
	// the current ring.
	Share map[string]float64 `json:"share,omitempty"`
}

// ServeHTTP answers GET /debug/ring: the members, the epoch, pending
// changes and each member's share.
func (t *tier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var v ringView
	if t != nil {
		v.MembershipSnapshot = t.members.Snapshot(time.Now())
		if t.sharded != nil {
			v.SeriesSent = t.sharded.Shares()
		}
		if t.advertise != "" {
			v.Registered = t.advertise
		}
		members := append([]string(nil), v.Members...)
		sort.Strings(members)
		if len(members) > 0 {
			v.Share = map[string]float64{}
			for _, m := range members {
				v.Share[m] = 1 / float64(len(members))
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
