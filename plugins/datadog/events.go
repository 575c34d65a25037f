package datadog

import (
	"context"
	"errors"
	"fmt"
	"net/http"

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

// flushEvents posts each event to /api/v1/events (the API takes one per
// request) and the service checks together to /api/v1/check_run. Host
// defaults and configured tags apply as for series.
func (d *Sink) flushEvents(ctx context.Context, events []samplers.Event, checks []samplers.ServiceCheck) error {
	var errs []error
	for _, e := range events {
		err := d.postJSON(ctx, "/api/v1/events", ddEvent{
			Title: e.Title, Text: e.Text, DateHappened: e.Timestamp, Host: d.common.Host(e.Host),
			AggregationKey: e.AggregationKey, Priority: e.Priority, SourceTypeName: e.SourceType,
			AlertType: e.AlertType, Tags: d.common.WithTags(e.Tags),
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
			body[i] = ddCheck{
				Check: c.Name, HostName: d.common.Host(c.Host), Status: c.Status, Timestamp: c.Timestamp,
				Message: c.Message, Tags: d.common.WithTags(c.Tags),
			}
		}
		if err := d.postJSON(ctx, "/api/v1/check_run", body); err != nil {
			errs = append(errs, fmt.Errorf("%d service checks: %w", len(checks), err))
		}
	}
	return errors.Join(errs...)
}

// postJSON posts v to the API path; errors name the path, never the key.
func (d *Sink) postJSON(ctx context.Context, path string, v any) error {
	return d.poster.JSON(ctx, http.MethodPost, d.apiBase+path+"?api_key="+d.key, path, v)
}
