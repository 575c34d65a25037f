package veneur

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/veneur/veneur/samplers"
)

// ddEvent is an event in the body of Datadog's POST /api/v1/events.
type ddEvent struct {
	Title          string   `json:"title"`
	Text           string   `json:"text"`
	DateHappened   int64    `json:"date_happened"`
	Host           string   `json:"host,omitempty"`
	AggregationKey string   `json:"aggregation_key,omitempty"`
	Priority       string   `json:"priority,omitempty"`
	SourceTypeName string   `json:"source_type_name,omitempty"`
	AlertType      string   `json:"alert_type,omitempty"`
	Tags           []string `json:"tags"`
}

// ddCheck is a service check in the body of POST /api/v1/check_run.
type ddCheck struct {
	Check     string   `json:"check"`
	HostName  string   `json:"host_name"`
	Status    int      `json:"status"`
	Timestamp int64    `json:"timestamp"`
	Message   string   `json:"message,omitempty"`
	Tags      []string `json:"tags"`
}

// FlushEvents posts each event to /api/v1/events (the API takes one per
// request) and the service checks together to /api/v1/check_run. Host
// defaults and configured tags apply as for series.
func (d *datadogSink) FlushEvents(ctx context.Context, events []samplers.Event, checks []samplers.ServiceCheck) error {
	var errs []error
	for _, e := range events {
		err := d.postJSON(ctx, "/api/v1/events", ddEvent{
			Title: e.Title, Text: e.Text, DateHappened: e.Timestamp, Host: d.host(e.Host),
			AggregationKey: e.AggregationKey, Priority: e.Priority, SourceTypeName: e.SourceType,
			AlertType: e.AlertType, Tags: d.withTags(e.Tags),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("event %q: %w", e.Title, err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	if len(checks) > 0 {
		body := make([]ddCheck, len(checks))
		for i, c := range checks {
			body[i] = ddCheck{Check: c.Name, HostName: d.host(c.Host), Status: c.Status, Timestamp: c.Timestamp, Message: c.Message, Tags: d.withTags(c.Tags)}
		}
		if err := d.postJSON(ctx, "/api/v1/check_run", body); err != nil {
			errs = append(errs, fmt.Errorf("%d service checks: %w", len(checks), err))
		}
	}
	return errors.Join(errs...)
}

func (d *datadogSink) host(h string) string {
	if h == "" {
		return d.hostname
	}
	return h
}

func (d *datadogSink) withTags(tags []string) []string {
	out := make([]string, 0, len(tags)+len(d.tags))
	return append(append(out, tags...), d.tags...)
}

func (d *datadogSink) postJSON(ctx context.Context, path string, v any) error {
	return sendJSON(ctx, d.client, http.MethodPost, d.apiBase+path+"?api_key="+d.key, path, v)
}

// sendJSON sends v as a JSON body and returns an error unless the answer
// is 2xx. Errors name the destination as what, and never carry the URL,
// which may hold a key.
func sendJSON(ctx context.Context, client *http.Client, method, url, what string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: %w", what, redactKey(err))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, redactKey(err))
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s: %s", what, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
