package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/forward/forwardrpc"
	"github.com/veneur/veneur/internal/counter"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// IsGRPCAddress reports whether a forward_address names a gRPC global
// (grpc://host:port or grpcs://host:port), for NewGRPCClient, rather than
// an HTTP one, for NewClient.
func IsGRPCAddress(addr string) bool {
	scheme, _, ok := strings.Cut(addr, "://")
	return ok && (strings.EqualFold(scheme, "grpc") || strings.EqualFold(scheme, "grpcs"))
}

// GRPCClientConfig sets up a GRPCClient.
type GRPCClientConfig struct {
	// Address is forward_address: grpc://host:port for a global that
	// serves gRPC in the clear (its grpc_address), grpcs://host:port for
	// one that serves it over TLS.
	Address string
	// TLS is the client side of grpcs://: the authorities that verify the
	// global (nil RootCAs: the system's) and the client certificate to
	// present. nil means an empty config: the system's authorities, no
	// certificate. It must be nil for grpc://. The client does not modify
	// it.
	TLS *tls.Config
	// Delivery bounds the retries and the spool; zero fields take their
	// defaults (plugins.DefaultDelivery). Timeout bounds each stream.
	Delivery plugins.DeliveryConfig
	// DialOptions are added to the connection's options (tests use them
	// to dial a listener of their own).
	DialOptions []grpc.DialOption
	// Destination names the global in the delivery self-metrics' tag
	// destination; empty means "forward". The sharded forwarder gives each
	// member its own ("forward-" and its host:port).
	Destination string
}

// GRPCClient is the local side of forwarding over gRPC: a sink that sends
// the Batch.Forward of every flush to a global instance (ours, see
// GRPCServer, or veneur v14) as one SendMetricsV2 stream, each series a
// message converted by EncodeMetricpb. Like Client, it goes through a
// plugins.Queue (destination:forward, self-metric prefix forward, whose
// items are series): the flush is encoded at once and kept in the spool as
// the bytes of a forwardrpc.MetricList, and each attempt streams it,
// carrying the flush's batch id (the same on every retry) in the metadata
// key BatchMetadataKey, so that our globals merge it once however often it
// is retried. Flushes go out in order; an attempt that fails with no
// answer, Unavailable, DeadlineExceeded, Internal, Unknown, Aborted or
// DataLoss is retried with backoff; any other status drops the flush at
// once (cause rejected_4xx): sending it again would be answered the same.
// See grpcAnswer for how gRPC statuses stand for HTTP ones in the queue.
//
// The connection is made at the first attempt, not by NewGRPCClient, and
// closed by Close.
type GRPCClient struct {
	target string // host:port
	creds  credentials.TransportCredentials
	dial   []grpc.DialOption
	what   string // the destination, in errors
	stats  statsd.ClientInterface
	queue  *plugins.Queue

	// errs is forward.error_total{cause:marshal}: flushes that left
	// series out because they did not encode.
	errs *counter.ByCause
	// rounded and unrepresentable count the counters whose sum was
	// rounded to an int64, and those left out as not fitting one.
	rounded, unrepresentable atomic.Uint64

	// refused is whether the last connection attempt was refused: an
	// attempt that then fails as Unavailable sent nothing (plugins.NotSent).
	refused atomic.Bool

	mu     sync.Mutex
	conn   *grpc.ClientConn
	closed bool
}

var (
	_ plugins.Sink     = (*GRPCClient)(nil)
	_ plugins.Closer   = (*GRPCClient)(nil)
	_ plugins.Reporter = (*GRPCClient)(nil)
)

// NewGRPCClient returns a GRPCClient for cfg. It connects to nothing and
// sends nothing until Flush.
func NewGRPCClient(cfg GRPCClientConfig, env plugins.Env) (*GRPCClient, error) {
	const example = "grpc://veneur-global.example.com:8128"
	u, err := url.Parse(cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("forward_address: %w; use an address such as %s", err, example)
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "grpc" && scheme != "grpcs") || u.Host == "" || u.Port() == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("forward_address %q: not grpc://host:port or grpcs://host:port; use an address such as %s", cfg.Address, example)
	}
	var creds credentials.TransportCredentials
	switch {
	case scheme == "grpcs":
		tlsConf := cfg.TLS
		if tlsConf == nil {
			tlsConf = &tls.Config{}
		}
		// NewTLS takes a copy.
		creds = credentials.NewTLS(tlsConf)
	case cfg.TLS != nil:
		return nil, fmt.Errorf("forward_address %q is grpc://, in the clear, but TLS settings (forward_tls_*) are given: use grpcs://", cfg.Address)
	default:
		creds = insecure.NewCredentials()
	}
	if err := cfg.Delivery.Validate(); err != nil {
		return nil, err
	}
	c := &GRPCClient{
		target: u.Host,
		creds:  creds,
		dial:   cfg.DialOptions,
		what:   "the global instance at " + u.Host,
		stats:  env.Stats,
		errs:   counter.New("marshal"),
	}
	if c.stats == nil {
		c.stats = &statsd.NoOpClient{}
	}
	c.queue = plugins.NewQueue(cfg.destination(), nil, cfg.Delivery, env, "forward")
	return c, nil
}

// Name names the sink in self-metrics.
func (c *GRPCClient) Name() string { return "forward" }

// Flush encodes b.Forward (nothing when it is empty) as one stream with a
// new batch id, enqueues it, and reports forward.duration_ns{part:marshal}.
// It does not wait for the global instance. Series that do not encode
// (a counter beyond the int64 range, a histogram without its digest) are
// left out, the others still sent; a flush that left some out is counted
// in forward.error_total{cause:marshal} and returns them as the error.
func (c *GRPCClient) Flush(ctx context.Context, b *plugins.Batch) error {
	if len(b.Forward) == 0 {
		return nil
	}
	start := time.Now()
	body, n, skipped := c.encode(b.Forward)
	c.stats.TimeInMilliseconds("forward.duration_ns", float64(time.Since(start).Nanoseconds()), []string{"part:marshal"}, 1)
	var err error
	if len(skipped) > 0 {
		c.errs.Add(causeMarshal, 1)
		err = fmt.Errorf("%d of %d series left out: %w", len(skipped), len(b.Forward), errors.Join(skipped...))
	}
	if n == 0 {
		return err
	}
	c.queue.Send(plugins.Delivery{
		Request: plugins.Request{
			What:   c.what,
			Body:   body,
			Header: http.Header{BatchHeader: {newBatchID()}},
		},
		Count: n,
		Send:  c.send,
	})
	return err
}

// encode is the bytes of the forwardrpc.MetricList of fwd: each series
// that EncodeMetricpb encodes, as field 1. n is how many; the others'
// errors are in skipped.
func (c *GRPCClient) encode(fwd []samplers.Forwarded) (body []byte, n int, skipped []error) {
	opts := proto.MarshalOptions{UseCachedSize: true}
	for i := range fwd {
		f := &fwd[i]
		m, err := EncodeMetricpb(f)
		if err != nil {
			if errors.Is(err, ErrCounterRange) {
				c.unrepresentable.Add(1)
			}
			skipped = append(skipped, err)
			continue
		}
		mark := len(body)
		body = protowire.AppendTag(body, 1, protowire.BytesType)
		body = protowire.AppendVarint(body, uint64(opts.Size(m)))
		out, err := opts.MarshalAppend(body, m)
		if err != nil {
			// A name or tag that is not UTF-8, which protobuf strings
			// must be.
			body = body[:mark]
			skipped = append(skipped, fmt.Errorf("forwarding %s %q: %w", f.Type, f.Name, err))
			continue
		}
		body = out
		if f.Type == samplers.CounterMetric && f.Counter != math.Trunc(f.Counter) {
			c.rounded.Add(1)
		}
		n++
	}
	return body, n, skipped
}

// connection is the connection to the global, made at the first call.
func (c *GRPCClient) connection() (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("the forward client is closed")
	}
	if c.conn == nil {
		opts := append([]grpc.DialOption{grpc.WithTransportCredentials(c.creds), grpc.WithContextDialer(c.dialContext)}, c.dial...)
		conn, err := grpc.NewClient(c.target, opts...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.what, err)
		}
		c.conn = conn
	}
	return c.conn, nil
}

// dialContext connects to the global, noting whether it refused.
func (c *GRPCClient) dialContext(ctx context.Context, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	c.refused.Store(errors.Is(err, syscall.ECONNREFUSED))
	return conn, err
}

// notSent marks err as plugins.NotSent when it says the global is
// unavailable and the last connection attempt was refused.
func (c *GRPCClient) notSent(err error) error {
	if status.Code(err) == codes.Unavailable && c.refused.Load() {
		return plugins.NotSent(err)
	}
	return err
}

// send is one attempt at a flush, the Delivery's Send: it streams the
// series of r.Body with SendMetricsV2, the batch id of r.Header in the
// metadata, and answers as plugins.Delivery.Send says.
func (c *GRPCClient) send(ctx context.Context, r plugins.Request) error {
	var list forwardrpc.MetricList
	if err := proto.Unmarshal(r.Body, &list); err != nil {
		// The body is ours: this does not happen; should it, sending it
		// again would not help.
		return &plugins.StatusError{What: r.What, Code: http.StatusBadRequest, Status: "400 (the spooled flush does not decode)", Snippet: err.Error()}
	}
	conn, err := c.connection()
	if err != nil {
		return err
	}
	if id := r.Header.Get(BatchHeader); id != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, BatchMetadataKey, id)
	}
	stream, err := forwardrpc.NewForwardClient(conn).SendMetricsV2(ctx)
	if err != nil {
		return c.notSent(grpcAnswer(r.What, err, nil))
	}
	for _, m := range list.GetMetrics() {
		if err := stream.Send(m); err != nil {
			if err == io.EOF {
				// The global ended the call early (refused it, or
				// answered a duplicate): CloseAndRecv has its status.
				break
			}
			return c.notSent(grpcAnswer(r.What, err, nil))
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return c.notSent(grpcAnswer(r.What, err, stream.Trailer()))
	}
	return nil
}

// grpcAnswer is the error of a failed call as plugins.Queue judges it:
//
//   - Unavailable, DeadlineExceeded and Canceled without a retry-after in
//     the trailer: no answer (connection failures and timeouts look like
//     this): a plain error, retried;
//   - Unavailable with a retry-after (our global is busy, or merging this
//     batch from an earlier attempt): 503 with that RetryAfter;
//   - Internal, Unknown, DataLoss: 500, and Aborted: 503, retried;
//   - InvalidArgument, FailedPrecondition, OutOfRange: 400;
//     Unauthenticated: 401; PermissionDenied: 403; NotFound and
//     Unimplemented (no such service there): 404; AlreadyExists: 409;
//     ResourceExhausted (a message or call over the global's limits):
//     413. These are dropped: the same flush would get the same answer.
func grpcAnswer(what string, err error, trailer metadata.MD) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	var retryAfter time.Duration
	if v := trailer.Get(trailerRetryAfter); len(v) > 0 {
		if secs, err := strconv.Atoi(v[0]); err == nil && secs > 0 && secs < 3600 {
			retryAfter = time.Duration(secs) * time.Second
		}
	}
	var code int
	switch st.Code() {
	case codes.Unavailable:
		if retryAfter == 0 {
			return fmt.Errorf("%s: %w", what, err)
		}
		code = http.StatusServiceUnavailable
	case codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("%s: %w", what, err)
	case codes.Aborted:
		code = http.StatusServiceUnavailable
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		code = http.StatusBadRequest
	case codes.Unauthenticated:
		code = http.StatusUnauthorized
	case codes.PermissionDenied:
		code = http.StatusForbidden
	case codes.NotFound, codes.Unimplemented:
		code = http.StatusNotFound
	case codes.AlreadyExists:
		code = http.StatusConflict
	case codes.ResourceExhausted:
		code = http.StatusRequestEntityTooLarge
	default: // Internal, Unknown, DataLoss, and codes yet to come
		code = http.StatusInternalServerError
	}
	return &plugins.StatusError{
		What:       what,
		Code:       code,
		Status:     fmt.Sprintf("%d (gRPC %s)", code, st.Code()),
		Snippet:    st.Message(),
		RetryAfter: retryAfter,
	}
}

// Close delivers what the queue holds until ctx ends, drops the rest, and
// closes the connection.
func (c *GRPCClient) Close(ctx context.Context) error {
	err := c.queue.Close(ctx)
	c.mu.Lock()
	c.closed = true
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	return err
}

// Report sends forward.error_total{cause:marshal}, the counts of counters
// rounded to an int64 (forward.counter_rounded_total) and left out as
// beyond its range (forward.counter_unrepresentable_total), and the
// delivery self-metrics (see plugins.Queue).
func (c *GRPCClient) Report(stats statsd.ClientInterface) {
	c.errs.Report(stats, "forward.error_total")
	if n := c.rounded.Swap(0); n > 0 {
		stats.Count("forward.counter_rounded_total", int64(n), nil, 1)
	}
	if n := c.unrepresentable.Swap(0); n > 0 {
		stats.Count("forward.counter_unrepresentable_total", int64(n), nil, 1)
	}
	c.queue.Report(stats)
}

// Reclaim closes the client and gives back, decoded, the series of the
// flushes the global provably never received (see plugins.Queue.Reclaim),
// for the sharded forwarder to send to their new owner. The rest is
// delivered, or dropped, within ctx.
func (c *GRPCClient) Reclaim(ctx context.Context) ([]samplers.Forwarded, error) {
	ds, err := c.queue.Reclaim(ctx)
	c.Close(ctx)
	var out []samplers.Forwarded
	var errs []error
	for _, d := range ds {
		var list forwardrpc.MetricList
		if uerr := proto.Unmarshal(d.Body, &list); uerr != nil {
			errs = append(errs, uerr)
			continue
		}
		for _, m := range list.GetMetrics() {
			f, derr := DecodeMetricpb(m)
			if derr != nil {
				errs = append(errs, derr)
				continue
			}
			out = append(out, f)
		}
	}
	if len(errs) > 0 {
		err = errors.Join(err, fmt.Errorf("decoding the flushes taken back: %w", errors.Join(errs...)))
	}
	return out, err
}

func (c GRPCClientConfig) destination() string {
	if c.Destination == "" {
		return "forward"
	}
	return c.Destination
}
