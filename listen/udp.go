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

// UDPConfig are the settings of the DogStatsD UDP listener.
type UDPConfig struct {
	// Address is udp_address, host:port.
	Address string
	// Readers is num_readers: how many sockets, each with its own reader
	// goroutine, share the address. Above 1 they share it with
	// SO_REUSEPORT, and later sockets join the port the first one got.
	Readers int
	// ReadBuffer is read_buffer_size_bytes, the receive buffer requested
	// for each socket.
	ReadBuffer int
	// MaxLength is metric_max_length; receive buffers are one byte longer,
	// so that a longer datagram shows as truncated.
	MaxLength int
}

// UDP is the DogStatsD UDP listener: Readers sockets on one address, each
// read by its own goroutine with its own Ingester (see udpSocket for how a
// reader waits).
type UDP struct {
	cfg         UDPConfig
	newIngester NewIngester
	opts        Options
	log         *logrus.Logger
	// singleP selects the readers' single-P mode (see udpSocket): set when
	// GOMAXPROCS is 1 at NewUDP.
	singleP bool

	life     stopper
	socks    []*udpSocket
	addr     atomic.Pointer[net.Addr]
	stopping atomic.Bool
	readers  sync.WaitGroup
	readErrs atomic.Uint64
}

var _ Listener = (*UDP)(nil)

// NewUDP returns a UDP listener on cfg. It binds nothing.
func NewUDP(cfg UDPConfig, newIngester NewIngester, opts Options) (*UDP, error) {
	if err := checkConfig("udp", cfg.Address, cfg.MaxLength, newIngester); err != nil {
		return nil, err
	}
	if cfg.Readers < 1 {
		return nil, fmt.Errorf("udp listener: %d readers, want at least 1", cfg.Readers)
	}
	return &UDP{
		cfg:         cfg,
		newIngester: newIngester,
		opts:        opts,
		log:         opts.logger(),
		singleP:     runtime.GOMAXPROCS(0) == 1,
	}, nil
}

// Start binds the sockets and starts one reader goroutine per socket.
func (u *UDP) Start() error {
	return u.life.start("udp", func() error {
		if err := u.bind(); err != nil {
			for _, s := range u.socks {
				s.Close()
			}
			u.socks = nil
			u.addr.Store(nil)
			return err
		}
		if readersKeepP && !u.singleP {
			reserveReaderProcs(u.log, len(u.socks), os.Getenv("GOMAXPROCS"))
		}
		size := u.cfg.MaxLength + 1
		for _, sock := range u.socks {
			in := u.newIngester()
			u.readers.Add(1)
			go func() {
				defer u.readers.Done()
				defer u.opts.guard()()
				if err := readUDP(sock, in, size, u.stopping.Load, &u.readErrs); err != nil {
					u.log.WithError(err).Error("UDP reader stopped")
				}
			}()
		}
		return nil
	})
}

func (u *UDP) bind() error {
	addr := u.cfg.Address
	reuse := u.cfg.Readers > 1
	for i := 0; i < u.cfg.Readers; i++ {
		sock, granted, err := listenUDP(addr, reuse, u.cfg.ReadBuffer, u.singleP)
		if err != nil {
			return fmt.Errorf("udp_address %q: %w", u.cfg.Address, err)
		}
		if granted < u.cfg.ReadBuffer && i == 0 {
			u.log.WithFields(logrus.Fields{"requested": u.cfg.ReadBuffer, "granted": granted}).Warn(
				"the kernel granted a smaller UDP receive buffer than read_buffer_size_bytes; raise net.core.rmem_max to avoid drops")
		}
		u.socks = append(u.socks, sock)
		if i == 0 {
			a := sock.LocalAddr()
			u.addr.Store(&a)
		}
		// Later sockets join the port the first one got (which matters
		// when the address asked for port 0).
		addr = sock.LocalAddr().String()
	}
	return nil
}

// Stop sets the stop flag and wakes the readers, which drain what the
// kernel still holds into their ingesters and return; then it closes the
// sockets. If ctx ends first, Stop returns its error and the sockets are
// closed once the readers return.
func (u *UDP) Stop(ctx context.Context) error {
	return u.life.stop(ctx, "udp", func(done chan<- struct{}) {
		u.stopping.Store(true)
		for _, s := range u.socks {
			s.wake()
		}
		go func() {
			defer close(done)
			defer u.opts.guard()()
			u.readers.Wait()
			for _, s := range u.socks {
				s.Close()
			}
		}()
	})
}

// Addr is the first socket's bound address, nil before Start.
func (u *UDP) Addr() net.Addr {
	if a := u.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Report sends packet.read_error_total, the failed socket reads.
func (u *UDP) Report(stats statsd.ClientInterface) {
	if n := u.readErrs.Swap(0); n > 0 {
		stats.Count("packet.read_error_total", int64(n), nil, 1)
	}
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
