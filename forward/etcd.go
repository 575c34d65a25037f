package forward

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/veneur/veneur/internal/counter"
	"github.com/veneur/veneur/plugins"
)

// DefaultEtcdPrefix is etcd_prefix when it is unset: the globals of a tier
// register under it, one key each.
const DefaultEtcdPrefix = "/veneur/globals/"

// DefaultEtcdDialTimeout is EtcdConfig.DialTimeout when it is zero.
const DefaultEtcdDialTimeout = 5 * time.Second

// EtcdConfig is what watching or registering in etcd needs. The zero
// values of the optional fields take their defaults.
type EtcdConfig struct {
	// Endpoints are etcd_endpoints: the http(s) URLs of the etcd cluster's
	// client endpoints, such as http://127.0.0.1:2379.
	Endpoints []string
	// Prefix is etcd_prefix, ending in "/"; default DefaultEtcdPrefix.
	Prefix string
	// Interval is the flush interval (interval), a whole number of
	// seconds: membership changes apply at its boundaries.
	Interval time.Duration
	// DialTimeout bounds each request that start-up and the probes make;
	// default DefaultEtcdDialTimeout.
	DialTimeout time.Duration
	// TLS, when not nil, is the client side of TLS to etcd (https://
	// endpoints). nil with an https:// endpoint trusts the system's
	// authorities.
	TLS *tls.Config
	// Log receives what happens to membership; nil logs nothing.
	Log *logrus.Logger
	// Stats receives the self-metrics of a Report called with a nil
	// client; nil sends none then.
	Stats statsd.ClientInterface
	// Now is the clock that observations are dated by; nil is time.Now.
	// Tests inject one.
	Now func() time.Time
}

// withDefaults returns c with its defaults filled in, or the first error
// in it, naming the config key and the fix.
func (c EtcdConfig) withDefaults() (EtcdConfig, error) {
	if len(c.Endpoints) == 0 {
		return c, errors.New("etcd_endpoints is empty; list the etcd client URLs, such as [http://127.0.0.1:2379]")
	}
	for i, e := range c.Endpoints {
		if err := plugins.CheckURL(fmt.Sprintf("etcd_endpoints[%d]", i), e, "http://127.0.0.1:2379"); err != nil {
			return c, err
		}
	}
	if c.Prefix == "" {
		c.Prefix = DefaultEtcdPrefix
	}
	if !strings.HasPrefix(c.Prefix, "/") || !strings.HasSuffix(c.Prefix, "/") {
		return c, fmt.Errorf("etcd_prefix %q: must start and end with \"/\", such as %s", c.Prefix, DefaultEtcdPrefix)
	}
	if c.Interval <= 0 || c.Interval%time.Second != 0 {
		return c, fmt.Errorf("interval %s: with etcd_endpoints it must be a whole number of seconds, such as 10s", c.Interval)
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultEtcdDialTimeout
	}
	if c.Log == nil {
		c.Log = logrus.New()
		c.Log.SetOutput(io.Discard)
	}
	if c.Stats == nil {
		c.Stats = &statsd.NoOpClient{}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.TLS == nil {
		for _, e := range c.Endpoints {
			if strings.HasPrefix(strings.ToLower(e), "https://") {
				c.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
				break
			}
		}
	}
	return c, nil
}

// newClient returns an etcd client for c (which has its defaults). It
// does not connect: requests do, and fail or retry on their own.
func (c EtcdConfig) newClient() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout,
		TLS:         c.TLS,
		// The client's own log would repeat, at every retry, what we
		// log once per outage.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd_endpoints %v: %w", c.Endpoints, err)
	}
	return cli, nil
}

// etcdValue is the value of a global's key, <prefix><url-escaped address>,
// written under the global's lease.
type etcdValue struct {
	// Address is the global's forward URL (etcd_advertise_address).
	Address string `json:"address"`
	// From is the Unix second (a boundary) from which it is in the ring.
	From int64 `json:"from"`
	// Until is the Unix second (a boundary) from which it is out, 0 while
	// it is not leaving.
	Until int64 `json:"until"`
}

// etcdKey is the key of a global that advertises address.
func etcdKey(prefix, address string) string { return prefix + url.PathEscape(address) }

// checkAdvertise checks etcd_advertise_address: the URL that locals
// forward to, http(s):// or grpc(s)://, with a host.
func checkAdvertise(address string) error {
	u, err := url.Parse(address)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "grpc" && u.Scheme != "grpcs") {
		return fmt.Errorf("etcd_advertise_address %q: not a forward URL; use the URL locals reach this global at, such as http://10.0.0.1:8127 or grpc://10.0.0.1:8128", address)
	}
	return nil
}

// decodeEtcdValue decodes the value under key, checking that the key is
// the one of the address it names.
func decodeEtcdValue(prefix string, key, value []byte) (etcdValue, error) {
	var v etcdValue
	if err := json.Unmarshal(value, &v); err != nil {
		return v, fmt.Errorf("key %q: value is not {\"address\", \"from\", \"until\"} JSON: %w", key, err)
	}
	if err := checkAdvertise(v.Address); err != nil {
		return v, fmt.Errorf("key %q: %w", key, err)
	}
	if string(key) != etcdKey(prefix, v.Address) {
		return v, fmt.Errorf("key %q: its address %q belongs under %q", key, v.Address, etcdKey(prefix, v.Address))
	}
	if v.From <= 0 || v.Until < 0 {
		return v, fmt.Errorf("key %q: from %d, until %d: from must be a Unix time and until one or 0", key, v.From, v.Until)
	}
	return v, nil
}

// The causes of forward.etcd.error_total.
const (
	causeList        = "list"        // listing the prefix failed
	causeWatch       = "watch"       // the watch ended with an error
	causeCompacted   = "compacted"   // the watch's revision was compacted away: listed again
	causeUnreachable = "unreachable" // a probe found etcd not answering
	causeDecode      = "decode"      // a value under the prefix that is not a registration
	causeLeaseLost   = "lease_lost"  // the registration's lease expired or was revoked
	causeRegister    = "register"    // granting a lease or writing the registration failed
	causeRevoke      = "revoke"      // revoking the lease at Close failed
)

// backoff is a capped exponential backoff with jitter.
type backoff struct{ next, max time.Duration }

func newBackoff(max time.Duration) *backoff {
	return &backoff{next: 50 * time.Millisecond, max: max}
}

// wait sleeps the next delay, or until ctx is done; it reports whether ctx
// is still alive.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.next/2 + rand.N(b.next/2+1)
	b.next = min(2*b.next, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (b *backoff) reset() { b.next = 50 * time.Millisecond }

// EtcdMembership is the membership that the globals registered under a
// prefix of etcd make: it lists the prefix, then watches it from the
// revision of the list, so that no change between the two is missed, and
// turns what it sees into the ring of each interval by the epoch rules of
// schedule. It implements Membership, and plugins.Reporter for its
// self-metrics.
//
// When etcd does not answer, it keeps the last state it knew (the ring
// goes on, and changes already known still apply at their boundaries),
// logs once per outage and counts; when it answers again the watch
// resumes from its revision, or lists again when that revision was
// compacted away.
type EtcdMembership struct {
	cfg  EtcdConfig
	cli  *clientv3.Client
	errs *counter.ByCause

	mu       sync.Mutex
	sched    *schedule
	rev      int64     // the revision the state is at; 0: never listed
	outage   time.Time // when the current outage began; zero when none
	changes  atomic.Uint64
	rings    ringCache
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeErr error
	once     sync.Once
}

var (
	_ Membership       = (*EtcdMembership)(nil)
	_ plugins.Reporter = (*EtcdMembership)(nil)
)

func newEtcdErrors() *counter.ByCause {
	return counter.New(causeList, causeWatch, causeCompacted, causeUnreachable, causeDecode, causeLeaseLost, causeRegister, causeRevoke)
}

// WatchEtcd starts watching the globals registered under cfg.Prefix. It
// lists the prefix before it returns, giving up after cfg.DialTimeout (or
// when ctx is done): an etcd that does not answer then is not an error
// (the membership starts empty, logs, and keeps trying in the
// background), so that an instance can start while etcd is down. It fails
// only on a config error, or when ctx is done. Close stops it.
func WatchEtcd(ctx context.Context, cfg EtcdConfig) (*EtcdMembership, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	cli, err := cfg.newClient()
	if err != nil {
		return nil, err
	}
	m := &EtcdMembership{cfg: cfg, cli: cli, errs: newEtcdErrors(), sched: newSchedule(cfg.Interval)}
	lctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	err = m.list(lctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			cli.Close()
			return nil, fmt.Errorf("etcd_endpoints %v: %w", cfg.Endpoints, ctx.Err())
		}
		m.fail(causeList, err)
	}
	m.start()
	return m, nil
}

// start starts the watch and the probes.
func (m *EtcdMembership) start() {
	runCtx, stop := context.WithCancel(context.Background())
	m.cancel = stop
	m.wg.Add(2)
	go m.watchLoop(runCtx)
	go m.probeLoop(runCtx)
}

// list reads every registration under the prefix and makes it the state:
// what is listed is put, what was known and is not listed is removed now.
func (m *EtcdMembership) list(ctx context.Context) error {
	resp, err := m.cli.Get(ctx, m.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := make(map[string]bool, len(resp.Kvs))
	changed := 0
	for _, kv := range resp.Kvs {
		v, err := decodeEtcdValue(m.cfg.Prefix, kv.Key, kv.Value)
		if err != nil {
			m.errs.Add(m.errs.IndexOf(causeDecode), 1)
			m.cfg.Log.WithError(err).Warn("etcd: ignoring a value under etcd_prefix that is not a registration")
			continue
		}
		seen[v.Address] = true
		if m.sched.put(v.Address, v.From, v.Until) {
			changed++
		}
	}
	for a, ms := range m.sched.members {
		if ms.present && !seen[a] {
			if m.sched.remove(a, now) {
				changed++
			}
		}
	}
	m.sched.forget(now)
	m.rev = resp.Header.Revision
	m.changes.Add(uint64(changed))
	m.okLocked(now)
	return nil
}

// watchLoop watches the prefix from the revision after the state's, and
// lists again (with backoff) whenever the watch ends.
func (m *EtcdMembership) watchLoop(ctx context.Context) {
	defer m.wg.Done()
	b := newBackoff(min(m.cfg.Interval, 5*time.Second))
	m.mu.Lock()
	needList := m.rev == 0 // WatchEtcd's own list failed
	m.mu.Unlock()
	for ctx.Err() == nil {
		if needList {
			lctx, cancel := context.WithTimeout(ctx, m.cfg.DialTimeout)
			err := m.list(lctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				m.fail(causeList, err)
				b.wait(ctx)
				continue
			}
		}
		m.mu.Lock()
		rev := m.rev
		m.mu.Unlock()
		began := time.Now()
		err := m.watch(ctx, rev)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			m.errs.Add(m.errs.IndexOf(causeCompacted), 1)
			m.cfg.Log.WithField("revision", rev).Info("etcd: the watched revision was compacted; listing the prefix again")
		} else {
			m.fail(causeWatch, err)
		}
		// Every end of a watch lists again, for a fresh revision.
		needList = true
		if time.Since(began) > b.max {
			b.reset()
		}
		b.wait(ctx)
	}
}

// errWatchClosed is a watch channel that closed without an error.
var errWatchClosed = errors.New("etcd: the watch channel closed")

// watch applies the events after rev until the watch ends, and returns
// why it did.
func (m *EtcdMembership) watch(ctx context.Context, rev int64) error {
	// WithRequireLeader: a member cut off from its cluster ends the watch
	// instead of leaving it silent.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := m.cli.Watch(wctx, m.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return err
		}
		m.apply(resp)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errWatchClosed
}

// apply applies the events of one watch response.
func (m *EtcdMembership) apply(resp clientv3.WatchResponse) {
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := 0
	for _, ev := range resp.Events {
		switch ev.Type {
		case clientv3.EventTypePut:
			v, err := decodeEtcdValue(m.cfg.Prefix, ev.Kv.Key, ev.Kv.Value)
			if err != nil {
				m.errs.Add(m.errs.IndexOf(causeDecode), 1)
				m.cfg.Log.WithError(err).Warn("etcd: ignoring a value under etcd_prefix that is not a registration")
				continue
			}
			if m.sched.put(v.Address, v.From, v.Until) {
				changed++
				m.cfg.Log.WithFields(logrus.Fields{"address": v.Address, "from": v.From, "until": v.Until}).Info("etcd: registration")
			}
		case clientv3.EventTypeDelete:
			a, err := url.PathUnescape(strings.TrimPrefix(string(ev.Kv.Key), m.cfg.Prefix))
			if err != nil {
				continue // never a registration's key, so never a member
			}
			if m.sched.remove(a, now) {
				changed++
				m.cfg.Log.WithFields(logrus.Fields{"address": a}).Info("etcd: registration removed")
			}
		}
	}
	m.sched.forget(now)
	if r := resp.Header.Revision; r > m.rev {
		m.rev = r
	}
	m.changes.Add(uint64(changed))
	m.okLocked(now)
}

// probeLoop asks etcd for the prefix's count once per interval, so that
// an outage is seen (a watch waits quietly through one), and forgets old
// spans while nothing changes.
func (m *EtcdMembership) probeLoop(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, min(m.cfg.Interval, m.cfg.DialTimeout))
		_, err := m.cli.Get(pctx, m.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if ctx.Err() != nil {
			return
		}
		now := m.cfg.Now()
		m.mu.Lock()
		m.sched.forget(now)
		if err == nil {
			m.okLocked(now)
		}
		m.mu.Unlock()
		if err != nil {
			m.fail(causeUnreachable, err)
		}
	}
}

// fail counts an error of cause, and logs the first of an outage.
func (m *EtcdMembership) fail(cause string, err error) {
	m.errs.Add(m.errs.IndexOf(cause), 1)
	now := m.cfg.Now()
	m.mu.Lock()
	first := m.outage.IsZero()
	if first {
		m.outage = now
	}
	n := len(m.sched.membersAt(intervalStart(now, m.cfg.Interval).Unix()))
	m.mu.Unlock()
	if first {
		m.cfg.Log.WithError(err).WithFields(logrus.Fields{"cause": cause, "members": n}).
			Warnf("etcd %v does not answer; routing with the last members known until it does", m.cfg.Endpoints)
	}
}

// okLocked ends an outage, if there is one. m.mu is held.
func (m *EtcdMembership) okLocked(now time.Time) {
	if m.outage.IsZero() {
		return
	}
	m.cfg.Log.WithField("outage", now.Sub(m.outage).Round(time.Millisecond).String()).Infof("etcd %v answers again", m.cfg.Endpoints)
	m.outage = time.Time{}
}

// RingFor returns the ring of the interval that contains start (a
// boundary, normally) and its epoch. See Membership.
func (m *EtcdMembership) RingFor(start time.Time) (*Ring, int64) {
	t := intervalStart(start, m.cfg.Interval).Unix()
	m.mu.Lock()
	members, epoch := m.sched.membersAt(t), m.sched.epochAt(t)
	m.mu.Unlock()
	return m.rings.get(members), epoch
}

// Snapshot returns the ring of the interval in progress at now, its epoch
// and the changes known to come. See Membership.
func (m *EtcdMembership) Snapshot(now time.Time) MembershipSnapshot {
	start := intervalStart(now, m.cfg.Interval)
	t := start.Unix()
	m.mu.Lock()
	defer m.mu.Unlock()
	members := m.sched.membersAt(t)
	if members == nil {
		members = []string{}
	}
	return MembershipSnapshot{
		Source:    "etcd",
		Start:     start,
		Members:   members,
		Epoch:     m.sched.epochAt(t),
		Pending:   m.sched.pending(t),
		Connected: m.outage.IsZero() && m.rev != 0,
		Revision:  m.rev,
	}
}

// Report sends the self-metrics: forward.ring.members (a gauge, the
// members of the interval in progress), forward.ring.changes_total (the
// registrations, leaves and removals seen since the last Report that
// changed the ring of some interval) and forward.etcd.error_total
// tagged cause:list, watch, compacted, unreachable or decode. A nil stats
// reports to EtcdConfig.Stats.
func (m *EtcdMembership) Report(stats statsd.ClientInterface) {
	if stats == nil {
		stats = m.cfg.Stats
	}
	ring, _ := m.RingFor(m.cfg.Now())
	stats.Gauge("forward.ring.members", float64(ring.Len()), nil, 1)
	stats.Count("forward.ring.changes_total", int64(m.changes.Swap(0)), nil, 1)
	m.errs.Report(stats, "forward.etcd.error_total")
}

// Close stops the watch and closes the client. RingFor and Snapshot go on
// answering from the last state.
func (m *EtcdMembership) Close() error {
	m.once.Do(func() {
		if m.cancel != nil {
			m.cancel()
		}
		m.wg.Wait()
		m.closeErr = m.cli.Close()
	})
	return m.closeErr
}

// Registration is a global's key under etcd_prefix, kept alive by a lease
// while the global runs. It implements plugins.Reporter.
type Registration struct {
	cfg     EtcdConfig
	cli     *clientv3.Client
	address string
	key     string
	ttl     int64 // seconds
	errs    *counter.ByCause

	op sync.Mutex // one write of the key at a time (register, Leave)

	mu    sync.Mutex
	lease clientv3.LeaseID
	from  int64
	until int64

	cancel   context.CancelFunc
	done     chan struct{}
	once     sync.Once
	closeErr error
}

var _ plugins.Reporter = (*Registration)(nil)

// RegisterEtcd registers this global, reachable at advertise (its forward
// URL, etcd_advertise_address), under cfg.Prefix with a lease of ttl
// (etcd_lease_ttl, rounded up to whole seconds), and keeps the lease alive
// until Close. The global is in the ring from From: Boundary(now +
// interval), so that every local that sees the key within the interval it
// was written in adds it at the same boundary; or, when the key is still
// there from a process of the same address that did not leave (a restart
// within ttl), from the From it had, so that nothing moves.
//
// When the lease is lost (etcd did not hear from this process for ttl,
// or the lease was revoked), it logs, counts cause:lease_lost, and
// registers again with a new lease and a new From, retrying with backoff
// until Close. ctx bounds the first registration only.
func RegisterEtcd(ctx context.Context, cfg EtcdConfig, advertise string, ttl time.Duration) (*Registration, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkAdvertise(advertise); err != nil {
		return nil, err
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("etcd_lease_ttl %s: must be at least 1s, such as 10s (how long a global that stopped answering etcd stays registered)", ttl)
	}
	cli, err := cfg.newClient()
	if err != nil {
		return nil, err
	}
	r := &Registration{
		cfg:     cfg,
		cli:     cli,
		address: advertise,
		key:     etcdKey(cfg.Prefix, advertise),
		ttl:     int64((ttl + time.Second - 1) / time.Second),
		errs:    newEtcdErrors(),
		done:    make(chan struct{}),
	}
	rctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	err = r.register(rctx)
	cancel()
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd_endpoints %v: registering %s: %w", cfg.Endpoints, r.key, err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	r.cancel = stop
	go r.keepAlive(runCtx)
	return r, nil
}

// register grants a new lease and writes the key under it.
func (r *Registration) register(ctx context.Context) error {
	r.op.Lock()
	defer r.op.Unlock()
	from := Boundary(r.cfg.Now().Add(r.cfg.Interval), r.cfg.Interval).Unix()
	resp, err := r.cli.Get(ctx, r.key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 1 {
		if v, err := decodeEtcdValue(r.cfg.Prefix, resp.Kvs[0].Key, resp.Kvs[0].Value); err == nil && v.Until == 0 {
			from = v.From // still registered: stay in from when it was
		}
	}
	lease, err := r.cli.Grant(ctx, r.ttl)
	if err != nil {
		return err
	}
	r.mu.Lock()
	v := etcdValue{Address: r.address, From: from, Until: r.until}
	old := r.lease
	r.mu.Unlock()
	b, _ := json.Marshal(v)
	if _, err := r.cli.Put(ctx, r.key, string(b), clientv3.WithLease(lease.ID)); err != nil {
		r.revoke(lease.ID)
		return err
	}
	r.mu.Lock()
	r.lease, r.from = lease.ID, from
	r.mu.Unlock()
	if old != 0 {
		// A lease that etcd kept (it was out of reach, not expired) holds
		// no key now; let it go rather than wait for its ttl.
		r.revoke(old)
	}
	r.cfg.Log.WithFields(logrus.Fields{"key": r.key, "from": from, "until": v.Until, "lease_ttl_s": r.ttl}).Info("etcd: registered")
	return nil
}

// revoke revokes lease, best effort.
func (r *Registration) revoke(lease clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.DialTimeout)
	defer cancel()
	r.cli.Revoke(ctx, lease)
}

// keepAlive keeps the lease alive, and registers again when it is lost.
func (r *Registration) keepAlive(ctx context.Context) {
	defer close(r.done)
	b := newBackoff(min(r.cfg.Interval, 5*time.Second))
	for {
		r.mu.Lock()
		lease := r.lease
		r.mu.Unlock()
		ch, err := r.cli.KeepAlive(ctx, lease)
		if err == nil {
			for range ch {
			}
		}
		if ctx.Err() != nil {
			return
		}
		r.errs.Add(r.errs.IndexOf(causeLeaseLost), 1)
		r.cfg.Log.WithField("key", r.key).Warn("etcd: the registration's lease was lost (etcd did not hear from this global within etcd_lease_ttl, or it was revoked); registering again")
		for first := true; ; first = false {
			rctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
			err := r.register(rctx)
			cancel()
			if err == nil {
				b.reset()
				break
			}
			if ctx.Err() != nil {
				return
			}
			r.errs.Add(r.errs.IndexOf(causeRegister), 1)
			if first {
				r.cfg.Log.WithError(err).WithField("key", r.key).Warn("etcd: registering again failed; retrying until it works")
			}
			b.wait(ctx)
		}
	}
}

// From is the boundary from which this global is in the ring.
func (r *Registration) From() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Unix(r.from, 0)
}

// Leave announces that this global leaves the ring: it writes until =
// Boundary(now + interval) under the same lease, and returns it. Intervals
// that start before until are still routed here; the global keeps
// importing until it has flushed the last of them, then calls Close. A
// second Leave returns the first until. When the write fails, the until
// is kept and written by the next registration if the lease was lost.
func (r *Registration) Leave(ctx context.Context) (until time.Time, err error) {
	r.op.Lock()
	defer r.op.Unlock()
	r.mu.Lock()
	if r.until == 0 {
		r.until = Boundary(r.cfg.Now().Add(r.cfg.Interval), r.cfg.Interval).Unix()
	}
	v := etcdValue{Address: r.address, From: r.from, Until: r.until}
	lease := r.lease
	r.mu.Unlock()
	until = time.Unix(v.Until, 0)
	b, _ := json.Marshal(v)
	if _, err := r.cli.Put(ctx, r.key, string(b), clientv3.WithLease(lease)); err != nil {
		return until, fmt.Errorf("etcd_endpoints %v: writing until=%d to %s: %w", r.cfg.Endpoints, v.Until, r.key, err)
	}
	r.cfg.Log.WithFields(logrus.Fields{"key": r.key, "until": v.Until}).Info("etcd: leaving the ring")
	return until, nil
}

// Close stops keeping the lease alive and revokes it, which deletes the
// key: without a Leave before, watchers take the global out at the
// boundary after the next full interval, as for a crash. It then closes
// the client.
func (r *Registration) Close(ctx context.Context) error {
	r.once.Do(func() {
		r.cancel()
		<-r.done
		r.op.Lock()
		r.mu.Lock()
		lease := r.lease
		r.mu.Unlock()
		_, err := r.cli.Revoke(ctx, lease)
		r.op.Unlock()
		if err != nil {
			r.errs.Add(r.errs.IndexOf(causeRevoke), 1)
			r.closeErr = fmt.Errorf("etcd_endpoints %v: revoking the lease of %s (it expires by itself within etcd_lease_ttl): %w", r.cfg.Endpoints, r.key, err)
		}
		if err := r.cli.Close(); err != nil && r.closeErr == nil {
			r.closeErr = err
		}
	})
	return r.closeErr
}

// Report sends forward.etcd.error_total, tagged cause:lease_lost,
// register or revoke. A nil stats reports to EtcdConfig.Stats.
func (r *Registration) Report(stats statsd.ClientInterface) {
	if stats == nil {
		stats = r.cfg.Stats
	}
	r.errs.Report(stats, "forward.etcd.error_total")
}
