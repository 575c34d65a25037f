package veneur

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/axiomhq/hyperloglog"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/forward"
	"github.com/veneur/veneur/samplers"
	"github.com/veneur/veneur/tdigest"
)

// BenchmarkGlobalImport is a global instance's whole /import path, for
// sizing one (docs/operations.md, Sizing a global): a running server
// takes POST /import over loopback HTTP, each request a local's forward
// of 1,000 series (deflate, a new batch id each) — 60% global counters,
// 30% timers of 200 samples, 10% sets of 50 members, three tags each —
// and merges them into its workers. The same 1,000 series arrive in
// every request, as from many locals; the flush at the end, which waits
// for the workers, is timed too. It reports series merged per second and
// the compressed bytes a series takes in the body.
func BenchmarkGlobalImport(b *testing.B) {
	cfg, err := ParseConfig([]byte("udp_address: 127.0.0.1:0\nhttp_address: 127.0.0.1:0\nhostname: global\ninterval: 1h\n"))
	if err != nil {
		b.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := NewFromConfig(cfg, Options{Log: log, Stdout: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			b.Error(err)
		}
	}()
	body, n := localForward(b, 1000)
	url := "http://" + s.HTTPAddr().String() + "/import"
	client := &http.Client{}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Encoding", "deflate")
		req.Header.Set(forward.BatchHeader, "bench-"+strconv.Itoa(i))
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b.Fatalf("/import: %s", resp.Status)
		}
	}
	s.Flush(context.Background(), time.Now())
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
	b.ReportMetric(float64(len(body))/float64(n), "body-B/series")
}

// localForward is the deflated /import body of n series as a local
// forwards them, and n.
func localForward(b *testing.B, n int) ([]byte, int) {
	var metrics []forward.JSONMetric
	seed := uint64(7)
	rnd := func() float64 { // a fixed sequence, xorshift
		seed ^= seed << 13
		seed ^= seed >> 7
		seed ^= seed << 17
		return float64(seed>>11) / (1 << 53)
	}
	for i := range n {
		name := "service.metric." + strconv.Itoa(i)
		f := samplers.Forwarded{Name: name, Tags: []string{"env:prod", "region:eu-west-1", "shard:" + strconv.Itoa(i%16)}}
		switch {
		case i%10 < 6:
			f.Type, f.Scope, f.Counter = samplers.CounterMetric, samplers.GlobalOnly, float64(i)
		case i%10 < 9:
			d := tdigest.New()
			for range 200 {
				if err := d.Add(20*rnd()*rnd(), 1); err != nil {
					b.Fatal(err)
				}
			}
			f.Type, f.Digest = samplers.TimerMetric, d
		default:
			sk := hyperloglog.New14()
			for j := range 50 {
				sk.Insert([]byte(fmt.Sprintf("%s-member-%d", name, j)))
			}
			f.Type, f.Set = samplers.SetMetric, sk
		}
		m, err := forward.EncodeJSON(&f)
		if err != nil {
			b.Fatal(err)
		}
		metrics = append(metrics, m)
	}
	raw, err := json.Marshal(metrics)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	zw.Write(raw)
	zw.Close()
	return buf.Bytes(), n
}
