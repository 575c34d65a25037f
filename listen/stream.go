package listen

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/zenazn/goji/bind"
)

// Stream binds a stream listener on addr: host:port, a unix socket path
// (starting with / or .), fd@N (a descriptor the process inherited, as
// systemd passes them) or einhorn@N (a socket shared by einhorn across
// restarts). Errors name the address.
func Stream(addr string) (net.Listener, error) {
	ln, err := stream(addr)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", addr, err)
	}
	return ln, nil
}

func stream(addr string) (net.Listener, error) {
	switch {
	case strings.HasPrefix(addr, "einhorn@"):
		// Validation has checked the number; bind exits the process if
		// einhorn did not pass that socket, as einhorn expects.
		ln := bind.Socket(addr)
		bind.Ready()
		return ln, nil
	case strings.HasPrefix(addr, "fd@"):
		fd, err := strconv.Atoi(addr[3:])
		if err != nil || fd < 0 {
			return nil, fmt.Errorf("bad descriptor number; use fd@N such as fd@3")
		}
		f := os.NewFile(uintptr(fd), addr)
		defer f.Close()
		return net.FileListener(f)
	case strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "."):
		return net.Listen("unix", addr)
	}
	return net.Listen("tcp", addr)
}
