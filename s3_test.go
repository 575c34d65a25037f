package veneur

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// With aws_s3_bucket set, every flush is also written to S3 as TSV. The S3
// here is an S3-protocol server in the test process, reached the way any
// S3-compatible store is: AWS_ENDPOINT_URL_S3.
func TestServerWritesToS3(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("flushes"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	defer srv.Close()
	t.Setenv("AWS_ENDPOINT_URL_S3", srv.URL)
	s, _ := startServer(t, testConfig(t, "aws_s3_bucket: flushes\naws_region: us-east-1\naws_access_key_id: AKIDTEST\naws_secret_access_key: secret\n"))
	sendUDP(t, s.UDPAddr(), "temp:21.5|g|#room:a")
	waitProcessed(t, s, 1)
	s.Flush(context.Background(), time.Unix(1700000000, 0))
	shutdown(t, s)

	obj, err := backend.GetObject("flushes", "2023/11/14/box/1700000000.tsv.gz", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Contents.Close()
	gz, _ := io.ReadAll(obj.Contents)
	zr, err := gzip.NewReader(bytes.NewReader(gz))
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
