package main

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
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
	// transportGRPCv14 is gRPC as veneur v14 sends it: calls without a
	// batch id, which a global merges as they come.
	transportGRPCv14 = "grpc-v14"
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
	counters int                // increments of its lg.c.* global counters
	body     []byte             // POST /import: deflated JSON array
	msgs     []grpcwire.Message // SendMetricsV2: one Metric each
}

// buildFlushes renders variants different flushes of g (the same series,
// other values), which the simulated locals take in turn, each encoded
// whole for one global.
func buildFlushes(g globalWorkload, variants int) ([]localFlush, error) {
	fwds, err := buildForwarded(g, variants)
	if err != nil {
		return nil, err
	}
	out, err := encodeFlushes(fwds)
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", g.name, err)
	}
	return out, nil
}

// encodeFlushes encodes each flush of fwds whole, for one global.
func encodeFlushes(fwds [][]samplers.Forwarded) ([]localFlush, error) {
	out := make([]localFlush, len(fwds))
	for v, fwd := range fwds {
		var err error
		if out[v], err = encodeFlush(fwd); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// buildForwarded builds the series of variants different flushes of g
// (the same series, other values). Values come from a fixed seed: runs
// are repeatable.
func buildForwarded(g globalWorkload, variants int) ([][]samplers.Forwarded, error) {
	out := make([][]samplers.Forwarded, variants)
	for v := range out {
		rng := rand.New(rand.NewPCG(uint64(v)+1, 7))
		fwd := make([]samplers.Forwarded, 0, g.series())
		// Sorted, as a local's tags are: the ring routes by the key of
		// the sorted tags.
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
		out[v] = fwd
	}
	return out, nil
}

// splitByOwner splits the series of one flush as a local that shards over
// ring does (forward.Sharded): series i goes to part ring.Owner of its key,
// so part j holds, in flush order, the series of ring.Member(j).
func splitByOwner(fwd []samplers.Forwarded, ring *forward.Ring) [][]samplers.Forwarded {
	parts := make([][]samplers.Forwarded, ring.Len())
	if ring.Len() == 0 {
		return parts
	}
	var key []byte
	for i := range fwd {
		key = samplers.AppendForwardedKey(key[:0], &fwd[i])
		o := ring.Owner(key)
		parts[o] = append(parts[o], fwd[i])
	}
	return parts
}

// tierFlushes splits every variant in fwds over the globals whose forward
// URLs are urls (each listed once), by the ring of those URLs, and encodes
// each part: out[v][i] is variant v's part for urls[i], with no series
// when the global owns none of them.
func tierFlushes(fwds [][]samplers.Forwarded, urls []string) ([][]localFlush, error) {
	ring := forward.NewRing(urls)
	if ring.Len() != len(urls) {
		return nil, fmt.Errorf("the forward URLs %q are not distinct", urls)
	}
	out := make([][]localFlush, len(fwds))
	for v, fwd := range fwds {
		parts := splitByOwner(fwd, ring)
		out[v] = make([]localFlush, len(urls))
		for i, u := range urls {
			part := parts[ring.Index(u)]
			if len(part) == 0 {
				continue
			}
			f, err := encodeFlush(part)
			if err != nil {
				return nil, err
			}
			out[v][i] = f
		}
	}
	return out, nil
}

// encodeFlush encodes fwd as our forward clients send it: the JSON of
// forward.EncodeJSON, deflated, and the messages of forward.EncodeMetricpb.
// Its counters are the increments of the global counters the stand-in API
// adds up (lg.c.*).
func encodeFlush(fwd []samplers.Forwarded) (localFlush, error) {
	f := localFlush{series: len(fwd)}
	jms := make([]forward.JSONMetric, len(fwd))
	for i := range fwd {
		if fwd[i].Type == samplers.CounterMetric && strings.HasPrefix(fwd[i].Name, counterPrefix) {
			f.counters += int(math.Round(fwd[i].Counter))
		}
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

// dialer makes the senders of transport to 127.0.0.1:port.
func dialer(transport string, port int) func() (flushSender, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	switch transport {
	case transportGRPC:
		return func() (flushSender, error) { return newGRPCSender(addr) }
	case transportGRPCv14:
		return func() (flushSender, error) {
			s, err := newGRPCSender(addr)
			if s != nil {
				s.noBatchIDs = true
			}
			return s, err
		}
	}
	return func() (flushSender, error) { return newHTTPSender(addr), nil }
}

// grpcSender streams flushes with SendMetricsV2, the series as bytes
// encoded once (grpcwire).
type grpcSender struct {
	conn   *grpc.ClientConn
	client forwardrpc.ForwardClient
	// noBatchIDs sends calls without a batch id, as v14 does.
	noBatchIDs bool
}

func newGRPCSender(addr string) (*grpcSender, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &grpcSender{conn: conn, client: forwardrpc.NewForwardClient(conn)}, nil
}

func (s *grpcSender) send(ctx context.Context, f *localFlush, id string) (int, error) {
	if !s.noBatchIDs {
		ctx = metadata.AppendToOutgoingContext(ctx, forward.BatchMetadataKey, id)
	}
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
// With several globals a local's flush is one request per global, and
// busy, partial and errors count requests.
type globalSendStats struct {
	flushes    int64 // local flushes every request of which was answered
	series     int64 // series accepted
	counters   int64 // counter increments in the requests accepted whole
	partial    int64 // requests of which some series were refused
	busy       int64 // requests refused as busy (the next flush goes on)
	errors     int64
	firstError error
	elapsed    time.Duration
	// perGlobal is the series each global accepted, in the order of the
	// dialers.
	perGlobal []int64
}

// runLocals has locals simulated locals send flushes (taking the variants
// in turn) for d, each as fast as its answers come. flushes[v][i] is
// variant v's request to global i, sent over a connection of the local's
// own made by dials[i]; a local sends a flush's requests at once, one per
// global with series, and waits for their answers before the next flush.
// A busy answer or an error makes that local wait 10ms before its next
// flush.
func runLocals(ctx context.Context, locals int, flushes [][]localFlush, dials []func() (flushSender, error), d time.Duration) (globalSendStats, error) {
	for v, parts := range flushes {
		if len(parts) != len(dials) {
			return globalSendStats{}, fmt.Errorf("flush %d has %d parts for %d globals", v, len(parts), len(dials))
		}
	}
	senders := make([][]flushSender, locals)
	closeAll := func() {
		for _, ss := range senders {
			for _, s := range ss {
				s.close()
			}
		}
	}
	for l := range senders {
		for _, dial := range dials {
			s, err := dial()
			if err != nil {
				closeAll()
				return globalSendStats{}, err
			}
			senders[l] = append(senders[l], s)
		}
	}
	defer closeAll()
	var (
		st                         globalSendStats
		flushN, seriesN, countersN atomic.Int64
		partialN, busyN, errorsN   atomic.Int64
		perGlobal                  = make([]atomic.Int64, len(dials))
		errOnce                    sync.Once
		wg                         sync.WaitGroup
	)
	// sendPart sends one request and reports whether it was answered.
	sendPart := func(s flushSender, f *localFlush, id string, global int) bool {
		n, err := s.send(ctx, f, id)
		switch {
		case errors.Is(err, errBusy):
			busyN.Add(1)
			return false
		case err != nil:
			errorsN.Add(1)
			errOnce.Do(func() { st.firstError = err })
			return false
		}
		seriesN.Add(int64(n))
		perGlobal[global].Add(int64(n))
		if n == f.series {
			countersN.Add(int64(f.counters))
		} else {
			partialN.Add(1)
		}
		return true
	}
	start := time.Now()
	deadline := start.Add(d)
	for l, ss := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answered := make([]bool, len(ss))
			for seq := 0; time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
				parts := flushes[(l+seq)%len(flushes)]
				id := fmt.Sprintf("lg-%d-%d", l, seq)
				var pwg sync.WaitGroup
				for i := range parts {
					answered[i] = true
					if parts[i].series == 0 {
						continue
					}
					if len(parts) == 1 {
						answered[i] = sendPart(ss[i], &parts[i], id, i)
						continue
					}
					pwg.Add(1)
					go func() {
						defer pwg.Done()
						answered[i] = sendPart(ss[i], &parts[i], id, i)
					}()
				}
				pwg.Wait()
				if slices.Contains(answered, false) {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				flushN.Add(1)
			}
		}()
	}
	wg.Wait()
	st.elapsed = time.Since(start)
	st.flushes, st.series, st.counters = flushN.Load(), seriesN.Load(), countersN.Load()
	st.partial, st.busy, st.errors = partialN.Load(), busyN.Load(), errorsN.Load()
	st.perGlobal = make([]int64, len(perGlobal))
	for i := range perGlobal {
		st.perGlobal[i] = perGlobal[i].Load()
	}
	return st, ctx.Err()
}

// singleFlushes makes flushes, each sent whole to one global, the input
// of runLocals.
func singleFlushes(flushes []localFlush) [][]localFlush {
	out := make([][]localFlush, len(flushes))
	for v := range flushes {
		out[v] = flushes[v : v+1]
	}
	return out
}

// globalResult is one trial of a global workload: one transport, one
// server, and for veneur a tier of one or more globals.
type globalResult struct {
	workload, transport, server string
	// globals is the number of globals of the tier (veneur; 0 for a
	// bare receiver, which is always one).
	globals            int
	sent               globalSendStats
	cpuSeconds         float64 // the servers' CPU from the start of sending to their exit, summed
	wall               float64 // seconds from the start of sending to the last server's exit
	peakRSS            uint64  // the largest peak RSS of the servers
	totalRSS           uint64  // the servers' peak RSS, summed
	otherSrv, otherDrv float64
	// countersPublished is the counter increments the stand-in API
	// received from the globals (veneur only), -1 when not checked.
	countersPublished int64
	err               error
	notes             []string
}

// tier reports whether r is a trial of veneur with more than one global.
func (r globalResult) tier() bool { return r.globals > 1 }

// perCPUSecond is the series taken per CPU-second of the servers: all the
// globals' series over all their CPU.
func (r globalResult) perCPUSecond() float64 {
	if r.cpuSeconds <= 0 {
		return 0
	}
	return float64(r.sent.series) / r.cpuSeconds
}

// shareMaxMean is the largest series count a global accepted over the
// mean of the globals: 1 when the ring spreads the series evenly, 0 when
// nothing was accepted.
func (r globalResult) shareMaxMean() float64 {
	if len(r.sent.perGlobal) == 0 || r.sent.series <= 0 {
		return 0
	}
	mean := float64(r.sent.series) / float64(len(r.sent.perGlobal))
	return float64(slices.Max(r.sent.perGlobal)) / mean
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
	server := r.server
	if r.tier() {
		server = fmt.Sprintf("%s x%d", r.server, r.globals)
	}
	s := fmt.Sprintf("global %s %s %s: %s series in %s flushes, %.2f CPU s, %s series per CPU-s, peak RSS %.1f MiB, counters %s",
		r.workload, r.transport, server, groupDigits(float64(r.sent.series)), groupDigits(float64(r.sent.flushes)),
		r.cpuSeconds, groupDigits(r.perCPUSecond()), float64(r.peakRSS)/(1<<20), r.countersExact())
	if r.tier() {
		s += fmt.Sprintf(" (series per global %v, max/mean %.3f; peak RSS in total %.1f MiB)", r.sent.perGlobal, r.shareMaxMean(), float64(r.totalRSS)/(1<<20))
	}
	if r.err != nil {
		s += fmt.Sprintf(", ERROR: %v", r.err)
	}
	return s
}

// globalNotes are the anomalies of a trial, for the table.
func (r globalResult) globalNotes() []string {
	notes := append([]string(nil), r.notes...)
	what := "flushes"
	if r.tier() {
		what = "requests"
	}
	if r.sent.busy > 0 {
		notes = append(notes, fmt.Sprintf("%d %s answered busy", r.sent.busy, what))
	}
	if r.sent.partial > 0 {
		notes = append(notes, fmt.Sprintf("%d %s partly refused", r.sent.partial, what))
	}
	if r.sent.errors > 0 {
		notes = append(notes, fmt.Sprintf("%d %s failed, the first: %v", r.sent.errors, what, r.sent.firstError))
	}
	return notes
}

// isGRPC reports whether transport is one of the gRPC ones.
func isGRPC(transport string) bool {
	return transport == transportGRPC || transport == transportGRPCv14
}
