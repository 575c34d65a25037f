// Command veneur-proxy routes the forwards of locals that send to one
// address over a tier of global veneur instances: each series to the
// global that owns it (see the proxy package).
//
//	veneur-proxy -f proxy.yaml            run
//	veneur-proxy -f proxy.yaml -validate  check the config and exit
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veneur/veneur"
	"github.com/veneur/veneur/listen"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process exit, so tests can drive it. It returns
// the exit code: 0 on a clean shutdown or a valid config, 1 on a bad
// config or start-up failure, 2 on bad usage.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("veneur-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("f", "", "path to the YAML config file (required)")
	validate := fs.Bool("validate", false, "check the config file and exit: 0 if valid, 1 if not")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, veneur.VERSION)
		return 0
	}
	if *path == "" {
		fmt.Fprintln(stderr, "veneur-proxy: -f CONFIG is required, e.g. veneur-proxy -f proxy.yaml")
		fs.Usage()
		return 2
	}
	cfg, err := veneur.ReadProxyConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "veneur-proxy: invalid config: %v\n", err)
		return 1
	}
	log := logrus.New()
	log.SetOutput(stderr)
	if cfg.Debug {
		log.SetLevel(logrus.DebugLevel)
	}
	// Sockets passed by systemd socket activation or einhorn serve the
	// addresses that name them (systemd:NAME, einhorn@N), as for veneur.
	inherited := listen.InheritedFromEnv(os.Getenv, os.Getpid(), os.Getppid())
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	p, err := veneur.NewProxy(cfg, veneur.Options{Log: log, Inherited: inherited})
	if err != nil {
		fmt.Fprintf(stderr, "veneur-proxy: invalid config: %v\n", err)
		return 1
	}
	if *validate {
		fmt.Fprintf(stdout, "%s: valid\n", *path)
		return 0
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := p.Start(); err != nil {
		fmt.Fprintf(stderr, "veneur-proxy: start-up failed: %v\n", err)
		return 1
	}
	log.WithFields(logrus.Fields{
		"version": veneur.VERSION, "http": cfg.HTTPAddress, "grpc": cfg.GRPCAddress,
	}).Info("veneur-proxy started")
	sig := <-sigs
	log.WithField("signal", sig.String()).Info("shutting down: delivering what was imported")
	timeout, _ := cfg.ParseShutdownTimeout()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.WithError(err).Error("shutdown was not clean")
		return 1
	}
	log.Info("veneur-proxy stopped")
	return 0
}
