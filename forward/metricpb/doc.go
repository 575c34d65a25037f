// Package metricpb holds the Go types of the protobuf messages that carry
// series between veneur instances over gRPC: Metric (proto package
// metricpb) and the t-digest it may hold, MergingDigestData (proto package
// tdigest). They are the wire format of veneur v14's forwarding, so that
// instances of either can forward to the other; package forward converts
// them to and from samplers.Forwarded.
//
// metric.pb.go and tdigest.pb.go are generated from metric.proto and
// tdigest.proto by `make generate` (the result is committed).
package metricpb
