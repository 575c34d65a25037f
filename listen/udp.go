package listen

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/DataDog/datadog-go/v5/statsd"
	"github.com/sirupsen/logrus"
)

// DefaultMaxDatagram is the default max_datagram_bytes: every UDP
// datagram fits (their payload is at most 65,507 bytes over IPv4 and
// 65,527 over IPv6), and so do the 8,192-byte datagrams of DogStatsD
// clients' unix socket modes. Each reader receives into 32 buffers of
// this size, 2 MiB of virtual memory, of which only the pages datagrams
// touch become resident.
const DefaultMaxDatagram = 65536

// UDPConfig are the settings of the DogStatsD UDP listener.
type UDPConfig struct {
	// Address is udp_address: host:port, or an inherited socket (fd@N,
	// einhorn@N, systemd:NAME).
	Address string
	// Readers is num_readers: how many sockets, each with its own reader
	// goroutine, share the address. Above 1 they share it with
	// SO_REUSEPORT, and later sockets join the port the first one got.
	// Readers of an inherited socket share that one socket.
	Readers int
	// ReadBuffer is read_buffer_size_bytes, the receive buffer requested
	// for each socket.
	ReadBuffer int
	// MaxDatagram is max_datagram_bytes, the size of each receive buffer:
	// a longer datagram is cut there and arrives marked truncated. 0
	// means DefaultMaxDatagram.
	MaxDatagram int
}

// UnixDatagramConfig are the settings of the DogStatsD unix datagram
// listener: one datagram is one DogStatsD packet, as over UDP.
type UnixDatagramConfig struct {
	// Address is unix_datagram_address: a socket path, or an inherited
	// socket. A path is bound as Options.Bind says (stale file replaced,
	// unix_socket_mode, removed at stop).
	Address string
	// ReadBuffer is read_buffer_size_bytes, the receive buffer requested
	// for the socket.
	ReadBuffer int
	// MaxDatagram is max_datagram_bytes, as for UDP.
	MaxDatagram int
}

// UDP is the DogStatsD UDP listener: Readers sockets on one address, each
// read by its own goroutine with its own Ingester (see udpSocket for how a
// reader waits).
type UDP struct{ *datagram }

// UnixDatagram is the DogStatsD unix datagram listener: one socket and one
// reader, which works as a UDP reader does.
type UnixDatagram struct{ *datagram }

var (
	_ Listener = (*UDP)(nil)
	_ Listener = (*UnixDatagram)(nil)
)

// datagram is a datagram listener: UDP or unix.
type datagram struct {
	// name names the listener in errors; key is its config key.
	name, key   string
	kind        sockKind
	address     string
	readers     int
	readBuffer  int
	maxDatagram int
	newIngester NewIngester
	opts        Options
	log         *logrus.Logger
	// singleP selects the readers' single-P mode (see udpSocket): set when
	// GOMAXPROCS is 1 when the listener is built.
	singleP bool

	life     stopper
	socks    []*udpSocket
	addr     atomic.Pointer[net.Addr]
	stopping atomic.Bool
	readerWG sync.WaitGroup
	readErrs atomic.Uint64
	// gaps are the readers' gaps (see readerGaps), one per reader, set by
	// Start.
	gaps atomic.Pointer[[]*readerGaps]
}

// NewUDP returns a UDP listener on cfg. It binds nothing.
func NewUDP(cfg UDPConfig, newIngester NewIngester, opts Options) (*UDP, error) {
	if cfg.Readers < 1 {
		return nil, fmt.Errorf("udp listener: %d readers, want at least 1", cfg.Readers)
	}
	d, err := newDatagram("udp", "udp_address", kindUDP, cfg.Address, cfg.Readers, cfg.ReadBuffer, cfg.MaxDatagram, newIngester, opts)
	if err != nil {
		return nil, err
	}
	return &UDP{d}, nil
}

// NewUnixDatagram returns a unix datagram listener on cfg. It binds
// nothing.
func NewUnixDatagram(cfg UnixDatagramConfig, newIngester NewIngester, opts Options) (*UnixDatagram, error) {
	d, err := newDatagram("unix datagram", "unix_datagram_address", kindUnixgram, cfg.Address, 1, cfg.ReadBuffer, cfg.MaxDatagram, newIngester, opts)
	if err != nil {
		return nil, err
	}
	return &UnixDatagram{d}, nil
}

func newDatagram(name, key string, kind sockKind, address string, readers, readBuffer, maxDatagram int, newIngester NewIngester, opts Options) (*datagram, error) {
	if maxDatagram == 0 {
		maxDatagram = DefaultMaxDatagram
	}
	if err := checkConfig(name, address, maxDatagram, newIngester); err != nil {
		return nil, err
	}
	return &datagram{
		name: name, key: key, kind: kind, address: address,
		readers: readers, readBuffer: readBuffer, maxDatagram: maxDatagram,
		newIngester: newIngester,
		opts:        opts,
		log:         opts.logger(),
		singleP:     runtime.GOMAXPROCS(0) == 1,
	}, nil
}

// Start binds the sockets and starts one reader goroutine per socket.
func (u *datagram) Start() error {
	return u.life.start(u.name, func() error {
		if err := u.bind(); err != nil {
			for _, s := range u.socks {
				s.Close()
			}
			u.socks = nil
			u.addr.Store(nil)
			return err
		}
		if readersKeepP && !u.singleP {
			reserveReaderProcs(u.log, max(len(u.socks), u.opts.DatagramReaders), os.Getenv("GOMAXPROCS"))
		}
		gaps := make([]*readerGaps, len(u.socks))
		for i := range gaps {
			gaps[i] = new(readerGaps)
		}
		u.gaps.Store(&gaps)
		for i, sock := range u.socks {
			in := u.newIngester()
			u.readerWG.Add(1)
			go func() {
				defer u.readerWG.Done()
				defer u.opts.guard()()
				if err := readUDP(sock, in, u.maxDatagram, u.stopping.Load, &u.readErrs, gaps[i]); err != nil {
					u.log.WithError(err).WithField("listener", u.name).Error("datagram reader stopped")
				}
			}()
		}
		return nil
	})
}

// bind binds the first socket and, for more readers, joins its port with
// SO_REUSEPORT; readers of an inherited socket, or of a unix one, share it.
func (u *datagram) bind() error {
	first, err := u.opts.Bind.packet(u.key, u.address, u.kind, false)
	if err != nil {
		return err
	}
	pcs := []*packetConn{first}
	for i := 1; i < u.readers; i++ {
		var pc *packetConn
		if first.inherited || u.kind.family == familyUnix {
			pc, err = dupPacketConn(first)
		} else {
			pc, err = u.opts.Bind.packet(u.key, first.conn.LocalAddr().String(), u.kind, true)
		}
		if err != nil {
			for _, pc := range pcs {
				pc.conn.Close()
			}
			first.file.remove()
			return fmt.Errorf("%s %q: %w", u.key, u.address, err)
		}
		pcs = append(pcs, pc)
	}
	for i, pc := range pcs {
		sock, granted, err := newDatagramSocket(pc, u.readBuffer, u.singleP)
		if err != nil {
			for _, pc := range pcs[i+1:] {
				pc.conn.Close()
			}
			return fmt.Errorf("%s %q: %w", u.key, u.address, err)
		}
		if granted < u.readBuffer && i == 0 {
			u.log.WithFields(logrus.Fields{"listener": u.name, "requested": u.readBuffer, "granted": granted}).Warn(
				"the kernel granted a smaller receive buffer than read_buffer_size_bytes; raise net.core.rmem_max to avoid drops")
		}
		u.socks = append(u.socks, sock)
		if i == 0 {
			a := sock.LocalAddr()
			u.addr.Store(&a)
		}
	}
	return nil
}

// Stop sets the stop flag, stops the sockets this process bound from
// taking new datagrams (see udpSocket.closeDoor) and wakes the readers,
// which drain what the kernel still holds into their ingesters and
// return; then it closes the sockets. If ctx ends first, Stop returns its
// error and the sockets are closed once the readers return.
func (u *datagram) Stop(ctx context.Context) error {
	return u.life.stop(ctx, u.name, func(done chan<- struct{}) {
		u.stopping.Store(true)
		for _, s := range u.socks {
			s.closeDoor()
		}
		for _, s := range u.socks {
			s.wake()
		}
		go func() {
			defer close(done)
			defer u.opts.guard()()
			u.readerWG.Wait()
			for _, s := range u.socks {
				s.Close()
			}
		}()
	})
}

// Addr is the first socket's bound address, nil before Start.
func (u *datagram) Addr() net.Addr {
	if a := u.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Report sends packet.read_error_total, the failed socket reads, and the
// readers' gaps since the last Report: listen.reader_gap_max_ns and
// listen.reader_gap_total (see readerGaps).
func (u *datagram) Report(stats statsd.ClientInterface) {
	if n := u.readErrs.Swap(0); n > 0 {
		stats.Count("packet.read_error_total", int64(n), nil, 1)
	}
	var r gapReport
	if gaps := u.gaps.Load(); gaps != nil {
		for _, g := range *gaps {
			r.take(g)
		}
	}
	r.send(stats)
}

// dupPacketConn returns another socket of the runtime's on the socket of
// pc, for another reader of it.
func dupPacketConn(pc *packetConn) (*packetConn, error) {
	fc, ok := pc.conn.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("cannot share a socket of type %T", pc.conn)
	}
	f, err := fc.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, err
	}
	return &packetConn{conn: c.(sysPacketConn), inherited: pc.inherited, file: pc.file}, nil
}

// reserveReaderProcs makes GOMAXPROCS at least readers+1, since each busy
// reader keeps a P while it waits (see udpSocket) and the workers, the
// flusher and the HTTP server need one more. A GOMAXPROCS the operator set
// in the environment (env, the variable's value) is never overridden: it
// is left alone with a warning. It returns the value before and after.
func reserveReaderProcs(log *logrus.Logger, readers int, env string) (before, after int) {
	want := readers + 1
	before = runtime.GOMAXPROCS(0)
	if before >= want {
		return before, before
	}
	if env != "" {
		log.WithFields(logrus.Fields{"gomaxprocs": before, "wanted": want, "readers": readers}).Warn(
			"GOMAXPROCS is set in the environment below num_readers + 1: each busy UDP reader keeps a P, so the readers may starve each other and the workers; set GOMAXPROCS to at least the wanted value, or unset it")
		return before, before
	}
	runtime.GOMAXPROCS(want)
	log.WithFields(logrus.Fields{"from": before, "to": want}).Info(
		"raised GOMAXPROCS: each UDP reader keeps a P while busy, and the workers need one more")
	return before, want
}
