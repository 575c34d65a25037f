package forward

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"

	"github.com/veneur/veneur/internal/counter"
	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
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
	// Delivery bounds the retries and the spool; zero fields take their
	// defaults (plugins.DefaultDelivery).
	Delivery plugins.DeliveryConfig
	// Destination names the global in the delivery self-metrics' tag
	// destination; empty means "forward". The sharded forwarder gives each
	// member its own ("forward-" and its host:port).
	Destination string
}

// Client is the local side of forwarding: a sink that posts the
// Batch.Forward of every flush to the global instance's /import, as one
// deflate-compressed JSON array of JSONMetric. The request goes through a
// plugins.Queue (destination:forward, self-metric prefix forward, whose
// items are metrics), which retries it when the global fails or is
// unreachable, keeps the flushes in order, and drops it when the global
// refuses it (a 4xx) or it waited too long. Every request carries a batch
// id in BatchHeader, the same on each retry, so that a global that merged
// it once, and whose answer was lost, does not merge it again.
type Client struct {
	url    string
	poster plugins.Poster
	what   string // the destination, in errors
	stats  statsd.ClientInterface
	errs   *counter.ByCause // forward.error_total{cause:marshal}
	queue  *plugins.Queue
}

var (
	_ plugins.Sink     = (*Client)(nil)
	_ plugins.Closer   = (*Client)(nil)
	_ plugins.Reporter = (*Client)(nil)
)

// causeMarshal is the cause Client.errs counts: metrics that do not
// encode. The queue counts the failed posts (causes post and response).
const causeMarshal = 0

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
	if err := cfg.Delivery.Validate(); err != nil {
		return nil, err
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
		stats: env.Stats,
		errs:  counter.New("marshal"),
	}
	if c.stats == nil {
		c.stats = &statsd.NoOpClient{}
	}
	c.queue = plugins.NewQueue(cfg.destination(), &c.poster, cfg.Delivery, env, "forward")
	return c, nil
}

// Name names the sink in self-metrics.
func (c *Client) Name() string { return "forward" }

// Flush encodes b.Forward (nothing when it is empty) as one request with a
// new batch id, enqueues it, and reports forward.duration_ns{part:marshal}.
// It does not wait for the global instance. Metrics that do not encode are
// left out, the others still sent; they are counted in
// forward.error_total{cause:marshal} and returned as the error.
func (c *Client) Flush(ctx context.Context, b *plugins.Batch) error {
	if len(b.Forward) == 0 {
		return nil
	}
	start := time.Now()
	var body bytes.Buffer
	var n int
	var skipped []error
	err := plugins.Compress(&body, plugins.Deflate, func(w io.Writer) error {
		var err error
		n, skipped, err = writeJSONArray(w, b.Forward)
		return err
	})
	c.stats.TimeInMilliseconds("forward.duration_ns", float64(time.Since(start).Nanoseconds()), []string{"part:marshal"}, 1)
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
		return errors.Join(errs...)
	}
	c.queue.Send(plugins.Delivery{
		Request: plugins.Request{
			Method:          http.MethodPost,
			URL:             c.url,
			What:            c.what,
			Body:            body.Bytes(),
			ContentType:     "application/json",
			ContentEncoding: string(plugins.Deflate),
			Header:          http.Header{BatchHeader: {newBatchID()}},
		},
		Count: n,
	})
	return errors.Join(errs...)
}

// Close delivers what the queue holds until ctx ends, and drops the rest.
func (c *Client) Close(ctx context.Context) error { return c.queue.Close(ctx) }

// Report sends forward.error_total{cause:marshal} and the delivery
// self-metrics.
func (c *Client) Report(stats statsd.ClientInterface) {
	c.errs.Report(stats, "forward.error_total")
	c.queue.Report(stats)
}

// newBatchID is a random 128-bit id, in hex: unique to one request, so
// that the global can tell a retry from a new batch.
func newBatchID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails, as of Go 1.24
	return hex.EncodeToString(b[:])
}

// Reclaim closes the client and gives back, decoded, the series of the
// flushes the global provably never received (see plugins.Queue.Reclaim),
// for the sharded forwarder to send to their new owner. The rest is
// delivered, or dropped, within ctx.
func (c *Client) Reclaim(ctx context.Context) ([]samplers.Forwarded, error) {
	ds, err := c.queue.Reclaim(ctx)
	var out []samplers.Forwarded
	var errs []error
	for _, d := range ds {
		zr, zerr := zlib.NewReader(bytes.NewReader(d.Body))
		if zerr != nil {
			errs = append(errs, zerr)
			continue
		}
		var list []JSONMetric
		if derr := json.NewDecoder(zr).Decode(&list); derr != nil {
			errs = append(errs, derr)
			continue
		}
		for i := range list {
			f, derr := DecodeJSON(&list[i])
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

func (c ClientConfig) destination() string {
	if c.Destination == "" {
		return "forward"
	}
	return c.Destination
}
