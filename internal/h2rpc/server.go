// Package h2rpc serves unary and client-streaming gRPC methods over
// HTTP/2, handing each call its messages as bytes.
//
// It exists for one reason: a global receives a message per series from
// every local (veneur v14 streams one Metric per message), and grpc-go's
// server passes each message from the connection's reader goroutine to
// the call's goroutine, with a buffer, a lock and often a wake-up each:
// about two microseconds a message on a 2 GHz core, more than decoding
// and merging the series. Here the connection's reader gathers what it
// reads for a call until the socket has nothing more to give (or 64 KiB),
// and hands that over in one piece; the call splits it into messages in
// place. The HTTP/2 framing, HPACK and their checks are those of
// golang.org/x/net/http2.
//
// What it serves: prior-knowledge HTTP/2 (h2c) or TLS with ALPN h2;
// methods registered by path; requests of content-type application/grpc
// without compression (grpc-encoding identity); the client's deadline
// (grpc-timeout), and a handler's own (Call.SetContext); metadata in, a response
// message, status and trailer metadata out. It pings a silent connection
// and closes it when the ping goes unanswered, refuses streams beyond its
// bound, and closes a connection that floods it with pings, settings or
// refused streams. It does not serve server streaming, server push or
// compression.
package h2rpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Defaults of Config.
const (
	DefaultMaxMessageBytes      = 4 << 20
	DefaultMaxConcurrentStreams = 100
	DefaultWindow               = 1 << 20
	DefaultMaxHeaderBytes       = 16 << 10
	DefaultKeepaliveTime        = time.Minute
	DefaultKeepaliveTimeout     = 20 * time.Second
	DefaultHandshakeTimeout     = 10 * time.Second
)

// writeTimeout bounds a write to a client.
const writeTimeout = 10 * time.Second

// chunkBytes is how much the reader gathers for a call before it hands it
// over, when the socket keeps giving.
const chunkBytes = 64 << 10

// Flood bounds: a connection is closed when it sends more than this many
// control frames (PING, SETTINGS) in a row without a frame of a call, or
// has this many streams refused or reset by the client in a row without
// one completing.
const (
	maxControlRun = 1000
	maxResetRun   = 1000
)

// Config sets up a Server. Zero values mean the defaults.
type Config struct {
	// TLS, when not nil, serves TLS only, negotiating h2 (NextProtos is
	// set to it).
	TLS *tls.Config
	// MaxMessageBytes bounds one message; a larger one ends its call with
	// ResourceExhausted.
	MaxMessageBytes int
	// MaxConcurrentStreams bounds the calls of one connection.
	MaxConcurrentStreams uint32
	// Window is the flow-control window of a connection and of each of its
	// calls: what a client may send ahead of what its calls consumed.
	Window int32
	// MaxHeaderBytes bounds the header list of a request.
	MaxHeaderBytes uint32
	// KeepaliveTime is how long a connection may be silent before the
	// server pings it; KeepaliveTimeout, how long it then waits for any
	// frame before closing it.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake and the client's preface.
	HandshakeTimeout time.Duration
	// Guard, when not nil, is deferred at the top of every goroutine the
	// server starts (to report a panic).
	Guard func()
	// OnError, when not nil, is told of connections closed on a protocol
	// error of the client's.
	OnError func(error)
}

// Handler serves one call: it reads the request's messages with
// call.Recv, and returns the response message (the bytes of an encoded
// message, nil for an empty one), the trailer metadata and the call's
// status error (nil for OK, or one of grpc's status package). It runs on
// a goroutine of its own.
type Handler func(call *Call) (resp []byte, trailer metadata.MD, err error)

// Server serves the methods it was given. Serve serves a listener; Stop
// stops.
type Server struct {
	cfg     Config
	methods map[string]Handler

	mu        sync.Mutex
	lns       map[net.Listener]struct{}
	conns     map[*conn]struct{}
	stopping  bool
	connsGone chan struct{} // closed when conns empties while stopping
}

// NewServer returns a Server of the methods, by path
// ("/package.Service/Method").
func NewServer(cfg Config, methods map[string]Handler) *Server {
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Window < 65535 {
		cfg.Window = 65535
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.KeepaliveTime <= 0 {
		cfg.KeepaliveTime = DefaultKeepaliveTime
	}
	if cfg.KeepaliveTimeout <= 0 {
		cfg.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.TLS != nil {
		cfg.TLS = cfg.TLS.Clone()
		cfg.TLS.NextProtos = []string{"h2"}
	}
	return &Server{
		cfg:       cfg,
		methods:   methods,
		lns:       map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
		connsGone: make(chan struct{}),
	}
}

// ErrServerStopped is what Serve returns once Stop was called.
var ErrServerStopped = errors.New("h2rpc: server stopped")

// Serve accepts connections on ln and serves them until Stop, and returns
// ErrServerStopped then (or the error that ended accepting).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		ln.Close()
		return ErrServerStopped
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			stopping := s.stopping
			s.mu.Unlock()
			if stopping {
				return ErrServerStopped
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			continue
		}
		go c.serve()
	}
}

// newConn registers a connection, or returns nil when the server stops.
func (s *Server) newConn(nc net.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil
	}
	c := &conn{s: s, nc: nc, streams: map[uint32]*stream{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	s.conns[c] = struct{}{}
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if s.stopping && len(s.conns) == 0 {
		select {
		case <-s.connsGone:
		default:
			close(s.connsGone)
		}
	}
}

// Stop stops accepting, tells every connection to start no more calls
// (GOAWAY), lets the calls in progress finish until ctx ends, then closes
// every connection left and returns. Calls cut off end with their
// connection. Calling it again is harmless.
func (s *Server) Stop(ctx context.Context) {
	s.mu.Lock()
	if !s.stopping {
		s.stopping = true
		for ln := range s.lns {
			ln.Close()
		}
		for c := range s.conns {
			go c.goAway()
		}
		if len(s.conns) == 0 {
			close(s.connsGone)
		}
	}
	s.mu.Unlock()
	select {
	case <-s.connsGone:
		return
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.close()
	}
	s.mu.Unlock()
	<-s.connsGone
}

// conn is one client connection. Its reader (serve) owns the frames read;
// writes from any goroutine go through w under wmu.
type conn struct {
	s      *Server
	nc     net.Conn
	ctx    context.Context // ends with the connection
	cancel context.CancelFunc

	br *bufio.Reader // under fr (reader only)

	wmu  sync.Mutex
	bw   *bufio.Writer
	fr   *http2.Framer // reads (reader only) and writes (under wmu)
	henc *hpack.Encoder
	hbuf strings.Builder // HPACK output, under wmu
	// wclosed is set once writing failed: nothing more is written.
	wclosed bool

	// recvWindow is what the client may still send on the connection;
	// the reader takes from it, calls give back what they consumed.
	recvWindow atomic.Int64
	// frames counts the frames read, for the keepalive; completed, the
	// calls that read their request to its end, for the flood bound.
	frames    atomic.Uint64
	completed atomic.Uint64

	mu        sync.Mutex
	streams   map[uint32]*stream
	lastID    uint32 // the highest stream id the client opened
	goingAway bool   // GOAWAY sent: no new stream
	running   int    // calls whose handler has not returned
	idle      chan struct{}
	owedConn  int64 // bytes consumed, not yet given back to the window

	// dirty holds the streams with a pending chunk, and last the stream
	// of the last DATA frame fastData took (reader only).
	dirty []*stream
	last  *stream
}

// stream is one call on a connection.
type stream struct {
	c  *conn
	id uint32

	// recvWindow is what the client may still send on the stream.
	recvWindow atomic.Int64

	mu     sync.Mutex
	chunks [][]byte
	eof    bool  // the client ended its side
	err    error // the stream was reset or the connection ended
	signal chan struct{}

	// pending is the reader's chunk being gathered (reader only).
	pending []byte
	// finished is set once the handler's answer was written, and owed is
	// what the call consumed and the stream's window has not been given
	// back (under c.mu).
	finished bool
	owed     int64
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkBytes); return &b }}

func (c *conn) serve() {
	if g := c.s.cfg.Guard; g != nil {
		defer g()
	}
	defer c.s.forget(c)
	defer c.close()
	if err := c.handshake(); err != nil {
		return
	}
	c.keepalive()
	err := c.readLoop()
	var ce http2.ConnectionError
	if errors.As(err, &ce) || errors.Is(err, errProtocol) {
		if c.s.cfg.OnError != nil {
			c.s.cfg.OnError(err)
		}
		c.linger()
	}
}

// linger ends a connection after a GOAWAY: closed for writing, then read
// and dropped for a second at most, so that the client reads the GOAWAY
// rather than a reset (closing a socket with unread data resets it, and
// the reset drops what the client had not read yet).
func (c *conn) linger() {
	c.wmu.Lock()
	c.wclosed = true
	c.wmu.Unlock()
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.nc.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c.nc, 4<<20))
}

var errProtocol = errors.New("h2rpc: protocol error")

// protocolErr is a connection error of the client's: the reader sends
// GOAWAY with code and closes.
type protocolErr struct {
	code   http2.ErrCode
	reason string
}

func (e *protocolErr) Error() string {
	return fmt.Sprintf("h2rpc: %s (%v)", e.reason, e.code)
}
func (e *protocolErr) Unwrap() error { return errProtocol }

func (c *conn) handshake() error {
	cfg := &c.s.cfg
	deadline := time.Now().Add(cfg.HandshakeTimeout)
	c.nc.SetDeadline(deadline)
	if cfg.TLS != nil {
		tc := tls.Server(c.nc, cfg.TLS)
		if err := tc.Handshake(); err != nil {
			return err
		}
		if tc.ConnectionState().NegotiatedProtocol != "h2" {
			return errors.New("h2rpc: the client did not negotiate h2")
		}
		c.nc = tc
	}
	c.br = bufio.NewReaderSize(c.nc, 64<<10)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.br, preface); err != nil || string(preface) != http2.ClientPreface {
		return errors.New("h2rpc: no HTTP/2 client preface")
	}
	c.recvWindow.Store(int64(cfg.Window))
	c.wmu.Lock()
	// Set under wmu: write, from other goroutines, writes nothing
	// before the framer exists.
	c.bw = bufio.NewWriterSize(c.nc, 16<<10)
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.SetReuseFrames()
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = cfg.MaxHeaderBytes
	c.henc = hpack.NewEncoder(&c.hbuf)
	err := c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: cfg.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(cfg.Window)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: cfg.MaxHeaderBytes},
	)
	if err == nil && cfg.Window > 65535 {
		err = c.fr.WriteWindowUpdate(0, uint32(cfg.Window-65535))
	}
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	// The handshake's deadline stays until the client's SETTINGS, the
	// first frame it must send.
	return nil
}

// keepalive pings the connection when it has been silent for
// KeepaliveTime, and closes it when the ping is not answered (by any
// frame) within KeepaliveTimeout.
func (c *conn) keepalive() {
	cfg := &c.s.cfg
	seen, pinging := c.frames.Load(), false
	// Made idle and then armed, so that the callback, which re-arms it,
	// sees t assigned.
	var t *time.Timer
	t = time.AfterFunc(time.Hour, func() {
		if c.ctx.Err() != nil {
			return
		}
		n := c.frames.Load()
		switch {
		case n != seen:
			seen, pinging = n, false
			t.Reset(cfg.KeepaliveTime)
		case pinging:
			c.close()
		default:
			pinging = true
			c.write(func() error { return c.fr.WritePing(false, [8]byte{'v', 'e', 'n', 'e', 'u', 'r'}) })
			t.Reset(cfg.KeepaliveTimeout)
		}
	})
	t.Reset(cfg.KeepaliveTime)
	context.AfterFunc(c.ctx, func() { t.Stop() })
}

// write runs f, a write of frames, under the write lock, and flushes.
func (c *conn) write(f func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wclosed || c.fr == nil {
		return net.ErrClosed
	}
	// A client that stops reading cannot hold the calls that answer it
	// for long.
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	err := f()
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		c.wclosed = true
		c.nc.Close()
	}
	return err
}

// close closes the connection and ends every call's wait.
func (c *conn) close() {
	c.cancel()
	c.nc.Close()
	c.mu.Lock()
	streams := make([]*stream, 0, len(c.streams))
	for _, st := range c.streams {
		streams = append(streams, st)
	}
	c.mu.Unlock()
	for _, st := range streams {
		st.fail(errConnClosed)
	}
}

var (
	errFinished   = errors.New("h2rpc: the call ended")
	errConnClosed = status.Error(codes.Unavailable, "the connection closed")
	errReset      = status.Error(codes.Canceled, "the client reset the call")
)

// goAway tells the client to start no more calls, and closes the
// connection once its calls have ended.
func (c *conn) goAway() {
	c.mu.Lock()
	if c.goingAway {
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	last := c.lastID
	c.idle = make(chan struct{})
	idle := c.idle
	if c.running == 0 {
		close(idle)
	}
	c.mu.Unlock()
	c.write(func() error { return c.fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
	select {
	case <-idle:
	case <-c.ctx.Done():
	}
	c.close()
}

// readLoop reads frames until the connection ends or errs.
func (c *conn) readLoop() error {
	var controlRun, resetRun int
	var completed uint64 // c.completed when resetRun was last cleared
	// reset counts a stream refused or reset by the client; a call
	// completed since the last one clears the run.
	reset := func() {
		if n := c.completed.Load(); n != completed {
			completed, resetRun = n, 0
		}
		resetRun++
	}
	settled := false // the client's first SETTINGS arrived
	for {
		if settled {
			took, err := c.fastData()
			if err != nil {
				return err
			}
			if took {
				c.frames.Add(1)
				controlRun = 0
				c.flushDirty()
				continue
			}
		}
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				// A stream the client opened with a malformed header
				// block counts as opened (and is closed): its DATA is
				// then dropped, not a connection error.
				c.mu.Lock()
				if se.StreamID%2 == 1 && se.StreamID > c.lastID {
					c.lastID = se.StreamID
				}
				c.mu.Unlock()
				c.resetStream(se.StreamID, se.Code)
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.write(func() error { return c.fr.WriteGoAway(c.lastStreamID(), http2.ErrCode(ce), nil) })
			}
			return err
		}
		c.frames.Add(1)
		if !settled {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				return c.protocol(http2.ErrCodeProtocol, "the first frame is not SETTINGS")
			}
			settled = true
			c.nc.SetDeadline(time.Time{})
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			controlRun = 0
			if err := c.data(f); err != nil {
				return err
			}
		case *http2.MetaHeadersFrame:
			controlRun = 0
			refused, err := c.headers(f)
			if err != nil {
				return err
			}
			if refused {
				reset()
			}
		case *http2.SettingsFrame:
			controlRun++
			if err := c.settings(f); err != nil {
				return err
			}
		case *http2.PingFrame:
			controlRun++
			if !f.IsAck() {
				data := f.Data
				c.write(func() error { return c.fr.WritePing(true, data) })
			}
		case *http2.RSTStreamFrame:
			reset()
			c.clientReset(f.StreamID)
		case *http2.WindowUpdateFrame:
			// Responses are a few bytes, within any window.
			controlRun++
		case *http2.GoAwayFrame:
			go c.goAway()
		case *http2.PushPromiseFrame:
			return c.protocol(http2.ErrCodeProtocol, "PUSH_PROMISE from a client")
		default:
			// PRIORITY and unknown frame types: ignored.
			controlRun++
		}
		c.flushDirty()
		if controlRun > maxControlRun {
			return c.protocol(http2.ErrCodeEnhanceYourCalm, "too many control frames")
		}
		if resetRun > maxResetRun {
			return c.protocol(http2.ErrCodeEnhanceYourCalm, "too many streams reset or refused")
		}
	}
}

// flushDirty hands over the chunks gathered when the next read may wait:
// nothing is left buffered.
func (c *conn) flushDirty() {
	if len(c.dirty) == 0 || c.br.Buffered() > 0 {
		return
	}
	for i, st := range c.dirty {
		st.handOver(false)
		c.dirty[i] = nil
	}
	c.dirty = c.dirty[:0]
}

// maxFrameSize is SETTINGS_MAX_FRAME_SIZE, which the server leaves at its
// initial value.
const maxFrameSize = 16384

// fastData reads the next frame when it is what a call's messages
// usually come in: a DATA frame without padding, within the frame size,
// on an open stream and within the windows. Its payload goes from the
// read buffer straight to the stream's pending chunk. It reports false,
// having read nothing, for any other frame, which the framer then reads
// and checks (ReadFrame reads a header block whole, so that between two
// of its frames no frame can be in the middle of one).
func (c *conn) fastData() (bool, error) {
	h, err := c.br.Peek(9)
	if err != nil {
		return false, nil // the framer meets the error
	}
	n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	flags := http2.Flags(h[4])
	id := binary.BigEndian.Uint32(h[5:]) & (1<<31 - 1)
	if http2.FrameType(h[3]) != http2.FrameData || flags&^http2.FlagDataEndStream != 0 || n > maxFrameSize || id == 0 {
		return false, nil
	}
	st := c.last
	if st == nil || st.id != id {
		c.mu.Lock()
		st = c.streams[id]
		c.mu.Unlock()
		// Kept while its call runs and after: a call that ended gives
		// back the windows of what still comes (handOver).
		c.last = st
	}
	// Only the reader takes from the windows.
	if st == nil || c.recvWindow.Load() < int64(n) || st.recvWindow.Load() < int64(n) {
		return false, nil
	}
	c.br.Discard(9)
	c.recvWindow.Add(-int64(n))
	st.recvWindow.Add(-int64(n))
	if n > 0 {
		c.room(st, n)
		at := len(st.pending)
		st.pending = st.pending[:at+n]
		if _, err := io.ReadFull(c.br, st.pending[at:]); err != nil {
			st.pending = st.pending[:at]
			return false, err
		}
	}
	if end := flags&http2.FlagDataEndStream != 0; end || len(st.pending) >= chunkBytes {
		st.handOver(end)
	}
	return true, nil
}

// room makes room for n more bytes in st's pending chunk: it hands the
// chunk over when they would not fit, and takes a new one when there is
// none.
func (c *conn) room(st *stream, n int) {
	if st.pending != nil && len(st.pending)+n > cap(st.pending) {
		st.handOver(false)
	}
	if st.pending == nil {
		st.pending = (*chunkPool.Get().(*[]byte))[:0]
		c.dirty = append(c.dirty, st)
	}
}

// protocol ends the connection on the client's error: GOAWAY with code.
func (c *conn) protocol(code http2.ErrCode, reason string) error {
	c.write(func() error { return c.fr.WriteGoAway(c.lastStreamID(), code, []byte(reason)) })
	return &protocolErr{code: code, reason: reason}
}

func (c *conn) lastStreamID() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastID
}

func (c *conn) settings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	// The client's settings bound what the server sends: a response is a
	// HEADERS frame, a DATA frame of 5 bytes and a trailer, within every
	// frame size and window a client may set (at least 16 KiB and 0; a
	// window under 5 bytes leaves the response waiting, which the client
	// chose). Its header table size bounds the encoder's.
	if err := f.ForeachSetting(func(s http2.Setting) error {
		if s.ID == http2.SettingHeaderTableSize {
			c.wmu.Lock()
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
			c.wmu.Unlock()
		}
		return nil
	}); err != nil {
		return err
	}
	return c.write(func() error { return c.fr.WriteSettingsAck() })
}

// data takes a DATA frame: its payload goes to its call's pending chunk,
// handed over when the socket has nothing more buffered, when it is full,
// or at the end of the stream.
func (c *conn) data(f *http2.DataFrame) error {
	n := int64(f.Length)
	if c.recvWindow.Add(-n) < 0 {
		return c.protocol(http2.ErrCodeFlowControl, "DATA beyond the connection's window")
	}
	c.mu.Lock()
	st := c.streams[f.StreamID]
	known := f.StreamID <= c.lastID
	c.mu.Unlock()
	if st == nil {
		if !known {
			return c.protocol(http2.ErrCodeProtocol, "DATA on a stream never opened")
		}
		// A call that ended: its data is dropped, and the connection's
		// window given back.
		c.credit(nil, n)
		return nil
	}
	if st.recvWindow.Add(-n) < 0 {
		c.credit(nil, n)
		c.resetStream(st.id, http2.ErrCodeFlowControl)
		return nil
	}
	// Padding counts against the windows, and is consumed here.
	if pad := n - int64(len(f.Data())); pad > 0 {
		c.credit(st, pad)
	}
	if data := f.Data(); len(data) > 0 {
		c.room(st, len(data))
		st.pending = append(st.pending, data...)
	}
	if end := f.StreamEnded(); end || len(st.pending) >= chunkBytes {
		st.handOver(end)
		// Out of dirty: handOver of a stream without a pending chunk
		// hands over nothing.
	}
	return nil
}

// handOver gives the pending chunk to the call, with the end of the
// client's side when end is set.
func (st *stream) handOver(end bool) {
	chunk := st.pending
	st.pending = nil
	st.mu.Lock()
	took := st.err == nil
	if took {
		if len(chunk) > 0 {
			st.chunks = append(st.chunks, chunk)
		}
		st.eof = st.eof || end
	}
	st.mu.Unlock()
	if !took {
		// The call ended: what it will not read goes back to the
		// connection's window.
		st.c.credit(nil, int64(len(chunk)))
		putChunk(chunk)
		return
	}
	select {
	case st.signal <- struct{}{}:
	default:
	}
}

// fail ends the call's wait for data with err.
func (st *stream) fail(err error) {
	st.mu.Lock()
	if st.err == nil {
		st.err = err
	}
	st.mu.Unlock()
	select {
	case st.signal <- struct{}{}:
	default:
	}
}

// credit gives back n bytes consumed: to the connection's window, and to
// the stream's when st is not nil. WINDOW_UPDATEs go out once a quarter
// of a window is owed, so that a steady stream costs one per 256 KiB.
func (c *conn) credit(st *stream, n int64) {
	if n <= 0 {
		return
	}
	var connIncr, streamIncr uint32
	w := int64(c.s.cfg.Window)
	c.mu.Lock()
	c.owedConn += n
	if c.owedConn >= w/4 {
		connIncr, c.owedConn = uint32(c.owedConn), 0
	}
	if st != nil && !st.finished {
		st.owed += n
		if st.owed >= w/4 {
			streamIncr, st.owed = uint32(st.owed), 0
		}
	}
	c.mu.Unlock()
	if connIncr > 0 {
		c.recvWindow.Add(int64(connIncr))
	}
	if streamIncr > 0 {
		st.recvWindow.Add(int64(streamIncr))
	}
	if connIncr > 0 || streamIncr > 0 {
		c.write(func() error {
			if connIncr > 0 {
				if err := c.fr.WriteWindowUpdate(0, connIncr); err != nil {
					return err
				}
			}
			if streamIncr > 0 {
				return c.fr.WriteWindowUpdate(st.id, streamIncr)
			}
			return nil
		})
	}
}

// headers opens a stream and starts its call, or refuses it; refused
// reports a stream refused.
func (c *conn) headers(f *http2.MetaHeadersFrame) (refused bool, err error) {
	id := f.StreamID
	c.mu.Lock()
	if id <= c.lastID {
		_, open := c.streams[id]
		c.mu.Unlock()
		if open {
			// Trailers from the client: gRPC requests have none.
			return false, c.protocol(http2.ErrCodeProtocol, "a second HEADERS on a stream")
		}
		return false, c.protocol(http2.ErrCodeProtocol, "a stream id not above the last one")
	}
	c.lastID = id
	if c.goingAway {
		c.mu.Unlock()
		c.resetStream(id, http2.ErrCodeRefusedStream)
		return true, nil
	}
	if uint32(len(c.streams)) >= c.s.cfg.MaxConcurrentStreams {
		c.mu.Unlock()
		c.resetStream(id, http2.ErrCodeRefusedStream)
		return true, nil
	}
	st := &stream{c: c, id: id, signal: make(chan struct{}, 1)}
	st.recvWindow.Store(int64(c.s.cfg.Window))
	c.streams[id] = st
	c.running++
	c.mu.Unlock()

	call := &Call{st: st}
	var md metadata.MD
	var method, path, contentType, encoding, timeout string
	for _, hf := range f.Fields {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":path":
			path = hf.Value
		case "content-type":
			contentType = hf.Value
		case "grpc-encoding":
			encoding = hf.Value
		case "grpc-timeout":
			timeout = hf.Value
		default:
			if strings.HasPrefix(hf.Name, ":") || strings.HasPrefix(hf.Name, "grpc-") || hf.Name == "te" {
				continue
			}
			if md == nil {
				md = metadata.MD{}
			}
			md[hf.Name] = append(md[hf.Name], hf.Value)
		}
	}
	var early error // answered before the handler runs
	handler := c.s.methods[path]
	switch {
	case method != "POST":
		early = status.Errorf(codes.Unimplemented, "method %q, want POST", method)
	case contentType != "application/grpc" && !strings.HasPrefix(contentType, "application/grpc+") && !strings.HasPrefix(contentType, "application/grpc;"):
		early = status.Errorf(codes.Unimplemented, "content-type %q, want application/grpc", contentType)
	case encoding != "" && encoding != "identity":
		early = status.Errorf(codes.Unimplemented, "grpc-encoding %q is not supported; send uncompressed messages", encoding)
	case handler == nil:
		early = status.Errorf(codes.Unimplemented, "unknown method %s", path)
	}
	ctx, cancel := c.ctx, context.CancelFunc(func() {})
	if timeout != "" {
		if d, ok := parseTimeout(timeout); ok {
			ctx, cancel = context.WithTimeout(ctx, d)
		} else if early == nil {
			early = status.Errorf(codes.InvalidArgument, "malformed grpc-timeout %q", timeout)
		}
	}
	if md != nil {
		ctx = metadata.NewIncomingContext(ctx, md)
	}
	call.ctx = ctx
	if f.StreamEnded() {
		st.eof = true
	}
	go c.run(call, handler, early, cancel)
	return false, nil
}

// run runs a call's handler and writes its answer.
func (c *conn) run(call *Call, handler Handler, early error, cancel context.CancelFunc) {
	if g := c.s.cfg.Guard; g != nil {
		defer g()
	}
	st := call.st
	closed := false
	defer func() {
		cancel()
		if !closed {
			// The handler panicked: the call gets no answer.
			c.closeStream(st)
			c.resetStream(st.id, http2.ErrCodeInternal)
		}
		c.endCall()
	}()
	var (
		resp    []byte
		trailer metadata.MD
		err     = early
	)
	if err == nil {
		resp, trailer, err = handler(call)
	}
	call.release()
	// Closed before the answer goes out: a client that reads it may open
	// its next stream at once, and this one no longer counts against
	// MaxConcurrentStreams.
	clientDone := c.closeStream(st)
	closed = true
	c.answer(st, resp, trailer, err)
	if !clientDone {
		// The client may still be sending: tell it to stop.
		c.resetStream(st.id, http2.ErrCodeNo)
	}
}

// closeStream forgets the stream of a call whose handler returned, giving
// back the connection's window for what it left unread (and, through
// handOver, for what still comes), and reports whether the client had
// ended its side.
func (c *conn) closeStream(st *stream) (clientDone bool) {
	st.mu.Lock()
	if st.err == nil {
		st.err = errFinished // handOver gives back what comes later
	}
	left := int64(0)
	for _, ch := range st.chunks {
		left += int64(len(ch))
		putChunk(ch)
	}
	st.chunks = nil
	clientDone = st.eof
	if clientDone && st.err == errFinished {
		c.completed.Add(1)
	}
	st.mu.Unlock()
	c.credit(nil, left)
	c.mu.Lock()
	st.finished = true
	delete(c.streams, st.id)
	c.mu.Unlock()
	return clientDone
}

// endCall counts a call's end once its answer was written; the last one
// after a GOAWAY lets the connection close.
func (c *conn) endCall() {
	c.mu.Lock()
	c.running--
	idle := c.idle
	done := c.running == 0 && idle != nil
	c.mu.Unlock()
	if done {
		select {
		case <-idle:
		default:
			close(idle)
		}
	}
}

// answer writes the response to st: headers, the message and the trailer
// with the status when err is nil; the headers and status alone
// otherwise.
func (c *conn) answer(st *stream, resp []byte, trailer metadata.MD, err error) {
	sts := status.Convert(err)
	c.write(func() error {
		ok := sts.Code() == codes.OK
		head := c.encode(func(e func(name, value string)) {
			e(":status", "200")
			e("content-type", "application/grpc")
			if !ok {
				c.encodeStatus(e, sts, trailer)
			}
		})
		if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: head, EndHeaders: true, EndStream: !ok}); err != nil {
			return err
		}
		if !ok {
			return nil
		}
		msg := make([]byte, 5+len(resp))
		msg[1], msg[2], msg[3], msg[4] = byte(len(resp)>>24), byte(len(resp)>>16), byte(len(resp)>>8), byte(len(resp))
		copy(msg[5:], resp)
		if err := c.fr.WriteData(st.id, false, msg); err != nil {
			return err
		}
		tail := c.encode(func(e func(name, value string)) { c.encodeStatus(e, sts, trailer) })
		return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: tail, EndHeaders: true, EndStream: true})
	})
}

// encodeStatus encodes the status and the trailer metadata.
func (c *conn) encodeStatus(e func(name, value string), sts *status.Status, trailer metadata.MD) {
	e("grpc-status", strconv.Itoa(int(sts.Code())))
	if m := sts.Message(); m != "" {
		e("grpc-message", percentEncode(m))
	}
	for k, vs := range trailer {
		for _, v := range vs {
			e(k, v)
		}
	}
}

// encode returns a header block of the fields add adds. The block is
// valid until the next encode (under wmu).
func (c *conn) encode(add func(e func(name, value string))) []byte {
	c.hbuf.Reset()
	add(func(name, value string) {
		c.henc.WriteField(hpack.HeaderField{Name: strings.ToLower(name), Value: value})
	})
	// A header block larger than a frame (16 KiB) would need
	// CONTINUATION frames; trailers are bounded far below.
	return []byte(c.hbuf.String())
}

// resetStream resets a stream (RST_STREAM with code) and ends its call;
// the stream is closed at once, as for clientReset.
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	st := c.streams[id]
	delete(c.streams, id)
	c.mu.Unlock()
	if st != nil && code != http2.ErrCodeNo {
		st.fail(status.Errorf(codes.Internal, "stream reset: %v", code))
	}
	c.write(func() error { return c.fr.WriteRSTStream(id, code) })
}

// clientReset ends the call of a stream the client reset. The stream is
// closed at once, counting no more against MaxConcurrentStreams (the
// client may open the next one now), while its handler finishes.
func (c *conn) clientReset(id uint32) {
	c.mu.Lock()
	st := c.streams[id]
	delete(c.streams, id)
	c.mu.Unlock()
	if st != nil {
		st.fail(errReset)
	}
}

func putChunk(b []byte) {
	if cap(b) == chunkBytes {
		b = b[:0]
		chunkPool.Put(&b)
	}
}

// Call is one call in progress: its context (with the request's metadata
// and deadline) and its messages.
type Call struct {
	st  *stream
	ctx context.Context
	// wait is the context Recv waits under: ctx, or one SetContext gave.
	wait context.Context

	chunk []byte // the chunk being split; its start is buf's
	buf   []byte // what is left of chunk
	held  []byte // a message that spans chunks, as far as received
	owed  int64  // bytes consumed and not yet credited
}

// Context is the call's context: it carries the request's metadata
// (metadata.FromIncomingContext) and ends at the client's deadline
// (grpc-timeout), or when the connection ends.
func (c *Call) Context() context.Context { return c.ctx }

// SetContext makes Recv wait under ctx, which should be derived from
// Context: a handler's own deadline for the call, or a cancel of its own.
func (c *Call) SetContext(ctx context.Context) { c.wait = ctx }

// Pending reports whether the next Recv returns without waiting for the
// client: the call holds bytes not yet returned, or the client ended its
// side. A handler that works in parts finishes one when nothing is
// pending.
func (c *Call) Pending() bool {
	if len(c.buf) > 0 {
		return true
	}
	st := c.st
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.chunks) > 0 || st.eof || st.err != nil
}

// Recv returns the bytes of the next message, valid until the next Recv.
// It returns io.EOF once the client ended its side after whole messages;
// a status error (of grpc's status package) when the call's context ends
// (DeadlineExceeded, Canceled), the client reset the stream or the
// connection ended (Canceled, Unavailable), a message is larger than
// MaxMessageBytes (ResourceExhausted), compressed (Internal), or the
// client's side ended within a message (Internal).
func (c *Call) Recv() ([]byte, error) {
	for {
		if msg, ok, err := c.next(); ok || err != nil {
			return msg, err
		}
		if err := c.refill(); err != nil {
			return nil, err
		}
	}
}

// next splits the next message off buf; ok is false when buf holds no
// whole one (what it has is then gathered into held).
func (c *Call) next() (msg []byte, ok bool, err error) {
	limit := c.st.c.s.cfg.MaxMessageBytes
	if len(c.held) == 0 && len(c.buf) >= 5 {
		if err := checkHeader(c.buf, limit); err != nil {
			return nil, false, err
		}
		if size := msgSize(c.buf); len(c.buf) >= 5+size {
			msg = c.buf[5 : 5+size : 5+size]
			c.consume(5 + size)
			return msg, true, nil
		}
	}
	// A message that spans chunks: gathered into held.
	if len(c.held) < 5 {
		k := min(5-len(c.held), len(c.buf))
		c.held = append(c.held, c.buf[:k]...)
		c.consume(k)
		if len(c.held) < 5 {
			return nil, false, nil
		}
		if err := checkHeader(c.held, limit); err != nil {
			return nil, false, err
		}
	}
	size := msgSize(c.held)
	k := min(5+size-len(c.held), len(c.buf))
	c.held = append(c.held, c.buf[:k]...)
	c.consume(k)
	if len(c.held) < 5+size {
		return nil, false, nil
	}
	msg = c.held[5:]
	c.held = c.held[:0]
	return msg, true, nil
}

// msgSize is the size a message's prefix h announces.
func msgSize(h []byte) int {
	return int(uint32(h[1])<<24 | uint32(h[2])<<16 | uint32(h[3])<<8 | uint32(h[4]))
}

// checkHeader checks a message's 5-byte prefix.
func checkHeader(h []byte, limit int) error {
	if h[0] != 0 {
		return status.Error(codes.Internal, "a compressed message without grpc-encoding")
	}
	if size := msgSize(h); size > limit {
		return status.Errorf(codes.ResourceExhausted, "a message of %d bytes, above the limit of %d", size, limit)
	}
	return nil
}

func (c *Call) consume(n int) {
	c.buf = c.buf[n:]
	c.owed += int64(n)
}

// refill gives back the chunk split, and waits for the next one.
func (c *Call) refill() error {
	st := c.st
	if c.chunk != nil {
		putChunk(c.chunk)
		c.chunk, c.buf = nil, nil
	}
	if c.owed > 0 {
		st.c.credit(st, c.owed)
		c.owed = 0
	}
	for {
		st.mu.Lock()
		if len(st.chunks) > 0 {
			c.chunk = st.chunks[0]
			st.chunks[0] = nil
			st.chunks = st.chunks[1:]
			st.mu.Unlock()
			c.buf = c.chunk
			return nil
		}
		eof, err := st.eof, st.err
		st.mu.Unlock()
		switch {
		case err != nil:
			return err
		case eof && len(c.held) > 0:
			return status.Error(codes.Internal, "the request ended within a message")
		case eof:
			return io.EOF
		}
		wait := c.wait
		if wait == nil {
			wait = c.ctx
		}
		select {
		case <-st.signal:
		case <-wait.Done():
			return status.FromContextError(wait.Err()).Err()
		}
	}
}

// release gives back what the call holds once its handler returned.
func (c *Call) release() {
	if c.chunk != nil {
		putChunk(c.chunk)
		c.chunk, c.buf = nil, nil
	}
	if c.owed > 0 {
		c.st.c.credit(nil, c.owed)
		c.owed = 0
	}
}

// parseTimeout parses a grpc-timeout value: at most 8 digits and a unit.
func parseTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	n, err := strconv.ParseUint(s[:len(s)-1], 10, 64)
	if err != nil {
		return 0, false
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > uint64(1<<63-1)/uint64(unit) {
		return 1<<63 - 1, true
	}
	return time.Duration(n) * unit, true
}

// percentEncode encodes a grpc-message: bytes outside printable ASCII, and
// '%', as %XX.
func percentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch >= ' ' && ch <= '~' && ch != '%' {
			b.WriteByte(ch)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", ch)
	}
	return b.String()
}
