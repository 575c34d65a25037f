// Package plugins holds the sinks veneur can publish flushed metrics to
// besides Datadog, each in its own package behind the Plugin interface.
package plugins

import (
	"context"

	"github.com/veneur/veneur/samplers"
)

// Plugin receives the metrics of every flush. Flush runs in the background,
// once per interval, and must return within ctx; it must not keep metrics,
// or modify them, after it returns.
type Plugin interface {
	Name() string
	Flush(ctx context.Context, metrics []samplers.InterMetric) error
}
