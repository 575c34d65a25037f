package veneur

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/klauspost/compress/zlib"
	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur/samplers"
)

// forwarder posts the global parts of every flush to the /import endpoint
// of the instance at forward_address.
type forwarder struct {
	url    string
	client *http.Client
	log    *logrus.Logger
	stats  statsd.ClientInterface
}

func newForwarder(addr string, client *http.Client, log *logrus.Logger, stats statsd.ClientInterface) *forwarder {
	return &forwarder{url: strings.TrimRight(addr, "/") + "/import", client: client, log: log, stats: stats}
}

// post sends metrics as one deflate-compressed JSON array. Failures are
// logged and counted (veneur.forward.error_total, tag cause) and not
// retried: the next interval carries new state.
func (f *forwarder) post(ctx context.Context, metrics []samplers.JSONMetric) {
	start := time.Now()
	err := f.send(ctx, metrics)
	f.stats.TimeInMilliseconds("forward.duration_ns", nanos(time.Since(start)), nil, 1)
	f.stats.Count("forward.post_metrics_total", int64(len(metrics)), nil, 1)
	if err != nil {
		f.stats.Count("forward.error_total", 1, []string{"cause:" + err.cause}, 1)
		f.log.WithError(err.err).WithField("metrics", len(metrics)).Error("forwarding to the global instance failed")
	}
}

type forwardError struct {
	cause string
	err   error
}

func (f *forwarder) send(ctx context.Context, metrics []samplers.JSONMetric) *forwardError {
	var body bytes.Buffer
	zw := zlib.NewWriter(&body)
	if err := json.NewEncoder(zw).Encode(metrics); err != nil {
		return &forwardError{"marshal", err}
	}
	if err := zw.Close(); err != nil {
		return &forwardError{"marshal", err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, &body)
	if err != nil {
		return &forwardError{"post", err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "deflate")
	resp, err := f.client.Do(req)
	if err != nil {
		return &forwardError{"post", fmt.Errorf("posting to %s: %w", f.url, err)}
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode/100 != 2 {
		return &forwardError{"response", fmt.Errorf("%s answered %s: %s", f.url, resp.Status, bytes.TrimSpace(msg))}
	}
	return nil
}
