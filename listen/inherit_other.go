//go:build !unix

package listen

import "errors"

var errNoInherit = errors.New("inherited sockets are supported on Unix systems only")

func setCloseOnExec(int) {}

func describeSocket(int) string { return "unknown" }

func checkSocket(int, sockKind) error { return errNoInherit }
