package main

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/axiomhq/hyperloglog"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/forward/forwardrpc"
	"github.com/veneur/veneur/internal/grpcwire"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// The global workloads: simulated local instances forward their flushes to
// a global veneur, over HTTP (POST /import, our JSON, deflate) and over
// gRPC (forwardrpc.Forward/SendMetricsV2, one message per series), as fast
// as the global answers. They measure what the global's import costs:
// series merged per CPU-second of the global, and its peak RSS. A bare
// receiver of each transport (this binary with -mode global-bare) reads
// the same traffic and throws it away, the least any server of that
// transport could spend on it.

// Transport names as they appear in flags and tables.
const (
	transportHTTP = "http"
	transportGRPC = "grpc"
)

// globalWorkload is one shape of local flush.
type globalWorkload struct {
	name       string
	desc       string
	histograms int // histogram and timer series per flush (half each)
	samples    int // samples in each digest
	sets       int // set series per flush
	members    int // members each set saw
	counters   int // global counter series per flush, each of value 1
}

func globalWorkloadByName(name string) (globalWorkload, bool) {
	switch name {
	case "g":
		return globalWorkload{
			name: "g", desc: "1,000 histograms and timers of 8 samples, 200 sets of 10 members, 300 global counters",
			histograms: 1000, samples: 8, sets: 200, members: 10, counters: 300,
		}, true
	case "d":
		return globalWorkload{
			name: "d", desc: "1,500 histograms and timers of 5 samples (small digests)",
			histograms: 1500, samples: 5,
		}, true
	}
	return globalWorkload{}, false
}

// isGlobalWorkload reports whether name is a global workload.
func isGlobalWorkload(name string) bool {
	_, ok := globalWorkloadByName(name)
	return ok
}

// series is how many series one local flush holds.
func (g globalWorkload) series() int { return g.histograms + g.sets + g.counters }

// localFlush is one local's forward of one interval, in both wire forms.
type localFlush struct {
	series   int
	counters int                // global counters, each of value 1
	body     []byte             // POST /import: deflated JSON array
	msgs     []grpcwire.Message // SendMetricsV2: one Metric each
}

// buildFlushes renders variants different flushes of g (the same series,
// other values), which the simulated locals take in turn. Values come from
// a fixed seed: runs are repeatable.
func buildFlushes(g globalWorkload, variants int) ([]localFlush, error) {
	out := make([]localFlush, variants)
	for v := range out {
		rng := rand.New(rand.NewPCG(uint64(v)+1, 7))
		fwd := make([]samplers.Forwarded, 0, g.series())
		tags := func(i int) []string { return []string{"env:load", "shard:" + strconv.Itoa(i%16)} }
		for i := range g.histograms {
			d := tdigest.New()
			for range g.samples {
				if err := d.Add(1+500*rng.Float64()*rng.Float64(), 1); err != nil {
					return nil, err
				}
			}
			f := samplers.Forwarded{Type: samplers.HistogramMetric, Scope: samplers.MixedScope, Name: "lg.h." + strconv.Itoa(i), Tags: tags(i), Digest: d}
			if i%2 == 1 {
				f.Type, f.Name = samplers.TimerMetric, "lg.t."+strconv.Itoa(i)
			}
			fwd = append(fwd, f)
		}
		for i := range g.sets {
			s := hyperloglog.New14()
			for range g.members {
				s.Insert([]byte("u" + strconv.Itoa(rng.IntN(1000))))
			}
			fwd = append(fwd, samplers.Forwarded{Type: samplers.SetMetric, Scope: samplers.MixedScope, Name: "lg.s." + strconv.Itoa(i), Tags: tags(i), Set: s})
		}
		for i := range g.counters {
			fwd = append(fwd, samplers.Forwarded{Type: samplers.CounterMetric, Scope: samplers.GlobalOnly, Name: counterPrefix + strconv.Itoa(i), Tags: tags(i), Counter: 1})
		}
		f, err := encodeFlush(fwd)
		if err != nil {
			return nil, fmt.Errorf("workload %s: %w", g.name, err)
		}
		f.counters = g.counters
		out[v] = f
	}
	return out, nil
}

// encodeFlush encodes fwd as our forward clients send it: the JSON of
// forward.EncodeJSON, deflated, and the messages of forward.EncodeMetricpb.
func encodeFlush(fwd []samplers.Forwarded) (localFlush, error) {
	f := localFlush{series: len(fwd)}
	jms := make([]forward.JSONMetric, len(fwd))
	for i := range fwd {
		jm, err := forward.EncodeJSON(&fwd[i])
		if err != nil {
			return f, err
		}
		jms[i] = jm
		m, err := forward.EncodeMetricpb(&fwd[i])
		if err != nil {
			return f, err
		}
		b, err := proto.Marshal(m)
		if err != nil {
			return f, err
		}
		f.msgs = append(f.msgs, grpcwire.Message{B: b})
	}
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(jms); err != nil {
		return f, err
	}
	if err := zw.Close(); err != nil {
		return f, err
	}
	f.body = buf.Bytes()
	return f, nil
}

// errBusy is a global's refusal to take a flush now (503, or Unavailable):
// the sender waits a little and sends another.
var errBusy = errors.New("busy")

// flushSender sends flushes over one connection, as one local does.
type flushSender interface {
	// send sends f with batch id id and returns how many series the
	// receiver accepted.
	send(ctx context.Context, f *localFlush, id string) (int, error)
	close()
}

// httpSender POSTs flushes to /import.
type httpSender struct {
	client *http.Client
	url    string
}

func newHTTPSender(addr string) *httpSender {
	// One connection per local, as each local has its own.
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
	return &httpSender{client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, url: "http://" + addr + "/import"}
}

func (s *httpSender) send(ctx context.Context, f *localFlush, id string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(f.body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "deflate")
	req.Header.Set(forward.BatchHeader, id)
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, err
	}
	switch resp.StatusCode {
	case http.StatusAccepted, http.StatusOK:
	case http.StatusServiceUnavailable:
		return 0, errBusy
	default:
		return 0, fmt.Errorf("POST /import: %s: %s", resp.Status, truncate(body, 200))
	}
	var answer struct {
		Accepted *int `json:"accepted"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return 0, fmt.Errorf("POST /import answer %q: %w", truncate(body, 200), err)
	}
	if answer.Accepted == nil {
		return f.series, nil // a bare receiver counts nothing
	}
	return *answer.Accepted, nil
}

func (s *httpSender) close() { s.client.CloseIdleConnections() }

// grpcSender streams flushes with SendMetricsV2, the series as bytes
// encoded once (grpcwire).
type grpcSender struct {
	conn   *grpc.ClientConn
	client forwardrpc.ForwardClient
}

func newGRPCSender(addr string) (*grpcSender, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &grpcSender{conn: conn, client: forwardrpc.NewForwardClient(conn)}, nil
}

func (s *grpcSender) send(ctx context.Context, f *localFlush, id string) (int, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, forward.BatchMetadataKey, id)
	stream, err := s.client.SendMetricsV2(ctx, grpc.ForceCodecV2(grpcwire.Codec{}))
	if err != nil {
		return 0, err
	}
	for i := range f.msgs {
		if err := stream.SendMsg(&f.msgs[i]); err != nil {
			break // the receiver ended the call; CloseAndRecv says why
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		if status.Code(err) == codes.Unavailable {
			return 0, errBusy
		}
		return 0, err
	}
	if v := stream.Trailer().Get("x-veneur-accepted"); len(v) == 1 {
		return strconv.Atoi(v[0])
	}
	return f.series, nil // a bare receiver counts nothing
}

func (s *grpcSender) close() { s.conn.Close() }

// globalSendStats is what the simulated locals sent and had accepted.
type globalSendStats struct {
	flushes    int64 // flushes accepted
	series     int64 // series accepted
	counters   int64 // counter increments in the flushes accepted whole
	partial    int64 // flushes of which some series were refused
	busy       int64 // flushes refused as busy, and sent again later
	errors     int64
	firstError error
	elapsed    time.Duration
}

// runLocals has locals simulated locals send flushes (taking the variants
// in turn) over senders made by dial, each as fast as its answers come,
// for d. A busy answer makes that local wait 10ms.
func runLocals(ctx context.Context, locals int, flushes []localFlush, dial func() (flushSender, error), d time.Duration) (globalSendStats, error) {
	senders := make([]flushSender, locals)
	for i := range senders {
		s, err := dial()
		if err != nil {
			for _, s := range senders[:i] {
				s.close()
			}
			return globalSendStats{}, err
		}
		senders[i] = s
	}
	defer func() {
		for _, s := range senders {
			s.close()
		}
	}()
	var (
		st                         globalSendStats
		flushN, seriesN, countersN atomic.Int64
		partialN, busyN, errorsN   atomic.Int64
		errOnce                    sync.Once
		wg                         sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for l, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
				f := &flushes[(l+seq)%len(flushes)]
				id := fmt.Sprintf("lg-%d-%d", l, seq)
				n, err := s.send(ctx, f, id)
				switch {
				case errors.Is(err, errBusy):
					busyN.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				case err != nil:
					errorsN.Add(1)
					errOnce.Do(func() { st.firstError = err })
					time.Sleep(10 * time.Millisecond)
					continue
				}
				flushN.Add(1)
				seriesN.Add(int64(n))
				if n == f.series {
					countersN.Add(int64(f.counters))
				} else {
					partialN.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	st.elapsed = time.Since(start)
	st.flushes, st.series, st.counters = flushN.Load(), seriesN.Load(), countersN.Load()
	st.partial, st.busy, st.errors = partialN.Load(), busyN.Load(), errorsN.Load()
	return st, ctx.Err()
}

// globalResult is one trial of a global workload: one transport, one
// server.
type globalResult struct {
	workload, transport, server string
	sent                        globalSendStats
	cpuSeconds                  float64 // the server's CPU from the start of sending to its exit
	wall                        float64 // seconds from the start of sending to the server's exit
	peakRSS                     uint64
	otherSrv, otherDrv          float64
	// countersPublished is the counter increments the stand-in API
	// received from the global (veneur only), -1 when not checked.
	countersPublished int64
	err               error
	notes             []string
}

// perCPUSecond is the series taken per CPU-second of the server.
func (r globalResult) perCPUSecond() float64 {
	if r.cpuSeconds <= 0 {
		return 0
	}
	return float64(r.sent.series) / r.cpuSeconds
}

// busyShare is the share of its CPU the server used while it ran.
func (r globalResult) busyShare() float64 {
	if r.wall <= 0 {
		return 0
	}
	return r.cpuSeconds / r.wall
}

// countersExact reports whether the global published exactly the counter
// increments it accepted; "n/a" when not checked.
func (r globalResult) countersExact() string {
	switch {
	case r.countersPublished < 0:
		return "n/a"
	case r.countersPublished == r.sent.counters:
		return "exact"
	}
	return fmt.Sprintf("%d of %d", r.countersPublished, r.sent.counters)
}

func (r globalResult) summary() string {
	s := fmt.Sprintf("global %s %s %s: %s series in %s flushes, %.2f CPU s, %s series per CPU-s, peak RSS %.1f MiB, counters %s",
		r.workload, r.transport, r.server, groupDigits(float64(r.sent.series)), groupDigits(float64(r.sent.flushes)),
		r.cpuSeconds, groupDigits(r.perCPUSecond()), float64(r.peakRSS)/(1<<20), r.countersExact())
	if r.err != nil {
		s += fmt.Sprintf(", ERROR: %v", r.err)
	}
	return s
}

// globalNotes are the anomalies of a trial, for the table.
func (r globalResult) globalNotes() []string {
	notes := append([]string(nil), r.notes...)
	if r.sent.busy > 0 {
		notes = append(notes, fmt.Sprintf("%d flushes answered busy", r.sent.busy))
	}
	if r.sent.partial > 0 {
		notes = append(notes, fmt.Sprintf("%d flushes partly refused", r.sent.partial))
	}
	if r.sent.errors > 0 {
		notes = append(notes, fmt.Sprintf("%d flushes failed, the first: %v", r.sent.errors, r.sent.firstError))
	}
	return notes
}
