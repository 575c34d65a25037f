package h2rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/veneur/veneur/internal/grpcwire"
	"github.com/veneur/veneur/internal/testpki"
)

// recorder is a method that keeps every message of its calls and answers
// with the count in its trailer; answer, when set, is its status instead.
type recorder struct {
	mu     sync.Mutex
	calls  [][][]byte
	md     []metadata.MD
	errs   []error
	answer error
	// entered, when set, receives each call as it starts; hold, when
	// set, is waited for before the first Recv.
	entered chan *Call
	hold    chan struct{}
}

func (r *recorder) handle(call *Call) ([]byte, metadata.MD, error) {
	if r.entered != nil {
		r.entered <- call
	}
	if r.hold != nil {
		<-r.hold
	}
	var msgs [][]byte
	var err error
	for {
		var b []byte
		b, err = call.Recv()
		if err != nil {
			break
		}
		msgs = append(msgs, bytes.Clone(b))
	}
	md, _ := metadata.FromIncomingContext(call.Context())
	r.mu.Lock()
	r.calls = append(r.calls, msgs)
	r.md = append(r.md, md)
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	if err != io.EOF {
		return nil, nil, err
	}
	if r.answer != nil {
		return nil, metadata.Pairs("x-count", fmt.Sprint(len(msgs))), r.answer
	}
	return []byte{0x08, 0x01}, metadata.Pairs("x-count", fmt.Sprint(len(msgs))), nil
}

func (r *recorder) last() ([][]byte, metadata.MD, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.calls)
	if n == 0 {
		return nil, nil, nil
	}
	return r.calls[n-1], r.md[n-1], r.errs[n-1]
}

const testMethod = "/test.Svc/Stream"

// serve starts a Server of one method on 127.0.0.1:0 and returns its
// address; the server stops at the end of the test.
func serve(t *testing.T, cfg Config, h Handler) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(cfg, map[string]Handler{testMethod: h})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
		if err := <-done; !errors.Is(err, ErrServerStopped) {
			t.Errorf("Serve returned %v, want ErrServerStopped", err)
		}
	})
	return s, ln.Addr().String()
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// send streams msgs in one call of method and returns the response's
// bytes, its trailer and its status.
func send(ctx context.Context, cc *grpc.ClientConn, method string, msgs [][]byte, opts ...grpc.CallOption) ([]byte, metadata.MD, error) {
	desc := &grpc.StreamDesc{ClientStreams: true}
	stream, err := cc.NewStream(ctx, desc, method, append([]grpc.CallOption{grpc.ForceCodecV2(grpcwire.Codec{})}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	for _, m := range msgs {
		if err := stream.SendMsg(&grpcwire.Message{B: m}); err != nil {
			break // the status comes with RecvMsg
		}
	}
	if err := stream.CloseSend(); err != nil {
		return nil, nil, err
	}
	var resp grpcwire.Message
	err = stream.RecvMsg(&resp)
	return resp.B, stream.Trailer(), err
}

// Messages of every size arrive whole and in order, whether they fit a
// frame, span frames and chunks, or are empty; more than many windows'
// worth goes through a call (the windows are given back as the call reads),
// several calls share a connection, and metadata, the response, the
// trailer and the status come back.
func TestCallsGetTheirMessages(t *testing.T) {
	r := &recorder{}
	_, addr := serve(t, Config{Window: 65535}, r.handle)
	cc := dial(t, addr)
	var msgs [][]byte
	total := 0
	for i := range 400 {
		size := []int{0, 1, 90, 5000, 16 << 10, 100 << 10}[i%6]
		m := bytes.Repeat([]byte{byte(i)}, size)
		msgs = append(msgs, m)
		total += size
	}
	if total < 10*65535 {
		t.Fatalf("test sends %d bytes, want many windows", total)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-batch", "b-1")
	for call := range 3 {
		resp, trailer, err := send(ctx, cc, testMethod, msgs)
		if err != nil {
			t.Fatalf("call %d: %v", call, err)
		}
		if !bytes.Equal(resp, []byte{0x08, 0x01}) || fmt.Sprint(trailer.Get("x-count")) != "[400]" {
			t.Errorf("call %d: response %x, trailer %v", call, resp, trailer)
		}
		got, md, rerr := r.last()
		if rerr != io.EOF || len(got) != len(msgs) {
			t.Fatalf("call %d: %d messages, end %v", call, len(got), rerr)
		}
		for i := range msgs {
			if !bytes.Equal(got[i], msgs[i]) {
				t.Fatalf("call %d: message %d differs (%d bytes, want %d)", call, i, len(got[i]), len(msgs[i]))
			}
		}
		if fmt.Sprint(md.Get("x-batch")) != "[b-1]" {
			t.Errorf("metadata %v", md)
		}
	}
}

// A handler's status error reaches the client with its code, message
// (percent-encoded on the wire) and trailer.
func TestStatusAndTrailer(t *testing.T) {
	r := &recorder{answer: status.Error(codes.Unavailable, "busy: 100% taken, retry \u00e9")}
	_, addr := serve(t, Config{}, r.handle)
	_, trailer, err := send(context.Background(), dial(t, addr), testMethod, [][]byte{{1}})
	if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "busy: 100% taken, retry \u00e9" {
		t.Errorf("status %v, want Unavailable with the message", err)
	}
	if fmt.Sprint(trailer.Get("x-count")) != "[1]" {
		t.Errorf("trailer %v", trailer)
	}
}

// Calls the server does not take are answered with a status, and the
// connection serves the next call.
func TestRefusedCalls(t *testing.T) {
	r := &recorder{}
	_, addr := serve(t, Config{MaxMessageBytes: 1000}, r.handle)
	cc := dial(t, addr)
	ctx := context.Background()
	if _, _, err := send(ctx, cc, "/test.Svc/Other", [][]byte{{1}}); status.Code(err) != codes.Unimplemented {
		t.Errorf("unknown method: %v, want Unimplemented", err)
	}
	if _, _, err := send(ctx, cc, testMethod, [][]byte{bytes.Repeat([]byte{1}, 500)}, grpc.UseCompressor("gzip")); status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "gzip") {
		t.Errorf("a compressed call: %v, want Unimplemented naming gzip", err)
	}
	_, _, err := send(ctx, cc, testMethod, [][]byte{{1}, bytes.Repeat([]byte{2}, 1001), {3}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a message over the limit: %v, want ResourceExhausted", err)
	}
	if got, _, rerr := r.last(); len(got) != 1 || status.Code(rerr) != codes.ResourceExhausted {
		t.Errorf("the handler got %d messages and %v, want 1 and ResourceExhausted", len(got), rerr)
	}
	if _, _, err := send(ctx, cc, testMethod, [][]byte{bytes.Repeat([]byte{2}, 1000)}); err != nil {
		t.Errorf("a message at the limit: %v", err)
	}
}

// A handler's own deadline (SetContext) ends a call's wait for messages
// with DeadlineExceeded, and so does the client's (grpc-timeout), which
// the handler sees in Context.
func TestCallDeadlines(t *testing.T) {
	ended := make(chan error, 1)
	_, addr := serve(t, Config{}, func(call *Call) ([]byte, metadata.MD, error) {
		ctx, cancel := context.WithTimeout(call.Context(), 100*time.Millisecond)
		defer cancel()
		call.SetContext(ctx)
		for {
			if _, err := call.Recv(); err != nil {
				ended <- err
				return nil, nil, err
			}
		}
	})
	// The client's own deadline is far: the handler's ends the call.
	far, cancelFar := context.WithTimeout(context.Background(), time.Minute)
	defer cancelFar()
	stream, err := dial(t, addr).NewStream(far, &grpc.StreamDesc{ClientStreams: true}, testMethod, grpc.ForceCodecV2(grpcwire.Codec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&grpcwire.Message{B: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("the handler's Recv ended with %v, want DeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's deadline did not end its Recv")
	}
	var resp grpcwire.Message
	if err := stream.RecvMsg(&resp); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a call that never ends: %v, want DeadlineExceeded", err)
	}

	_, addr = serve(t, Config{}, func(call *Call) ([]byte, metadata.MD, error) {
		d, ok := call.Context().Deadline()
		if !ok || time.Until(d) > time.Minute {
			return nil, nil, status.Errorf(codes.FailedPrecondition, "deadline %v %v", d, ok)
		}
		if _, err := call.Recv(); err != io.EOF {
			return nil, nil, err
		}
		return nil, nil, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err = dial(t, addr).NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, testMethod, grpc.ForceCodecV2(grpcwire.Codec{}))
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	stream2, err := dial(t, addr).NewStream(short, &grpc.StreamDesc{ClientStreams: true}, testMethod, grpc.ForceCodecV2(grpcwire.Codec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream2.RecvMsg(&resp); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a call past the client's deadline: %v, want DeadlineExceeded", err)
	}
	stream.CloseSend()
	if err := stream.RecvMsg(&resp); err != nil {
		t.Errorf("a call within the client's deadline of 30 s: %v (FailedPrecondition: the handler saw no such deadline)", err)
	}
}

// rawConn is a client speaking HTTP/2 frames itself.
type rawConn struct {
	t   *testing.T
	nc  net.Conn
	fr  *http2.Framer
	buf bytes.Buffer
	enc *hpack.Encoder
}

// rawDial connects, sends the preface and SETTINGS, and reads the
// server's SETTINGS.
func rawDial(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &rawConn{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	c.enc = hpack.NewEncoder(&c.buf)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// open starts a call of method on stream id.
func (c *rawConn) open(id uint32, method string, end bool) {
	c.t.Helper()
	if err := c.tryOpen(id, method, end); err != nil {
		c.t.Fatal(err)
	}
}

// tryOpen is open, returning the error of the write (from a goroutine
// other than the test's, or when the server may have closed).
func (c *rawConn) tryOpen(id uint32, method string, end bool) error {
	c.buf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.buf.Bytes(), EndHeaders: true, EndStream: end})
}

// until reads frames until want says it is the one, or the connection
// ends (returning nil and the error).
func (c *rawConn) until(want func(http2.Frame) bool) (http2.Frame, error) {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if want(f) {
			return f, nil
		}
	}
}

func isGoAway(code http2.ErrCode) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		return ok && g.ErrCode == code
	}
}

// grpcFrame is a gRPC message's bytes on the wire.
func grpcFrame(msg []byte) []byte {
	h := []byte{0, byte(len(msg) >> 24), byte(len(msg) >> 16), byte(len(msg) >> 8), byte(len(msg))}
	return append(h, msg...)
}

// A client that breaks the protocol loses its connection with a GOAWAY
// naming the fault, and the server goes on serving others.
func TestProtocolErrors(t *testing.T) {
	r := &recorder{}
	var errsMu sync.Mutex
	var errs []error
	_, addr := serve(t, Config{Window: 65535, OnError: func(err error) {
		errsMu.Lock()
		errs = append(errs, err)
		errsMu.Unlock()
	}}, r.handle)
	for _, tc := range []struct {
		name string
		code http2.ErrCode
		do   func(c *rawConn)
	}{
		{"DATA beyond the window", http2.ErrCodeFlowControl, func(c *rawConn) {
			c.tryOpen(1, testMethod, false)
			chunk := bytes.Repeat([]byte{0}, 16<<10)
			for range 5 {
				c.fr.WriteData(1, false, chunk)
			}
		}},
		{"DATA on a stream never opened", http2.ErrCodeProtocol, func(c *rawConn) {
			c.fr.WriteData(7, false, []byte{1})
		}},
		{"a stream id going back", http2.ErrCodeProtocol, func(c *rawConn) {
			c.tryOpen(5, testMethod, false)
			c.tryOpen(3, testMethod, false)
		}},
		{"a ping flood", http2.ErrCodeEnhanceYourCalm, func(c *rawConn) {
			for range maxControlRun + 10 {
				c.fr.WritePing(false, [8]byte{})
			}
		}},
		{"a flood of reset streams", http2.ErrCodeEnhanceYourCalm, func(c *rawConn) {
			for i := range uint32(maxResetRun + 10) {
				id := 2*i + 1
				if c.tryOpen(id, testMethod, false) != nil || c.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					return
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawDial(t, addr)
			go tc.do(c)
			if _, err := c.until(isGoAway(tc.code)); err != nil {
				t.Fatalf("no GOAWAY %v: %v", tc.code, err)
			}
			if _, err := c.until(func(http2.Frame) bool { return false }); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the connection stayed open: %v", err)
			}
		})
	}
	errsMu.Lock()
	n := len(errs)
	errsMu.Unlock()
	if n != 5 {
		t.Errorf("OnError told of %d protocol errors, want 5", n)
	}
	if _, _, err := send(context.Background(), dial(t, addr), testMethod, [][]byte{{1}}); err != nil {
		t.Errorf("a good call after them: %v", err)
	}
}

// A connection without the HTTP/2 preface, or silent after it, is closed.
func TestHandshakeBounds(t *testing.T) {
	_, addr := serve(t, Config{HandshakeTimeout: 100 * time.Millisecond}, (&recorder{}).handle)
	for _, first := range []string{"GET / HTTP/1.1\r\n\r\n" + strings.Repeat("x", 30), ""} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(nc, first)
		if _, err := io.Copy(io.Discard, nc); err != nil {
			t.Errorf("after %q: %v, want the server to close", first, err)
		}
		nc.Close()
	}
}

// Streams beyond MaxConcurrentStreams are refused; a stream the client
// resets ends its call's Recv with Canceled; a new stream then works.
func TestStreamBoundAndReset(t *testing.T) {
	r := &recorder{entered: make(chan *Call, 4)}
	_, addr := serve(t, Config{MaxConcurrentStreams: 2}, r.handle)
	c := rawDial(t, addr)
	c.open(1, testMethod, false)
	c.open(3, testMethod, false)
	c.open(5, testMethod, false)
	f, err := c.until(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok })
	if err != nil {
		t.Fatal(err)
	}
	if rst := f.(*http2.RSTStreamFrame); rst.StreamID != 5 || rst.ErrCode != http2.ErrCodeRefusedStream {
		t.Errorf("RST_STREAM %d %v, want 5 REFUSED_STREAM", rst.StreamID, rst.ErrCode)
	}
	<-r.entered
	<-r.entered
	c.fr.WriteData(1, false, grpcFrame([]byte("a")))
	c.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	c.fr.WriteData(3, true, grpcFrame([]byte("b")))
	// Stream 3 is answered (headers, message, trailer with status 0).
	if _, err := c.until(func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == 3 && h.StreamEnded() && h.PseudoValue("status") == "" && fieldOf(h, "grpc-status") == "0"
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		var codes1 []codes.Code
		for _, e := range r.errs {
			codes1 = append(codes1, status.Code(e))
		}
		r.mu.Unlock()
		if len(codes1) == 2 {
			if !(codes1[0] == codes.Canceled || codes1[1] == codes.Canceled) {
				t.Errorf("the calls ended with %v, want one Canceled", codes1)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls ended: %v", codes1)
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.open(7, testMethod, true)
	<-r.entered
	if _, err := c.until(func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == 7 && fieldOf(h, "grpc-status") == "0"
	}); err != nil {
		t.Fatal(err)
	}
}

func fieldOf(h *http2.MetaHeadersFrame, name string) string {
	for _, f := range h.Fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// A silent connection is pinged, and closed when nothing answers.
func TestKeepalive(t *testing.T) {
	_, addr := serve(t, Config{KeepaliveTime: 50 * time.Millisecond, KeepaliveTimeout: 50 * time.Millisecond}, (&recorder{}).handle)
	c := rawDial(t, addr)
	if _, err := c.until(func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && !p.IsAck() }); err != nil {
		t.Fatalf("no ping: %v", err)
	}
	if _, err := c.until(func(http2.Frame) bool { return false }); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the silent connection was not closed: %v", err)
	}
}

// Stop lets a call in progress finish, refuses new ones (GOAWAY), and
// closes a connection whose call outlives the grace.
func TestStop(t *testing.T) {
	r := &recorder{entered: make(chan *Call, 2), hold: make(chan struct{})}
	s, addr := serve(t, Config{}, r.handle)
	cc := dial(t, addr)
	done := make(chan error, 1)
	go func() {
		_, _, err := send(context.Background(), cc, testMethod, [][]byte{{1}, {2}})
		done <- err
	}()
	<-r.entered
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Stop(ctx)
	}()
	close(r.hold)
	if err := <-done; err != nil {
		t.Errorf("the call in progress: %v", err)
	}
	<-stopped
	if got, _, _ := r.last(); len(got) != 2 {
		t.Errorf("the call got %d messages, want 2", len(got))
	}

	r2 := &recorder{entered: make(chan *Call, 2), hold: make(chan struct{})}
	s2, addr2 := serve(t, Config{}, r2.handle)
	go func() {
		_, _, err := send(context.Background(), dial(t, addr2), testMethod, [][]byte{{1}})
		done <- err
	}()
	<-r2.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	s2.Stop(ctx)
	if err := <-done; status.Code(err) != codes.Unavailable {
		t.Errorf("a call cut off by Stop: %v, want Unavailable", err)
	}
	close(r2.hold)
}

func TestParseTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"1S": time.Second, "250m": 250 * time.Millisecond, "3H": 3 * time.Hour, "7M": 7 * time.Minute,
		"10u": 10 * time.Microsecond, "99999999n": 99999999, "99999999H": 1<<63 - 1,
	} {
		if got, ok := parseTimeout(in); !ok || got != want {
			t.Errorf("parseTimeout(%q) = %v %v, want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "S", "1", "1s", "-1S", "123456789S", "1.5S"} {
		if _, ok := parseTimeout(in); ok {
			t.Errorf("parseTimeout(%q) accepted", in)
		}
	}
}

// Over TLS the server negotiates h2 and checks client certificates as its
// config says: a client with one is served, one without is refused, and a
// client that does not offer h2 is closed.
func TestTLS(t *testing.T) {
	pki := testpki.New(t)
	serverCert, err := tls.X509KeyPair([]byte(pki.Server.Cert), []byte(pki.Server.Key))
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := tls.X509KeyPair([]byte(pki.Client.Cert), []byte(pki.Client.Key))
	if err != nil {
		t.Fatal(err)
	}
	cas := x509.NewCertPool()
	cas.AppendCertsFromPEM([]byte(pki.CA))
	r := &recorder{}
	_, addr := serve(t, Config{TLS: &tls.Config{
		Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: cas,
	}}, r.handle)
	ctx := context.Background()
	with := dial(t, addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: cas, Certificates: []tls.Certificate{clientCert}})))
	if _, trailer, err := send(ctx, with, testMethod, [][]byte{{1}, {2}}); err != nil || fmt.Sprint(trailer.Get("x-count")) != "[2]" {
		t.Errorf("a client with a certificate: %v, trailer %v", err, trailer)
	}
	without := dial(t, addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: cas})))
	if _, _, err := send(ctx, without, testMethod, [][]byte{{1}}); status.Code(err) != codes.Unavailable {
		t.Errorf("a client without a certificate: %v, want Unavailable", err)
	}
	// HTTP/1.1 over TLS: no h2, closed after the handshake.
	tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: cas, Certificates: []tls.Certificate{clientCert}, NextProtos: []string{"http/1.1"}})
	if err == nil {
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(tc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if n, _ := io.Copy(io.Discard, tc); n != 0 {
			t.Errorf("an HTTP/1.1 client got %d bytes", n)
		}
		tc.Close()
	}
}

// A request with a malformed header block is reset (PROTOCOL_ERROR) and
// what follows on its stream is dropped; the connection serves on.
func TestMalformedHeadersResetTheStream(t *testing.T) {
	_, addr := serve(t, Config{}, (&recorder{}).handle)
	c := rawDial(t, addr)
	c.buf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", testMethod}, {"Content-Type", "application/grpc"}} {
		c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.buf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	c.fr.WriteData(1, true, grpcFrame([]byte("x")))
	f, err := c.until(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok })
	if err != nil {
		t.Fatal(err)
	}
	if rst := f.(*http2.RSTStreamFrame); rst.StreamID != 1 || rst.ErrCode != http2.ErrCodeProtocol {
		t.Errorf("RST_STREAM %d %v, want 1 PROTOCOL_ERROR", rst.StreamID, rst.ErrCode)
	}
	c.open(3, testMethod, false)
	c.fr.WriteData(3, true, grpcFrame([]byte("y")))
	if _, err := c.until(func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == 3 && fieldOf(h, "grpc-status") == "0"
	}); err != nil {
		t.Fatalf("the next call: %v", err)
	}
}

// Many clients at once, each with calls in parallel on its connection,
// some cancelled midway: every call that ends well got exactly its
// messages, in order, and the server ends with nothing running.
func TestConcurrentCalls(t *testing.T) {
	var mu sync.Mutex
	got := map[string][][]byte{}
	s, addr := serve(t, Config{Window: 65535, MaxConcurrentStreams: 8}, func(call *Call) ([]byte, metadata.MD, error) {
		md, _ := metadata.FromIncomingContext(call.Context())
		var msgs [][]byte
		for {
			b, err := call.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, nil, err
			}
			msgs = append(msgs, bytes.Clone(b))
		}
		mu.Lock()
		got[md.Get("x-call")[0]] = msgs
		mu.Unlock()
		return nil, nil, nil
	})
	const clients, calls = 4, 12
	var wg sync.WaitGroup
	errs := make(chan error, clients*calls)
	for cl := range clients {
		cc := dial(t, addr)
		for k := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("c%d-%d", cl, k)
				var msgs [][]byte
				for i := range 50 + 37*k {
					msgs = append(msgs, bytes.Repeat([]byte{byte(i), byte(k)}, (i*131+k*7)%3000))
				}
				ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "x-call", name))
				defer cancel()
				if k%4 == 3 {
					// Cancelled midway: whatever it got, it must not
					// disturb the others.
					stream, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, testMethod, grpc.ForceCodecV2(grpcwire.Codec{}))
					if err != nil {
						errs <- err
						return
					}
					for _, m := range msgs[:len(msgs)/2] {
						stream.SendMsg(&grpcwire.Message{B: m})
					}
					cancel()
					return
				}
				if _, _, err := send(ctx, cc, testMethod, msgs); err != nil {
					errs <- fmt.Errorf("%s: %v", name, err)
					return
				}
				mu.Lock()
				g := got[name]
				mu.Unlock()
				if len(g) != len(msgs) {
					errs <- fmt.Errorf("%s: %d messages, want %d", name, len(g), len(msgs))
					return
				}
				for i := range msgs {
					if !bytes.Equal(g[i], msgs[i]) {
						errs <- fmt.Errorf("%s: message %d differs", name, i)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every connection's calls have ended.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		running := 0
		for c := range s.conns {
			c.mu.Lock()
			running += c.running
			c.mu.Unlock()
		}
		s.mu.Unlock()
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls still running", running)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
