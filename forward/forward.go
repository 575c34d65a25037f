// Package forward carries series state from a local veneur to a global one.
//
// The local side is Client, a sink that sends every flush's
// plugins.Batch.Forward to the global instance at forward_address. The
// global side is Importer, the handler of POST /import, which decodes what
// locals send and hands it to a Merger (the instance's workers).
//
// Wire formats and transports are kept apart: json.go is the JSON format
// (JSONMetric, EncodeJSON, DecodeJSON) and jsonstream.go its decoding an
// element at a time, client.go and http.go are its HTTP transport,
// limits.go the limits on what a request may make the global hold, and
// importer.go is what every transport of the global side shares (decoding
// each metric, merging, the import self-metrics).
package forward

import (
	"errors"

	"github.com/veneur/veneur/samplers"
)

// Merger takes the decoded series of one import request into an instance.
type Merger interface {
	// Merge hands metrics over to the instance that merges them, or
	// returns ErrClosed (taking none of them) when the instance is
	// shutting down and takes nothing more. It is called for each part of
	// a request, with the metrics of that part that decoded: once per
	// well-formed request (possibly with none) when its body fits one
	// part, as most do, and once per part of a larger /import body (see
	// Importer.ServeHTTP). It may keep metrics and what they point to:
	// nobody else uses them afterwards.
	Merge(metrics []samplers.Forwarded) error
}

// ErrClosed is what Merge returns once the instance is shutting down: the
// sender is answered 503 and should send to another instance.
var ErrClosed = errors.New("forward: the instance is shutting down")
