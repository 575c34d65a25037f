package datadog

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/veneur/veneur/plugins"
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

// flushEvents enqueues, as one generation, each event as a request of
// its own to /api/v1/events (the API takes one per request) and the
// service checks together as one request to /api/v1/check_run. Host
// defaults and configured tags apply as for series. Each event counts as
// one item in the self-metrics, each check as one. What fails to encode is
// left out, and its error returned.
func (d *Sink) flushEvents(events []samplers.Event, checks []samplers.ServiceCheck) error {
	var errs []error
	ds := make([]plugins.Delivery, 0, len(events)+1)
	for _, e := range events {
		r, err := d.jsonRequest("/api/v1/events", ddEvent{
			Title: e.Title, Text: e.Text, DateHappened: e.Timestamp, Host: d.common.Host(e.Host),
			AggregationKey: e.AggregationKey, Priority: e.Priority, SourceTypeName: e.SourceType,
			AlertType: e.AlertType, Tags: d.common.WithTags(e.Tags),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("event %q: %w", e.Title, err))
			continue
		}
		ds = append(ds, plugins.Delivery{Request: r, Count: 1})
	}
	if len(checks) > 0 {
		body := make([]ddCheck, len(checks))
		for i, c := range checks {
			body[i] = ddCheck{
				Check: c.Name, HostName: d.common.Host(c.Host), Status: c.Status, Timestamp: c.Timestamp,
				Message: c.Message, Tags: d.common.WithTags(c.Tags),
			}
		}
		r, err := d.jsonRequest("/api/v1/check_run", body)
		if err != nil {
			errs = append(errs, fmt.Errorf("%d service checks: %w", len(checks), err))
		} else {
			ds = append(ds, plugins.Delivery{Request: r, Count: len(checks)})
		}
	}
	d.events.Send(ds...)
	return errors.Join(errs...)
}

// jsonRequest is a POST of v, as JSON, to the API path; errors name the
// path, never the key.
func (d *Sink) jsonRequest(path string, v any) (plugins.Request, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return plugins.Request{}, err
	}
	return plugins.Request{
		Method: http.MethodPost, URL: d.apiBase + path + "?api_key=" + d.key, What: "the Datadog API " + path,
		Body: body, ContentType: "application/json",
	}, nil
}
