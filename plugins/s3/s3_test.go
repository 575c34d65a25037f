package s3

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/veneur/veneur/samplers"
)

// fakeS3 is an S3-protocol server (gofakes3, in memory) in the test
// process. It also records the Authorization header of every request, to
// check how the plugin signs.
type fakeS3 struct {
	url     string
	backend *s3mem.Backend
	mu      sync.Mutex
	auth    []string
}

func newFakeS3(t *testing.T, buckets ...string) *fakeS3 {
	t.Helper()
	f := &fakeS3{backend: s3mem.New()}
	for _, b := range buckets {
		if err := f.backend.CreateBucket(b); err != nil {
			t.Fatal(err)
		}
	}
	h := gofakes3.New(f.backend).Server()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		f.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *fakeS3) object(t *testing.T, bucket, key string) []byte {
	t.Helper()
	obj, err := f.backend.GetObject(bucket, key, nil)
	if err != nil {
		t.Fatalf("s3://%s/%s: %v", bucket, key, err)
	}
	defer obj.Contents.Close()
	b, err := io.ReadAll(obj.Contents)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func metric(name, suffix string, kind samplers.Kind, v float64, ts int64, host, device string, tags ...string) samplers.InterMetric {
	return samplers.InterMetric{
		Series: &samplers.Series{Name: name, Tags: tags, Host: host, Device: device},
		Suffix: suffix, Value: v, Timestamp: ts, Kind: kind,
	}
}

func TestFlushWritesTSV(t *testing.T) {
	f := newFakeS3(t, "metrics")
	p, err := New(context.Background(), Config{
		Bucket: "metrics", Region: "eu-west-1", AccessKeyID: "AKIDTEST", SecretAccessKey: "secret",
		Hostname: "box", Tags: []string{"env:prod"}, Interval: 10 * time.Second, Endpoint: f.url,
	})
	if err != nil {
		t.Fatal(err)
	}
	const ts = 1700000000 // 2023-11-14T22:13:20Z
	err = p.Flush(context.Background(), []samplers.InterMetric{
		metric("hits", "", samplers.RateKind, 0.5, ts, "", "", "code:200"),
		metric("lat", ".99percentile", samplers.GaugeKind, 12.25, ts, "web1", "sda"),
		metric("odd\tname", "", samplers.GaugeKind, 1e21, ts, "", "", `quote"d`),
	})
	if err != nil {
		t.Fatal(err)
	}
	key := "2023/11/14/box/1700000000.tsv.gz"
	zr, err := gzip.NewReader(bytes.NewReader(f.object(t, "metrics", key)))
	if err != nil {
		t.Fatal(err)
	}
	r := csv.NewReader(zr)
	r.Comma = '\t'
	rows, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		Header,
		{"hits", "code:200,env:prod", "rate", "box", "", "10", "1700000000", "0.5"},
		{"lat.99percentile", "env:prod", "gauge", "web1", "sda", "10", "1700000000", "12.25"},
		{"odd\tname", `quote"d,env:prod`, "gauge", "box", "", "10", "1700000000", "1e+21"},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %q", len(rows), len(want), rows)
	}
	for i := range want {
		if strings.Join(rows[i], "|") != strings.Join(want[i], "|") {
			t.Errorf("row %d = %q, want %q", i, rows[i], want[i])
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.auth) == 0 || !strings.HasPrefix(f.auth[0], "AWS4-HMAC-SHA256 Credential=AKIDTEST/") || !strings.Contains(f.auth[0], "/eu-west-1/s3/aws4_request") {
		t.Errorf("requests signed as %q, want SigV4 with the configured key and region", f.auth)
	}
}

func TestFlushErrorNamesObject(t *testing.T) {
	f := newFakeS3(t) // no bucket
	p, err := New(context.Background(), Config{
		Bucket: "missing", Region: "us-east-1", AccessKeyID: "AKIDTEST", SecretAccessKey: "secret",
		Hostname: "box", Endpoint: f.url,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Flush(context.Background(), []samplers.InterMetric{metric("x", "", samplers.GaugeKind, 1, 1700000000, "", "")})
	if err == nil || !strings.Contains(err.Error(), "s3://missing/2023/11/14/box/1700000000.tsv.gz") || !strings.Contains(err.Error(), "NoSuchBucket") {
		t.Errorf("err = %v, want the object and NoSuchBucket", err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	for _, c := range []Config{
		{Region: "us-east-1"},
		{Bucket: "b"},
		{Bucket: "b", Region: "us-east-1", AccessKeyID: "only-the-id"},
	} {
		if _, err := New(context.Background(), c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}
