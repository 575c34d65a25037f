// Command veneur runs the veneur DogStatsD aggregation daemon.
//
//	veneur -f config.yaml            run
//	veneur -f config.yaml -validate  check the config and exit (warnings on stderr)
//	veneur -f config.yaml -takeover  run beside the veneur it replaces
//
// Sockets passed by systemd socket activation (LISTEN_PID, LISTEN_FDS,
// LISTEN_FDNAMES) or einhorn serve the addresses that name them
// (systemd:NAME, einhorn@N); docs/deployment.md has the recipes.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur"
	"github.com/veneur/veneur/listen"
)

func main() {
	// veneur's live heap is its series, kept from one interval to the
	// next with what their flushes reuse, and a flush allocates little
	// beyond its compressed bodies (about 3 MB at 100,000 series): a heap
	// goal of 1.25x live rather than Go's default 2x keeps the resident
	// size of a host with 100,000 series under 100 MiB at 50,000 lines/s
	// for a GC cycle every few intervals. GOGC in the environment still
	// wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process exit, so tests can drive it. It returns
// the exit code: 0 on a clean shutdown or a valid config, 1 on a bad config
// or start-up failure, 2 on bad usage.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("veneur", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("f", "", "path to the YAML config file (required)")
	validate := fs.Bool("validate", false, "check the config file and exit: 0 if valid, 1 if not")
	version := fs.Bool("version", false, "print the version and exit")
	takeover := fs.Bool("takeover", false, "bind host:port addresses even though another veneur holds them (SO_REUSEPORT): start the new veneur with it, then stop the old one, and no datagram is lost")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, veneur.VERSION)
		return 0
	}
	if *path == "" {
		fmt.Fprintln(stderr, "veneur: -f CONFIG is required, e.g. veneur -f example.yaml")
		fs.Usage()
		return 2
	}
	cfg, err := veneur.ReadConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "veneur: invalid config: %v\n", err)
		return 1
	}
	log := logrus.New()
	log.SetOutput(stderr)
	if cfg.Debug {
		log.SetLevel(logrus.DebugLevel)
	}
	// Building the server validates what the config file alone cannot
	// show: each sink checks its own keys. It binds and starts nothing.
	inherited := listen.InheritedFromEnv(os.Getenv, os.Getpid(), os.Getppid())
	// As sd_listen_fds(3) does with unset_environment: the sockets are
	// this process's, not its children's.
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	srv, err := veneur.NewFromConfig(cfg, veneur.Options{Log: log, Stdout: stdout, Inherited: inherited, Takeover: *takeover})
	if err != nil {
		fmt.Fprintf(stderr, "veneur: invalid config: %v\n", err)
		return 1
	}
	warnings := cfg.Warnings()
	if *validate {
		for _, w := range warnings {
			fmt.Fprintf(stderr, "veneur: warning: %s\n", w)
		}
		switch len(warnings) {
		case 0:
			fmt.Fprintf(stdout, "%s: valid\n", *path)
		case 1:
			fmt.Fprintf(stdout, "%s: valid, with 1 warning\n", *path)
		default:
			fmt.Fprintf(stdout, "%s: valid, with %d warnings\n", *path, len(warnings))
		}
		return 0
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := srv.Start(); err != nil {
		fmt.Fprintf(stderr, "veneur: start-up failed: %v\n", err)
		return 1
	}
	log.WithFields(logrus.Fields{
		"version":  veneur.VERSION,
		"udp":      addrString(srv.UDPAddr()),
		"tcp":      addrString(srv.TCPAddr()),
		"unixgram": addrString(srv.UnixDatagramAddr()),
		"unix":     addrString(srv.UnixStreamAddr()),
		"ssf":      addrString(srv.TraceAddr()),
		"http":     addrString(srv.HTTPAddr()),
		"grpc":     addrString(srv.GRPCAddr()),
		"interval": cfg.Interval,
		"workers":  cfg.NumWorkers,
		"readers":  cfg.NumReaders,
	}).Info("veneur started")

	sig := <-sigs
	log.WithField("signal", sig.String()).Info("shutting down: draining sockets and flushing")
	// Shutdown bounds the delivery of what is still spooled by
	// shutdown_timeout itself; this outer bound only guards against a
	// part that does not stop (a listener's drain takes 2 s at most).
	timeout, _ := cfg.ParseShutdownTimeout()
	interval, _ := cfg.ParseInterval()
	budget := timeout + interval + 5*time.Second
	if cfg.EtcdAdvertiseAddress != "" {
		// A member of the global tier first leaves it: it imports and
		// flushes for up to three more intervals (see Server.Shutdown).
		budget += 3 * interval
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.WithError(err).Error("shutdown was not clean")
		return 1
	}
	log.Info("veneur stopped")
	return 0
}

func addrString(a interface{ String() string }) string {
	if a == nil {
		return ""
	}
	return a.String()
}
