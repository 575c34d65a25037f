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

	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// fakeS3 is an S3-protocol server (gofakes3, in memory) in the test
// process. It also records the Authorization header of every request, to
// check how the sink signs.
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
		Suffix: samplers.SuffixOf(suffix), Value: v, Timestamp: ts, Kind: kind,
	}
}

func TestFlushWritesTSV(t *testing.T) {
	f := newFakeS3(t, "metrics")
	p, err := New(context.Background(), Config{
		Bucket: "metrics", Region: "eu-west-1", AccessKeyID: "AKIDTEST", SecretAccessKey: "secret", Endpoint: f.url,
	}, plugins.Env{Common: plugins.Common{Hostname: "box", Tags: []string{"env:prod"}, Interval: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "s3" {
		t.Errorf("Name() = %q", p.Name())
	}
	const ts = 1700000000 // 2023-11-14T22:13:20Z
	err = p.Flush(context.Background(), &plugins.Batch{Metrics: []samplers.InterMetric{
		metric("hits", "", samplers.RateKind, 0.5, ts, "", "", "code:200"),
		metric("lat", ".99percentile", samplers.GaugeKind, 12.25, ts, "web1", "sda"),
		metric("odd\tname", "", samplers.GaugeKind, 1e21, ts, "", "", `quote"d`),
	}})
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
		Header(),
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
		Bucket: "missing", Region: "us-east-1", AccessKeyID: "AKIDTEST", SecretAccessKey: "secret", Endpoint: f.url,
	}, plugins.Env{Common: plugins.Common{Hostname: "box"}})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Flush(context.Background(), &plugins.Batch{Metrics: []samplers.InterMetric{metric("x", "", samplers.GaugeKind, 1, 1700000000, "", "")}})
	if err == nil || !strings.Contains(err.Error(), "s3://missing/2023/11/14/box/1700000000.tsv.gz") || !strings.Contains(err.Error(), "NoSuchBucket") {
		t.Errorf("err = %v, want the object and NoSuchBucket", err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	const (
		bucket = "aws_s3_bucket is empty; name the bucket to write to"
		region = "aws_s3_bucket is set but aws_region is empty; give the bucket's region, e.g. us-west-2"
		keys   = "aws_access_key_id and aws_secret_access_key are set together or not at all (neither uses the AWS SDK's default credentials)"
	)
	for _, c := range []struct {
		cfg  Config
		want []string // nil means accepted
	}{
		{Config{Bucket: "b", Region: "us-east-1"}, nil},
		{Config{Bucket: "b", Region: "us-east-1", AccessKeyID: "id", SecretAccessKey: "secret"}, nil},
		{Config{Region: "us-east-1"}, []string{bucket}},
		{Config{Bucket: "b"}, []string{region}},
		{Config{Bucket: "b", Region: "us-east-1", AccessKeyID: "only-the-id"}, []string{keys}},
		{Config{Bucket: "b", Region: "us-east-1", SecretAccessKey: "only-the-secret"}, []string{keys}},
		// Every problem at once.
		{Config{AccessKeyID: "id"}, []string{bucket, region, keys}},
	} {
		_, err := New(context.Background(), c.cfg, plugins.Env{})
		if c.want == nil {
			if err != nil {
				t.Errorf("New(%+v) = %v, want it accepted", c.cfg, err)
			}
			continue
		}
		if err == nil || err.Error() != strings.Join(c.want, "\n") {
			t.Errorf("New(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
}

// With AWS_ENDPOINT_URL_S3 set, as for any S3-compatible store, the object
// goes there, named by host and flush time, and holds the exact TSV.
func TestFlushToEndpointFromEnvironment(t *testing.T) {
	f := newFakeS3(t, "flushes")
	t.Setenv("AWS_ENDPOINT_URL_S3", f.url)
	p, err := New(context.Background(), Config{
		Bucket: "flushes", Region: "us-east-1", AccessKeyID: "AKIDTEST", SecretAccessKey: "secret",
	}, plugins.Env{Common: plugins.Common{Hostname: "box", Interval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Flush(context.Background(), &plugins.Batch{Metrics: []samplers.InterMetric{
		metric("temp", "", samplers.GaugeKind, 21.5, 1700000000, "", "", "room:a"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(f.object(t, "flushes", "2023/11/14/box/1700000000.tsv.gz")))
	if err != nil {
		t.Fatal(err)
	}
	tsv, _ := io.ReadAll(zr)
	want := "name\ttags\ttype\thost\tdevice\tinterval\ttimestamp\tvalue\ntemp\troom:a\tgauge\tbox\t\t3600\t1700000000\t21.5\n"
	if string(tsv) != want {
		t.Errorf("object:\n%q\nwant\n%q", tsv, want)
	}
	if strings.Contains(string(tsv), "AKIDTEST") {
		t.Error("the key leaked into the object")
	}
}

// A batch without metrics writes no object.
func TestFlushNothing(t *testing.T) {
	f := newFakeS3(t, "flushes")
	p, err := New(context.Background(), Config{
		Bucket: "flushes", Region: "us-east-1", AccessKeyID: "AKIDTEST", SecretAccessKey: "secret", Endpoint: f.url,
	}, plugins.Env{Common: plugins.Common{Hostname: "box"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(context.Background(), &plugins.Batch{Events: []samplers.Event{{Title: "e"}}}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.auth) != 0 {
		t.Errorf("%d requests for a batch without metrics", len(f.auth))
	}
}
