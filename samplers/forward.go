package samplers

import (
	"github.com/axiomhq/hyperloglog"

	"github.com/veneur/veneur/tdigest"
)

// Forwarded is the state of one series on its way from a local instance to
// a global one: built by the local's flush, encoded by the forward client,
// decoded by the global's importer and merged into its workers (package
// forward owns the wire formats). Exactly one of Counter (for counters),
// Digest (histograms and timers) and Set is meaningful. Digest and Set are
// not copied: nobody may modify them once they are in a Forwarded, and
// since encoding a digest folds its buffered samples into its centroids,
// nobody may read them while the forward client encodes them either.
type Forwarded struct {
	Type    MetricType
	Scope   MetricScope
	Name    string
	Tags    []string
	Counter float64
	Digest  *tdigest.TDigest
	Set     *hyperloglog.Sketch
}
