package e2e

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/veneur/veneur/forward/forwardrpc"
	"github.com/veneur/veneur/forward/metricpb"
)

// A client standing in for veneur v14's proxy holds one SendMetricsV2
// stream open to the global, without a batch id, and sends each series as
// it gets it: the global merges what arrives while the stream stays open,
// and publishes it at its flushes, interval after interval, before the
// stream ever ends.
func TestV14ProxyStreamStaysOpen(t *testing.T) {
	t.Parallel()
	fake := newFakeDD(t)
	var grpcAddr string
	global := startDaemon(t, fake, func(c config) {
		c["hostname"] = "global-veneur"
		c["interval"] = "1s"
		grpcAddr = freeTCPAddr(t)
		c["grpc_address"] = grpcAddr
	})
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := forwardrpc.NewForwardClient(conn).SendMetricsV2(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(name string, v int64) {
		t.Helper()
		err := stream.Send(&metricpb.Metric{
			Name: name, Tags: []string{"via:v14proxy"}, Type: metricpb.Type_Counter, Scope: metricpb.Scope_Global,
			Value: &metricpb.Metric_Counter{Counter: &metricpb.CounterValue{Value: v}},
		})
		if err != nil {
			t.Fatalf("sending %s: %v", name, err)
		}
	}
	// First a burst, published while the stream is open.
	for range 3 {
		send("v14.stream.first", 5)
	}
	fake.waitForSeries(t, 20*time.Second, "v14.stream.first")
	// Then another, on the same stream, published by a later flush.
	send("v14.stream.second", 7)
	send("v14.stream.second", 7)
	fake.waitForSeries(t, 20*time.Second, "v14.stream.second")
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatalf("the stream's end: %v", err)
	}
	reqs := global.stopAndCollect(t)
	for name, total := range map[string]float64{"v14.stream.first": 15, "v14.stream.second": 14} {
		sum := 0.0
		for _, s := range findSeries(reqs, name) {
			if s.Type != "rate" || s.Host != "global-veneur" {
				t.Errorf("%s: type %s host %s, want a rate from global-veneur", name, s.Type, s.Host)
			}
			sum += s.Value * s.Interval
		}
		if sum != total {
			t.Errorf("%s: published %v in all, want %v", name, sum, total)
		}
	}
}
