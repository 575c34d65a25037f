// Package ssf holds the Go types of SSF, the protobuf format of the trace
// spans (and the metrics inside them) veneur receives on trace_address.
// ssf.pb.go is generated from ssf.proto by `make generate`.
package ssf
