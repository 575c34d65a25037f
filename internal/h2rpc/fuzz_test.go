package h2rpc

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientFrames is what a client sends after its preface and SETTINGS:
// write adds frames to it.
func clientFrames(write func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer)) []byte {
	var out, hbuf bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	write(fr, hpack.NewEncoder(&hbuf), &hbuf)
	return out.Bytes()
}

func requestHeaders(enc *hpack.Encoder, hbuf *bytes.Buffer, path string) []byte {
	hbuf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "x"}, {"content-type", "application/grpc"}, {"grpc-timeout", "5S"}, {"x-veneur-batch-id", "b1"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return hbuf.Bytes()
}

// FuzzServeConn feeds a connection any frames after a valid preface and
// SETTINGS: the server must neither panic nor hang, whatever they are, and
// every call it started must end once the connection closes.
func FuzzServeConn(f *testing.F) {
	f.Add(clientFrames(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: requestHeaders(enc, hbuf, testMethod), EndHeaders: true})
		fr.WriteData(1, false, append(grpcFrame([]byte("one")), grpcFrame(nil)...))
		fr.WriteData(1, true, grpcFrame([]byte("two")))
	}))
	f.Add(clientFrames(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: requestHeaders(enc, hbuf, testMethod), EndHeaders: true})
		msg := grpcFrame(bytes.Repeat([]byte{7}, 300))
		fr.WriteData(1, false, msg[:100])
		fr.WritePing(false, [8]byte{1})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: requestHeaders(enc, hbuf, "/no.Such/Method"), EndHeaders: true, EndStream: true})
		fr.WriteWindowUpdate(0, 1000)
		fr.WriteDataPadded(1, false, msg[100:], []byte{0, 0, 0})
		fr.WriteRSTStream(1, http2.ErrCodeCancel)
		fr.WriteData(1, true, []byte{0, 0})
	}))
	f.Add(clientFrames(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: requestHeaders(enc, hbuf, testMethod), EndHeaders: true})
		fr.WriteData(1, true, []byte{1, 0, 0, 0, 1, 9})
		fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
		fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &recorder{}
		s := NewServer(Config{MaxMessageBytes: 1 << 10, MaxConcurrentStreams: 8, Window: 65535}, map[string]Handler{testMethod: r.handle})
		server, client := net.Pipe()
		c := s.newConn(server)
		served := make(chan struct{})
		go func() {
			defer close(served)
			c.serve()
		}()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(client, http2.ClientPreface)
		var settings bytes.Buffer
		http2.NewFramer(&settings, nil).WriteSettings()
		client.Write(settings.Bytes())
		client.Write(data)
		client.Close()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatal("the connection was still served 10 s after the client closed it")
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			c.mu.Lock()
			running := c.running
			c.mu.Unlock()
			if running == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d calls still running after the connection closed", running)
			}
			time.Sleep(time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Stop(ctx)
	})
}
