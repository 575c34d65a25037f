package forward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/internal/counter"
	"github.com/veneur/veneur/plugins"
)

// ClientConfig sets up a Client.
type ClientConfig struct {
	// Address is forward_address: the http(s) URL of the global
	// instance's http_address, e.g. http://veneur-global:8127. Metrics
	// are posted to Address/import.
	Address string
	// Client sends the requests; nil means one whose timeout is the flush
	// interval.
	Client *http.Client
}

// Client is the local side of forwarding: a sink that posts the
// Batch.Forward of every flush to the global instance's /import, as one
// deflate-compressed JSON array of JSONMetric. A failed forward is logged,
// counted and not retried: the next interval carries new state.
type Client struct {
	url    string
	poster plugins.Poster
	what   string // the destination, in errors
	log    *logrus.Logger
	stats  statsd.ClientInterface
	errs   *counter.ByCause // forward.error_total, indexed by cause*
}

var _ plugins.Sink = (*Client)(nil)

// Causes of forward.error_total, in the order of Client.errs.
const (
	causeMarshal = iota
	causePost
	causeResponse
)

// NewClient returns a Client for cfg. It sends nothing until Flush.
func NewClient(cfg ClientConfig, env plugins.Env) (*Client, error) {
	const example = "http://veneur-global.example.com:8127"
	u, err := url.Parse(cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("forward_address: %w; use an absolute URL such as %s", err, example)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("forward_address %q: not an absolute http(s) URL; use a URL such as %s", cfg.Address, example)
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{Timeout: env.Interval}
	}
	c := &Client{
		url:    strings.TrimRight(cfg.Address, "/") + "/import",
		poster: plugins.Poster{Client: client},
		// The host only: the URL may carry credentials.
		what:  "the global instance at " + u.Host,
		log:   env.Log,
		stats: env.Stats,
		errs:  counter.New("marshal", "post", "response"),
	}
	if c.log == nil {
		c.log = logrus.New()
		c.log.SetOutput(io.Discard)
	}
	if c.stats == nil {
		c.stats = &statsd.NoOpClient{}
	}
	return c, nil
}

// Name names the sink in self-metrics.
func (c *Client) Name() string { return "forward" }

// Flush posts b.Forward (nothing when it is empty) and reports
// forward.duration_ns, forward.post_metrics_total (the metrics in the
// body) and, on failure, forward.error_total with cause marshal (metrics
// that do not encode are left out, the others still sent), post (no answer)
// or response (an answer other than 2xx). It returns the failure too.
func (c *Client) Flush(ctx context.Context, b *plugins.Batch) error {
	if len(b.Forward) == 0 {
		return nil
	}
	start := time.Now()
	n, err := c.send(ctx, b)
	c.stats.TimeInMilliseconds("forward.duration_ns", float64(time.Since(start).Nanoseconds()), nil, 1)
	c.stats.Count("forward.post_metrics_total", int64(n), nil, 1)
	if err != nil {
		c.errs.Report(c.stats, "forward.error_total")
		c.log.WithError(err).WithField("metrics", len(b.Forward)).Error("forwarding to the global instance failed")
	}
	return err
}

// send encodes and posts b.Forward, counts its failures in c.errs, and
// returns how many metrics the body held.
func (c *Client) send(ctx context.Context, b *plugins.Batch) (int, error) {
	var body bytes.Buffer
	var n int
	var skipped []error
	err := plugins.Compress(&body, plugins.Deflate, func(w io.Writer) error {
		var err error
		n, skipped, err = writeJSONArray(w, b.Forward)
		return err
	})
	var errs []error
	if len(skipped) > 0 {
		errs = append(errs, fmt.Errorf("%d of %d metrics left out: %w", len(skipped), len(b.Forward), errors.Join(skipped...)))
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("encoding the metrics: %w", err))
	}
	if len(errs) > 0 {
		c.errs.Add(causeMarshal, 1)
	}
	if err != nil || n == 0 {
		return 0, errors.Join(errs...)
	}
	err = c.poster.Send(ctx, plugins.Request{
		Method:          http.MethodPost,
		URL:             c.url,
		What:            c.what,
		Body:            body.Bytes(),
		ContentType:     "application/json",
		ContentEncoding: string(plugins.Deflate),
	})
	if err != nil {
		var se *plugins.StatusError
		if errors.As(err, &se) {
			c.errs.Add(causeResponse, 1)
		} else {
			c.errs.Add(causePost, 1)
		}
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}
