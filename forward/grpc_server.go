package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/veneur/veneur/forward/forwardrpc"
	"github.com/veneur/veneur/forward/metricpb"
	"github.com/veneur/veneur/internal/counter"
	"github.com/veneur/veneur/internal/h2rpc"
	"github.com/veneur/veneur/listen"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// BatchMetadataKey is the gRPC metadata key of a call's batch id: BatchHeader
// as gRPC spells metadata keys (lower case). The grpc:// forward client
// sends a new id with every flush, the same on each retry of it; v14
// sends none.
const BatchMetadataKey = "x-veneur-batch-id"

// Trailer keys of a call the GRPCServer merged, or answered as a
// duplicate: how many series it accepted and rejected, "true" for a
// duplicate, and the first few rejections. They are informative: v14
// ignores them, and so does the grpc:// client but for logs.
const (
	trailerAccepted  = "x-veneur-accepted"
	trailerRejected  = "x-veneur-rejected"
	trailerDuplicate = "x-veneur-duplicate"
	trailerErrors    = "x-veneur-errors"
	// trailerRetryAfter is the seconds to wait before a retry, with
	// Unavailable when the server is busy or merging the same batch.
	trailerRetryAfter = "retry-after"
)

// Defaults of GRPCServerConfig.
const (
	// DefaultGRPCMaxMessage is gRPC's own default: far above one series
	// of SendMetricsV2 (a t-digest at the highest compression is about
	// 300 KB), and what v14 globals accept, so that no sender relies on
	// more for a SendMetrics.
	DefaultGRPCMaxMessage = 4 << 20
	// DefaultGRPCMaxStreamMetrics bounds the series of one call: far above
	// the global series of one local's flush.
	DefaultGRPCMaxStreamMetrics = 1 << 20
	// DefaultGRPCMaxCallDuration bounds one call, as http_address bounds
	// the reading of a request.
	DefaultGRPCMaxCallDuration = 60 * time.Second
	// DefaultGRPCStopGrace is how long Stop lets calls in progress finish.
	DefaultGRPCStopGrace = time.Second
)

// grpcMaxAnswerErrors is how many rejections an answer describes.
const grpcMaxAnswerErrors = 10

// grpcPresizeMax bounds the series a call's slice is sized for before any
// arrive (about 1 MiB).
const grpcPresizeMax = 1 << 14

// GRPCServerConfig sets up a GRPCServer. Zero values mean the defaults.
type GRPCServerConfig struct {
	// Address is grpc_address, where Start listens: host:port, or a unix
	// socket path or an inherited socket (fd@N, einhorn@N, systemd:NAME)
	// as http_address takes them. It may be empty when the server is only
	// given listeners (ServeGRPC).
	Address string
	// Bind binds Address; nil binds with listen.Binder's defaults.
	Bind *listen.Binder
	// TLS, when not nil, serves TLS only (the locals' grpcs://). Set its
	// ClientAuth and ClientCAs to require client certificates. The
	// server sets NextProtos to h2 (gRPC runs over HTTP/2).
	TLS *tls.Config
	// MaxMessageBytes bounds one received message: a SendMetrics list, or
	// one series of SendMetricsV2. A larger one refuses its call with
	// ResourceExhausted (cause too_large), merging nothing of it. Zero or
	// less means DefaultGRPCMaxMessage.
	MaxMessageBytes int
	// MaxStreamMetrics bounds the series of one call; the series past it
	// refuse the whole call with ResourceExhausted (cause too_large). Zero
	// or less means DefaultGRPCMaxStreamMetrics.
	MaxStreamMetrics int
	// MaxStreamBytes bounds the bytes of one call's series, as
	// import_max_body_bytes bounds an /import body: past it the call is
	// refused with ResourceExhausted (cause too_large). Zero or less means
	// MaxImportBody.
	MaxStreamBytes int64
	// MaxCallDuration bounds one call from its start: past it, the call
	// ends with DeadlineExceeded (cause receive) and nothing of it is
	// merged. Zero or less means DefaultGRPCMaxCallDuration.
	MaxCallDuration time.Duration
	// StopGrace is how long Stop lets calls in progress finish before it
	// closes their connections (less when Stop's context ends first).
	// Zero or less means DefaultGRPCStopGrace.
	StopGrace time.Duration
	// Log receives the server's logs; nil discards them.
	Log *logrus.Logger
	// Guard, when not nil, is deferred at the top of the serving
	// goroutine and of every call's handler (listen.Options.Guard).
	Guard func()
}

// GRPCServer is the gRPC transport of an Importer: the service
// forwardrpc.Forward as veneur v14 defines it, so that v14 locals (and
// our grpc:// forward client) forward to this instance. Each call is
// one import, like one POST /import:
//
//   - SendMetricsV2 (what v14 sends, one stream per flush; each series is
//     decoded from its bytes by DecodeMetricpbWire) and SendMetrics (one
//     MetricList, decoded by DecodeMetricpb) are decoded as the series
//     come. A call with a batch id (our grpc:// client's) is merged once
//     it has ended well, all at once: a call that fails midway merges
//     nothing, and its sender sends it again. A SendMetricsV2 call without
//     one (v14's: a local's stream per flush, or the stream a v14 proxy
//     keeps open to each global for as long as it runs) is merged as it
//     comes, in parts (streamV2). Series that do not decode
//     (including a message of SendMetricsV2 that is not a protobuf Metric)
//     are skipped and counted (import.metric_error_total); a call none of
//     whose series decoded is refused with InvalidArgument, merging
//     nothing.
//   - The batch id in the metadata key BatchMetadataKey, when there is
//     one, is remembered with the Importer's ids: a call whose id was
//     merged (over HTTP or gRPC) is answered OK and not merged again, one
//     whose id is being merged is answered Unavailable (retry-after: 1).
//     A malformed id is refused with InvalidArgument. A call without an
//     id is merged whatever came before.
//   - Calls take a place among the Importer's imports in progress
//     (ImporterConfig.MaxConcurrency, shared with /import), waiting for
//     one as /import requests do; a call that gets none is refused with
//     Unavailable (retry-after: 1).
//   - Limits (GRPCServerConfig): the bytes of a message, the series and
//     bytes of a call merged whole (ResourceExhausted), and its duration
//     (DeadlineExceeded); a streamed call ends when no series came for
//     MaxCallDuration.
//   - Merge failing with ErrClosed answers Unavailable (send to another
//     instance); any other failure, Internal.
//
// A merged call's trailer carries x-veneur-accepted, x-veneur-rejected
// and the first rejections in x-veneur-errors; a duplicate's, the counts
// of its first merge and x-veneur-duplicate: true.
//
// It serves gRPC over HTTP/2 with internal/h2rpc, which hands a call its
// messages as bytes, gathered per read of the socket rather than passed
// one by one between goroutines as grpc-go's server does: a v14 local
// sends a message per series, and that passing cost more than decoding
// and merging a small digest. The service has no other methods; any other
// is answered Unimplemented, as are compressed calls (v14 and our client
// send none).
//
// NewGRPCServer starts nothing; Start (or ServeGRPC) serves, Stop stops.
// Its self-metrics are import.*, tagged transport:grpc (see Report).
type GRPCServer struct {
	im  *Importer
	cfg GRPCServerConfig
	// compact is the Importer's Merger when it takes Compact series:
	// calls then gather their series in one.
	compact CompactMerger
	log     *logrus.Logger
	srv     *h2rpc.Server

	mu      sync.Mutex
	ln      net.Listener  // the first listener served, for Addr
	serving int           // ServeGRPC goroutines still running
	served  chan struct{} // closed when serving drops to 0 after Stop
	stopped bool

	requestErrs *counter.ByCause // by grpcCause*
	metricErrs  *counter.ByCause // by the errors of DecodeMetricpb(Wire)
	requests    atomic.Uint64
	duplicates  atomic.Uint64
	waited      atomic.Uint64 // calls that waited for a place
	metrics     atomic.Uint64 // series merged
	// lastCall is the series the last merged call accepted: a call's
	// slice of series starts at that size (up to grpcPresizeMax), since a
	// local sends much the same series every interval.
	lastCall atomic.Int64
	// lastKeys and lastCents are the bytes of keys and the centroids of
	// the last call merged in Compact form, to size the next one's.
	lastKeys, lastCents atomic.Int64
	// requestNanos and mergeNanos are the times of the merged calls:
	// receiving and decoding, and merging.
	requestNanos, mergeNanos atomic.Int64
}

var _ listen.Listener = (*GRPCServer)(nil)

// The paths of the methods of forwardrpc.Forward.
const (
	methodSendMetrics   = "/forwardrpc.Forward/SendMetrics"
	methodSendMetricsV2 = "/forwardrpc.Forward/SendMetricsV2"
)

// Causes of import.request_error_total{transport:grpc}, in the order of
// GRPCServer.requestErrs.
const (
	grpcCauseBatchID = iota
	grpcCauseInProgress
	grpcCauseBusy
	grpcCauseTooLarge
	grpcCauseReceive
	grpcCauseRejected
	grpcCauseShutdown
)

// NewGRPCServer returns a GRPCServer that imports through im. It starts
// nothing.
func NewGRPCServer(im *Importer, cfg GRPCServerConfig) (*GRPCServer, error) {
	if im == nil {
		return nil, errors.New("forward: NewGRPCServer needs an Importer")
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultGRPCMaxMessage
	}
	if cfg.MaxStreamMetrics <= 0 {
		cfg.MaxStreamMetrics = DefaultGRPCMaxStreamMetrics
	}
	if cfg.MaxStreamBytes <= 0 {
		cfg.MaxStreamBytes = MaxImportBody
	}
	if cfg.MaxCallDuration <= 0 {
		cfg.MaxCallDuration = DefaultGRPCMaxCallDuration
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = DefaultGRPCStopGrace
	}
	log := cfg.Log
	if log == nil {
		log = logrus.New()
		log.SetOutput(io.Discard)
	}
	s := &GRPCServer{
		im:     im,
		cfg:    cfg,
		log:    log,
		served: make(chan struct{}),
		requestErrs: counter.New(
			"batch_id", "in_progress", "busy", "too_large", "receive", "rejected", "shutdown",
		),
		metricErrs: counter.NewErrors(
			// The precise causes first: each wraps one of the others.
			counter.Cause{Name: "scope", Err: ErrScope},
			counter.Cause{Name: "gauge", Err: ErrGauge},
			counter.Cause{Name: "centroids", Err: ErrCentroids},
			counter.Cause{Name: "non_finite", Err: ErrNonFinite},
			counter.Cause{Name: "precision", Err: ErrPrecision},
			counter.Cause{Name: "protobuf", Err: ErrProtobuf},
			counter.Cause{Name: "name", Err: ErrName},
			counter.Cause{Name: "type", Err: ErrType},
			counter.Cause{Name: "tags", Err: ErrTags},
			counter.Cause{Name: "value", Err: ErrValue},
		),
	}
	s.compact, _ = im.grpcMerger().(CompactMerger)
	// The server hands each call its messages as bytes: SendMetricsV2
	// decodes each series from them (DecodeMetricpbWire), SendMetrics
	// its MetricList with the generated code. Each call gets the
	// deadline MaxCallDuration, so that a sender that stops sending
	// cannot hold a place for long; a silent connection is pinged after
	// a minute, and closed when the ping goes unanswered for 20 s.
	s.srv = h2rpc.NewServer(h2rpc.Config{
		TLS:              cfg.TLS,
		MaxMessageBytes:  cfg.MaxMessageBytes,
		KeepaliveTime:    time.Minute,
		KeepaliveTimeout: 20 * time.Second,
		Guard:            cfg.Guard,
		OnError: func(err error) {
			s.log.WithError(err).Info("closed a gRPC connection on a protocol error")
		},
	}, map[string]h2rpc.Handler{
		methodSendMetrics:   s.sendMetrics,
		methodSendMetricsV2: s.sendMetricsV2,
	})
	return s, nil
}

// Start binds Address and serves it in the background.
func (s *GRPCServer) Start() error {
	if s.cfg.Address == "" {
		return errors.New("grpc_address is empty; set it to a host:port such as 0.0.0.0:8128")
	}
	ln, err := s.cfg.Bind.Stream("grpc_address", s.cfg.Address)
	if err != nil {
		return err
	}
	return s.ServeGRPC(ln)
}

// ServeGRPC serves ln in the background until Stop, which closes it. It
// may be called for several listeners; Addr is the first one's. After
// Stop it closes ln and returns an error.
func (s *GRPCServer) ServeGRPC(ln net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		ln.Close()
		return errors.New("forward: the gRPC server is stopped")
	}
	if s.ln == nil {
		s.ln = ln
	}
	s.serving++
	s.mu.Unlock()
	go func() {
		defer s.doneServing()
		if s.cfg.Guard != nil {
			defer s.cfg.Guard()
		}
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, h2rpc.ErrServerStopped) {
			s.log.WithError(err).Error("gRPC server stopped")
		}
	}()
	return nil
}

func (s *GRPCServer) doneServing() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serving--
	if s.serving == 0 && s.stopped {
		close(s.served)
	}
}

// Stop stops accepting, lets the calls in progress finish for StopGrace
// at most (less when ctx ends first), then closes every connection left,
// and returns once the serving goroutines have returned. Calls cut off
// merge nothing; their senders retry elsewhere or later. Calling it again
// (or before Start) is harmless.
func (s *GRPCServer) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	if s.serving == 0 {
		close(s.served)
	}
	s.mu.Unlock()

	grace, cancel := context.WithTimeout(ctx, s.cfg.StopGrace)
	defer cancel()
	s.srv.Stop(grace)
	<-s.served
	return nil
}

// Addr is the address of the first listener served, nil before.
func (s *GRPCServer) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// sendMetrics imports one MetricList (SendMetrics).
func (s *GRPCServer) sendMetrics(call *h2rpc.Call) ([]byte, metadata.MD, error) {
	ctx, cancel := context.WithTimeout(call.Context(), s.cfg.MaxCallDuration)
	defer cancel()
	call.SetContext(ctx)
	var trailer metadata.MD
	err := s.importCall(ctx, &trailer, func(c *grpcCall) error {
		b, err := call.Recv()
		if err == io.EOF {
			return &receiveError{status.Error(codes.Internal, "a SendMetrics call without its MetricList")}
		}
		if err != nil {
			return &receiveError{err}
		}
		var list forwardrpc.MetricList
		if err := proto.Unmarshal(b, &list); err != nil {
			return &receiveError{status.Errorf(codes.Internal, "the MetricList does not parse: %v", err)}
		}
		if _, err := call.Recv(); err != io.EOF {
			if err == nil {
				err = status.Error(codes.Internal, "a SendMetrics call of more than one MetricList")
			}
			return &receiveError{err}
		}
		for _, m := range list.GetMetrics() {
			if err := c.add(m); err != nil {
				return err
			}
		}
		return nil
	})
	return nil, trailer, err
}

// sendMetricsV2 imports the series of one stream (SendMetricsV2). Each
// series is decoded from the bytes of its message. A call with a batch id
// is merged once it ends, whole; one without is streamed (streamV2).
func (s *GRPCServer) sendMetricsV2(call *h2rpc.Call) ([]byte, metadata.MD, error) {
	if id, err := incomingBatchID(call.Context()); err == nil && id == "" {
		return s.streamV2(call)
	}
	ctx, cancel := context.WithTimeout(call.Context(), s.cfg.MaxCallDuration)
	defer cancel()
	call.SetContext(ctx)
	var trailer metadata.MD
	err := s.importCall(ctx, &trailer, func(c *grpcCall) error {
		for {
			b, err := call.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return &receiveError{err}
			}
			if err := c.addWire(b); err != nil {
				return err
			}
		}
	})
	return nil, trailer, err
}

// Bounds of a part of a streamed call: its series are merged once it
// holds this many, or this many bytes of them, or when the sender pauses.
const (
	streamPartSeries = 4096
	streamPartBytes  = 8 << 20
)

// errStreamIdle ends a streamed call that sent nothing for
// MaxCallDuration.
var errStreamIdle = errors.New("no series for the longest a call may take")

// streamV2 imports a SendMetricsV2 call without a batch id as it comes, in
// parts: veneur v14's proxy keeps one such stream open to each global for
// as long as it runs, sending each series as it gets it, and a v14 local
// sends one per flush and does not send it again. A part is merged when it
// holds streamPartSeries series or streamPartBytes bytes of them (or the
// call's limits, when lower), or when nothing more has arrived (the
// sender paused), taking a place among the imports in progress for the
// time of its merge only. What was merged stays merged when the call
// fails later; the call ends with DeadlineExceeded when no series came
// for MaxCallDuration. Its answer counts every part's series.
func (s *GRPCServer) streamV2(call *h2rpc.Call) ([]byte, metadata.MD, error) {
	start := time.Now()
	ctx, cancel := context.WithCancelCause(call.Context())
	defer cancel(nil)
	idle := time.AfterFunc(s.cfg.MaxCallDuration, func() { cancel(errStreamIdle) })
	defer idle.Stop()
	call.SetContext(ctx)
	maxSeries := min(streamPartSeries, s.cfg.MaxStreamMetrics)
	maxBytes := min(streamPartBytes, s.cfg.MaxStreamBytes)
	var (
		accepted, rejected int
		answers            []string
		part               = s.newCall()
	)
	defer func() { part.recycle() }()
	// flush merges the part, and starts the next.
	flush := func() error {
		if part.n == 0 {
			return nil
		}
		part.errs.Publish()
		accepted, rejected = accepted+part.accepted, rejected+part.rejected
		answers = append(answers, part.answers[:min(len(part.answers), grpcMaxAnswerErrors-len(answers))]...)
		if part.accepted > 0 {
			if err := s.takePlace(ctx); err != nil {
				return err
			}
			err := s.mergeCall(part)
			s.im.grpcLeavePlace()
			if err != nil {
				return err
			}
			s.metrics.Add(uint64(part.accepted))
			s.lastCall.Store(int64(part.accepted))
		}
		first := part.first + part.n
		part.recycle()
		part = s.newCall()
		part.first = first
		idle.Reset(s.cfg.MaxCallDuration)
		return nil
	}
	n := 0 // calls of Recv
	for {
		b, err := call.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			// What came is merged: the sender does not send it again.
			if ferr := flush(); ferr != nil {
				err = ferr
			} else {
				if context.Cause(ctx) == errStreamIdle {
					err = status.Errorf(codes.DeadlineExceeded, "no series for %v", s.cfg.MaxCallDuration)
				}
				s.requestErrs.Add(grpcCauseReceive, 1)
			}
			return nil, answerTrailer(accepted, rejected, answers), err
		}
		if err := part.addWire(b); err != nil {
			return nil, answerTrailer(accepted, rejected, answers), err // not reached: parts are within the limits
		}
		if n++; part.n >= maxSeries || part.bytes >= maxBytes || !call.Pending() {
			if err := flush(); err != nil {
				return nil, answerTrailer(accepted, rejected, answers), err
			}
		} else if n%1024 == 0 {
			idle.Reset(s.cfg.MaxCallDuration)
		}
	}
	if err := flush(); err != nil {
		return nil, answerTrailer(accepted, rejected, answers), err
	}
	trailer := answerTrailer(accepted, rejected, answers)
	if accepted == 0 && rejected > 0 {
		s.requestErrs.Add(grpcCauseRejected, 1)
		return nil, trailer, status.Errorf(codes.InvalidArgument, "none of the %d series was accepted; the first: %s", rejected, answers[0])
	}
	s.requests.Add(1)
	s.requestNanos.Add(int64(time.Since(start)))
	return nil, trailer, nil
}

// receiveError is a failure to receive a call's next message: the sender
// went away or gave up, the call's deadline passed, or the message did
// not parse or was over MaxMessageBytes.
type receiveError struct{ err error }

func (e *receiveError) Error() string { return e.err.Error() }

// grpcCall gathers the series of one call as they are decoded. Its metric
// errors are counted apart, and published only once the whole call was
// received, so that a call refused midway counts none of them, as nothing
// of it is merged.
type grpcCall struct {
	s   *GRPCServer
	fwd []samplers.Forwarded
	// compact, when not nil, gathers the series instead of fwd: the
	// server's Merger is a CompactMerger.
	compact *Compact
	merged  bool // compact was handed to the Merger
	dec     wireDecoder
	n       int // series received
	// first is the index in its call of the first series: that of a
	// streamed call's part, 0 otherwise.
	first int
	// bytes counts the bytes of the series received: each message's for
	// SendMetricsV2, each series' encoded size for SendMetrics.
	bytes              int64
	accepted, rejected int
	errs               counter.Local
	answers            []string // the first rejections
}

// add decodes and keeps one series of a SendMetrics, or refuses the call
// when it is one too many or too large.
func (c *grpcCall) add(m *metricpb.Metric) error {
	if err := c.count(proto.Size(m)); err != nil {
		return err
	}
	f, err := DecodeMetricpb(m)
	c.keep(f, err)
	return nil
}

// addWire is add for the bytes of a series, as SendMetricsV2 receives
// them; it keeps nothing of b.
func (c *grpcCall) addWire(b []byte) error {
	if err := c.count(len(b)); err != nil {
		return err
	}
	if c.compact != nil && c.dec.fastCompact(b, c.compact) {
		c.accepted++
		return nil
	}
	f, err := c.dec.decode(b)
	c.keep(f, err)
	return nil
}

// count counts a series of size bytes, and refuses the call when it is one
// too many or too large.
func (c *grpcCall) count(size int) error {
	c.n++
	if c.n > c.s.cfg.MaxStreamMetrics {
		return status.Errorf(codes.ResourceExhausted, "more than %d series in one call; send fewer per call", c.s.cfg.MaxStreamMetrics)
	}
	c.bytes += int64(size)
	if c.bytes > c.s.cfg.MaxStreamBytes {
		return status.Errorf(codes.ResourceExhausted, "more than %d bytes of series in one call; send fewer per call", c.s.cfg.MaxStreamBytes)
	}
	return nil
}

// keep keeps f, the last series counted, or its rejection err.
func (c *grpcCall) keep(f samplers.Forwarded, err error) {
	if err == nil && c.compact != nil && !c.compact.AddForwarded(&f) {
		// DecodeMetricpb gives counters, digests and sketches only.
		err = fmt.Errorf("%w: a series of type %v without a value", ErrValue, f.Type)
	}
	if err != nil {
		c.rejected++
		c.errs.AddErr(err)
		if len(c.answers) < grpcMaxAnswerErrors {
			c.answers = append(c.answers, asciiOnly(fmt.Sprintf("metric %d (%s): %v", c.first+c.n-1, strconv.QuoteToASCII(f.Name), err)))
		}
		return
	}
	if c.compact == nil {
		c.fwd = append(c.fwd, f)
	}
	c.accepted++
}

// importCall is what both methods share: the batch id, a place among the
// imports in progress, receiving and decoding with receive (which calls
// the call's add or addWire for each series and returns once the call's
// series ended, or with the error that ends the call), and the merge. It
// sets *trailer to what the answer's trailer carries, and returns the
// call's status error.
func (s *GRPCServer) importCall(ctx context.Context, trailer *metadata.MD, receive func(*grpcCall) error) error {
	start := time.Now()
	batches := s.im.grpcBatches()
	// id is the batch id, "" when the call has none. Until its merge
	// succeeds (and id is remembered), every way out forgets it.
	id, err := incomingBatchID(ctx)
	if err != nil {
		s.requestErrs.Add(grpcCauseBatchID, 1)
		return err
	}
	if id != "" {
		state, prev := batches.begin(id, s.im.grpcNow())
		switch state {
		case batchDuplicate:
			s.duplicates.Add(1)
			*trailer = answerTrailer(prev.accepted, prev.rejected, nil)
			trailer.Set(trailerDuplicate, "true")
			return nil
		case batchMerging:
			s.requestErrs.Add(grpcCauseInProgress, 1)
			*trailer = metadata.Pairs(trailerRetryAfter, "1")
			return status.Errorf(codes.Unavailable, "batch %s is being merged; retry to learn its answer", id)
		}
		// batchResume, a batch that /import merged in part, is merged
		// as a new one: a call is merged whole, and no sender moves a
		// batch from one transport to the other.
		defer func() {
			if id != "" {
				batches.fail(id)
			}
		}()
	}
	if err := s.takePlace(ctx); err != nil {
		*trailer = metadata.Pairs(trailerRetryAfter, "1")
		return err
	}
	defer s.im.grpcLeavePlace()

	call := s.newCall()
	defer call.recycle()
	if err := receive(call); err != nil {
		cause := s.requestErrs.Len() - 1 // other: receive returns no other error
		var re *receiveError
		if errors.As(err, &re) {
			err, cause = re.err, grpcCauseReceive
		}
		if status.Code(err) == codes.ResourceExhausted {
			// A message over MaxMessageBytes, or a call over its limits.
			cause = grpcCauseTooLarge
		}
		s.requestErrs.Add(cause, 1)
		return err
	}
	read := time.Now()
	call.errs.Publish()
	if call.accepted == 0 && call.rejected > 0 {
		s.requestErrs.Add(grpcCauseRejected, 1)
		*trailer = answerTrailer(0, call.rejected, call.answers)
		return status.Errorf(codes.InvalidArgument, "none of the %d series was accepted; the first: %s", call.rejected, call.answers[0])
	}
	if err := s.mergeCall(call); err != nil {
		return err
	}
	s.requestNanos.Add(int64(read.Sub(start)))
	s.mergeNanos.Add(int64(time.Since(read)))
	s.requests.Add(1)
	s.metrics.Add(uint64(call.accepted))
	s.lastCall.Store(int64(call.accepted))
	if id != "" {
		batches.done(id, mergedBatch{at: s.im.grpcNow(), accepted: call.accepted, rejected: call.rejected})
		id = ""
	}
	*trailer = answerTrailer(call.accepted, call.rejected, call.answers)
	return nil
}

// takePlace takes a place among the imports in progress (the caller
// leaves it), counting a wait, or counts and returns the Unavailable
// status of a call that got none.
func (s *GRPCServer) takePlace(ctx context.Context) error {
	waited, ok := s.im.grpcTakePlace(ctx)
	if waited {
		s.waited.Add(1)
	}
	if !ok {
		s.requestErrs.Add(grpcCauseBusy, 1)
		return status.Error(codes.Unavailable, s.im.grpcBusyMessage())
	}
	return nil
}

// newCall starts gathering the series of a call, or of a part of a
// streamed one: in a Compact when the Merger takes them, its arrays the
// size of the last call's.
func (s *GRPCServer) newCall() *grpcCall {
	call := &grpcCall{s: s, errs: s.metricErrs.NewLocal()}
	if presize := min(s.lastCall.Load(), grpcPresizeMax); s.compact != nil {
		call.compact = newCompact()
		if cap(call.compact.series) == 0 {
			call.compact.series = make([]compactSeries, 0, presize)
			call.compact.keys = make([]byte, 0, min(s.lastKeys.Load(), 64*grpcPresizeMax))
			call.compact.cents = make([]tdigest.Centroid, 0, min(s.lastCents.Load(), 16*grpcPresizeMax))
		}
	} else {
		call.fwd = make([]samplers.Forwarded, 0, presize)
	}
	return call
}

// recycle gives back a call's Compact when nothing merged it.
func (c *grpcCall) recycle() {
	if c.compact != nil && !c.merged {
		c.compact.Hold(1)
		c.compact.Release()
	}
}

// mergeCall hands a call's series to the Merger; it counts a failure and
// returns the status to answer with.
func (s *GRPCServer) mergeCall(call *grpcCall) error {
	var err error
	if call.compact != nil {
		// Sizes for the next call, read before the workers may release
		// the Compact to another.
		s.lastKeys.Store(int64(len(call.compact.keys)))
		s.lastCents.Store(int64(len(call.compact.cents)))
		err = s.compact.MergeCompact(call.compact)
		call.merged = err == nil
	} else {
		err = s.im.grpcMerger().Merge(call.fwd)
	}
	if err != nil {
		if errors.Is(err, ErrClosed) {
			s.requestErrs.Add(grpcCauseShutdown, 1)
			return status.Error(codes.Unavailable, "shutting down; send to another instance")
		}
		s.requestErrs.Add(s.requestErrs.Len()-1, 1) // other
		return status.Errorf(codes.Internal, "merging the series: %v", err)
	}
	return nil
}

// incomingBatchID is the batch id of the call of ctx: "" when it has
// none, an InvalidArgument status when it has several or a malformed one.
func incomingBatchID(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	ids := md.Get(BatchMetadataKey)
	switch {
	case len(ids) == 0:
		return "", nil
	case len(ids) > 1 || !wellFormedBatchID(ids[0]):
		return "", status.Errorf(codes.InvalidArgument, "%s: want one id of 1 to %d characters of 0-9, a-z, A-Z, _ and -", BatchMetadataKey, maxBatchIDLen)
	}
	return ids[0], nil
}

// answerTrailer is the trailer of a merged call.
func answerTrailer(accepted, rejected int, errs []string) metadata.MD {
	md := metadata.Pairs(trailerAccepted, strconv.Itoa(accepted), trailerRejected, strconv.Itoa(rejected))
	if len(errs) > 0 {
		md.Append(trailerErrors, errs...)
	}
	return md
}

// asciiOnly replaces what a metadata value may not hold (anything but
// printable ASCII) with '?'.
func asciiOnly(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c > '~' {
			b[i] = '?'
		}
	}
	return string(b)
}

// grpcTags tags the self-metrics of the gRPC transport.
var grpcTags = []string{"transport:grpc"}

// Report sends the self-metrics of the gRPC transport gathered since the
// last Report, named as the Importer's (which are those of /import) and
// tagged transport:grpc:
//
//   - import.requests_total: calls merged (a call merged as it comes,
//     without a batch id, counts when it ends well);
//   - import.metrics_total: series merged (those of such a call as its
//     parts are merged);
//   - import.duplicate_total: calls answered without merging, their batch
//     id merged already;
//   - import.waited_total: calls that waited for a place, whether they
//     got one or were refused as busy;
//   - import.request_error_total (cause batch_id, in_progress, busy,
//     too_large, receive, rejected: no series accepted, shutdown, other):
//     calls refused;
//   - import.metric_error_total (cause scope, gauge, centroids,
//     non_finite, precision, protobuf: not a protobuf Metric, name, type,
//     tags, value, other): series rejected, in the calls that were
//     received whole;
//   - import.response_duration_ns (part request: receiving and decoding a
//     merged call; part merge), the mean over the merged calls.
func (s *GRPCServer) Report(stats statsd.ClientInterface) {
	s.requestErrs.Report(stats, "import.request_error_total", grpcTags...)
	s.metricErrs.Report(stats, "import.metric_error_total", grpcTags...)
	if n := s.duplicates.Swap(0); n > 0 {
		stats.Count("import.duplicate_total", int64(n), grpcTags, 1)
	}
	if n := s.waited.Swap(0); n > 0 {
		stats.Count("import.waited_total", int64(n), grpcTags, 1)
	}
	if n := s.metrics.Swap(0); n > 0 {
		stats.Count("import.metrics_total", int64(n), grpcTags, 1)
	}
	if n := s.requests.Swap(0); n > 0 {
		stats.Count("import.requests_total", int64(n), grpcTags, 1)
		stats.TimeInMilliseconds("import.response_duration_ns", float64(s.requestNanos.Swap(0))/float64(n), []string{"part:request", "transport:grpc"}, 1)
		stats.TimeInMilliseconds("import.response_duration_ns", float64(s.mergeNanos.Swap(0))/float64(n), []string{"part:merge", "transport:grpc"}, 1)
	}
}
