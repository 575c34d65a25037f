//go:build !linux

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

func errLinuxOnly() error {
	return errors.New("veneur-loadgen needs Linux (sendmmsg, recvmmsg, /proc, taskset); run it on a Linux host")
}

func runDriver(options, io.Writer, io.Writer) error { return errLinuxOnly() }

func bareMain(int) int {
	fmt.Fprintln(os.Stderr, errLinuxOnly())
	return 1
}
