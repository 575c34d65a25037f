package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veneur/veneur/forward/forwardrpc"
	"github.com/veneur/veneur/internal/grpcwire"
)

// The bare receivers of the global workloads: the least a server of each
// transport does with the traffic. Over gRPC, it receives every message
// of every SendMetricsV2 call as its bytes (grpcwire) and counts it; over
// HTTP, it reads every /import body to its end (compressed, as it came)
// and answers 202. The driver runs them with -mode global-bare.

// bareGRPC serves forwardrpc.Forward, counting the messages of
// SendMetricsV2.
type bareGRPC struct {
	forwardrpc.UnimplementedForwardServer
}

func (bareGRPC) SendMetricsV2(stream forwardrpc.Forward_SendMetricsV2Server) error {
	var msg grpcwire.Message
	n := 0
	for {
		err := stream.RecvMsg(&msg)
		if err == io.EOF {
			stream.SetTrailer(metadata.Pairs("x-veneur-accepted", strconv.Itoa(n)))
			return stream.SendAndClose(&emptypb.Empty{})
		}
		if err != nil {
			return err
		}
		n++
	}
}

// bareHTTP reads /import bodies and throws them away.
func bareHTTP(w http.ResponseWriter, r *http.Request) {
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, "{}")
}

// serveBare serves transport on 127.0.0.1:0 until ctx ends, after
// writing "ready PORT" to ready.
func serveBare(ctx context.Context, transport string, ready io.Writer) error {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Fprintf(ready, "ready %d\n", ln.Addr().(*net.TCPAddr).Port)
	switch transport {
	case transportGRPC, transportGRPCv14:
		srv := grpc.NewServer(grpc.ForceServerCodecV2(grpcwire.Codec{}))
		forwardrpc.RegisterForwardServer(srv, bareGRPC{})
		go func() {
			<-ctx.Done()
			srv.Stop()
		}()
		return srv.Serve(ln)
	case transportHTTP:
		srv := &http.Server{Handler: http.HandlerFunc(bareHTTP), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			srv.Close()
		}()
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			return err
		}
		return nil
	}
	ln.Close()
	return fmt.Errorf("unknown transport %q; use http or grpc", transport)
}

// globalBareMain is -mode global-bare: it serves until its standard input
// closes.
func globalBareMain(transport string) int {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		cancel()
	}()
	if err := serveBare(ctx, transport, os.Stdout); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "global-bare:", err)
		return 1
	}
	return 0
}
