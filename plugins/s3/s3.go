// Package s3 publishes the metrics of every flush to Amazon S3 (or any
// S3-compatible store) as one gzip-compressed TSV object (PutObject,
// Content-Type application/gzip).
//
// The object key is YYYY/MM/DD/HOSTNAME/UNIXTIME.tsv.gz (UTC date and time
// of the flush). Each line is one flushed value with the tab-separated
// columns
//
//	name  tags  type  host  device  interval  timestamp  value
//
// where name includes the aggregate suffix (latency.99percentile), tags are
// the metric's tags and then the configured ones, comma-separated, type is
// rate or gauge, host is the series' host or the configured hostname,
// interval is the flush interval in seconds, and timestamp is unix
// seconds. The first line holds these column names. Fields with a tab, a
// newline or a double quote are quoted as in CSV.
package s3

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

// Header names the columns, as the first line of every object.
func Header() []string {
	return []string{"name", "tags", "type", "host", "device", "interval", "timestamp", "value"}
}

// Config sets up a Sink. The hostname, the configured tags and the
// interval come from plugins.Env.
type Config struct {
	// Bucket receives the objects (aws_s3_bucket).
	Bucket string
	// Region is the bucket's region (aws_region).
	Region string
	// AccessKeyID and SecretAccessKey (aws_access_key_id,
	// aws_secret_access_key) sign the requests; when both are empty the
	// SDK's default chain is used (environment, shared files, instance
	// role).
	AccessKeyID, SecretAccessKey string
	// Endpoint, when set, replaces AWS's (an S3-compatible store); the
	// bucket is then addressed by path.
	Endpoint string
	// Timeout bounds each request; 0 means none.
	Timeout time.Duration
}

// Sink writes to one bucket.
type Sink struct {
	bucket   string
	hostname string
	tags     []string
	client   *s3.Client
	secs     string
}

var _ plugins.Sink = (*Sink)(nil)

// New returns a Sink for cfg, or an error naming each config key at fault
// and its fix. It loads the SDK's configuration (the environment and
// shared files: with no static keys, its credential chain;
// AWS_ENDPOINT_URL_S3 for an S3-compatible store) but makes no request.
func New(ctx context.Context, cfg Config, env plugins.Env) (*Sink, error) {
	var errs []error
	if cfg.Bucket == "" {
		errs = append(errs, errors.New("aws_s3_bucket is empty; name the bucket to write to"))
	}
	if cfg.Region == "" {
		errs = append(errs, errors.New("aws_s3_bucket is set but aws_region is empty; give the bucket's region, e.g. us-west-2"))
	}
	if (cfg.AccessKeyID == "") != (cfg.SecretAccessKey == "") {
		errs = append(errs, errors.New("aws_access_key_id and aws_secret_access_key are set together or not at all (neither uses the AWS SDK's default credentials)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	load := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(cfg.Region)}
	if cfg.AccessKeyID != "" {
		load = append(load, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	if cfg.Timeout > 0 {
		load = append(load, awsconfig.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(cfg.Timeout)))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("loading the AWS configuration: %w", err)
	}
	client := s3.NewFromConfig(ac, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		// Another endpoint (Endpoint, or AWS_ENDPOINT_URL_S3 in the
		// environment) is an S3-compatible store: address buckets by
		// path, which needs no DNS name per bucket.
		if o.BaseEndpoint != nil {
			o.UsePathStyle = true
		}
	})
	return &Sink{
		bucket:   cfg.Bucket,
		hostname: env.Hostname,
		tags:     env.Tags,
		client:   client,
		secs:     strconv.FormatInt(env.IntervalSeconds(), 10),
	}, nil
}

// Name tags the sink's self-metrics.
func (p *Sink) Name() string { return "s3" }

// Key is the object key of a flush at t by hostname.
func Key(hostname string, t time.Time) string {
	t = t.UTC()
	return fmt.Sprintf("%04d/%02d/%02d/%s/%d.tsv.gz", t.Year(), t.Month(), t.Day(), hostname, t.Unix())
}

// Flush writes the batch's metrics as one object; with none it writes
// nothing.
func (p *Sink) Flush(ctx context.Context, b *plugins.Batch) error {
	metrics := b.Metrics
	if len(metrics) == 0 {
		return nil
	}
	body, err := p.encode(metrics)
	if err != nil {
		return err
	}
	key := Key(p.hostname, time.Unix(metrics[0].Timestamp, 0))
	_, err = p.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(p.bucket),
		Key:           aws.String(key),
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		ContentType:   aws.String("application/gzip"),
	})
	if err != nil {
		return fmt.Errorf("writing s3://%s/%s: %w", p.bucket, key, err)
	}
	return nil
}

// encode renders metrics as the gzip-compressed TSV of one object.
func (p *Sink) encode(metrics []samplers.InterMetric) ([]byte, error) {
	var buf bytes.Buffer
	err := plugins.Compress(&buf, plugins.Gzip, func(zw io.Writer) error {
		return p.writeTSV(zw, metrics)
	})
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeTSV writes the header line and one line per metric to zw.
func (p *Sink) writeTSV(zw io.Writer, metrics []samplers.InterMetric) error {
	w := csv.NewWriter(zw)
	w.Comma = '\t'
	header := Header()
	w.Write(header)
	row := make([]string, len(header))
	var tags strings.Builder
	for i := range metrics {
		m := &metrics[i]
		tags.Reset()
		for _, list := range [2][]string{m.Tags, p.tags} {
			for _, t := range list {
				if tags.Len() > 0 {
					tags.WriteByte(',')
				}
				tags.WriteString(t)
			}
		}
		host := m.Host
		if host == "" {
			host = p.hostname
		}
		row[0] = m.FullName()
		row[1] = tags.String()
		row[2] = m.Kind.String()
		row[3] = host
		row[4] = m.Device
		row[5] = p.secs
		row[6] = strconv.FormatInt(m.Timestamp, 10)
		row[7] = strconv.FormatFloat(m.Value, 'g', -1, 64)
		w.Write(row)
	}
	w.Flush()
	return w.Error()
}
