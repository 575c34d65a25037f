// Package forwardrpc holds the gRPC service Forward (SendMetrics,
// SendMetricsV2) that carries series from local veneur instances to a
// global one, as veneur v14 defines it: its client and server stubs and
// MetricList. Package forward serves it (GRPCServer) and calls it (the
// grpc:// forward client).
//
// forward.pb.go and forward_grpc.pb.go are generated from forward.proto by
// `make generate` (the result is committed).
package forwardrpc
