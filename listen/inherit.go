package listen

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Inherited sockets. Every address key also takes a socket the process
// was started with instead of one it binds itself:
//
//   - fd@N: descriptor N, as the parent left it open;
//   - einhorn@N: einhorn's N-th socket (EINHORN_FD_COUNT, EINHORN_FD_<N>,
//     for a process whose parent is EINHORN_MASTER_PID); once every
//     listener has started, the server acknowledges to einhorn
//     (EINHORN_SOCK_PATH), as einhorn's manual acknowledgement expects;
//   - systemd:NAME: a socket systemd passed by socket activation
//     (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), the one named NAME (the
//     socket unit's FileDescriptorName=, by default the unit's name) of
//     the kind the key needs. One socket unit may pass a UDP and a TCP
//     socket under one name: udp_address takes the datagram one and
//     tcp_address the stream one. Two sockets of one name and kind are
//     ambiguous, and an error.
//
// Every inherited socket is checked before use: its type (datagram or
// stream), its family (unix, or IPv4/IPv6) and, for stream sockets, that
// it listens. A socket can serve one key only.
//
// veneur never shuts down or reconnects an inherited socket, since the
// parent (systemd, einhorn, a restart script) keeps it open for the next
// process: on stop it only reads what is queued and closes its own
// descriptor.

// sdListenFdsStart is the first descriptor systemd passes.
const sdListenFdsStart = 3

// Inherited holds the sockets the process was started with. Build it once
// per process, with InheritedFromEnv; a nil *Inherited knows fd@N only.
type Inherited struct {
	mu sync.Mutex
	// systemd are the descriptors of LISTEN_FDS, in order, and their
	// names from LISTEN_FDNAMES.
	systemd   []namedFD
	systemdOK bool  // LISTEN_PID named this process
	systemdE  error // why the variables were not usable, when set but bad
	einhorn   []int
	einhornOK bool
	einhornE  error
	// ackPath is EINHORN_SOCK_PATH, where einhorn waits for the
	// acknowledgement.
	ackPath string
	// taken maps a descriptor to the key that uses it.
	taken map[int]string
	// einhornTaken says a key uses an einhorn socket: Ready acknowledges.
	einhornTaken bool
}

type namedFD struct {
	fd   int
	name string
}

// InheritedFromEnv reads the sockets systemd or einhorn passed, from the
// environment getenv reads; pid and ppid are this process's id and its
// parent's. systemd's variables count only when LISTEN_PID is pid, and
// einhorn's only when EINHORN_MASTER_PID is ppid, so that a process that
// merely inherited the variables takes nothing. The passed descriptors are
// marked close-on-exec.
func InheritedFromEnv(getenv func(string) string, pid, ppid int) *Inherited {
	h := &Inherited{taken: map[int]string{}}
	h.readSystemd(getenv, pid)
	h.readEinhorn(getenv, ppid)
	return h
}

func (h *Inherited) readSystemd(getenv func(string) string, pid int) {
	lpid, lfds := getenv("LISTEN_PID"), getenv("LISTEN_FDS")
	if lpid == "" && lfds == "" {
		return
	}
	if p, err := strconv.Atoi(lpid); err != nil || p != pid {
		h.systemdE = fmt.Errorf("LISTEN_PID is %q, not this process (%d), so the sockets were meant for another one", lpid, pid)
		return
	}
	n, err := strconv.Atoi(lfds)
	if err != nil || n < 0 || n > 1<<16 {
		h.systemdE = fmt.Errorf("LISTEN_FDS is %q, not a count of descriptors", lfds)
		return
	}
	var names []string
	if v := getenv("LISTEN_FDNAMES"); v != "" {
		names = strings.Split(v, ":")
	}
	for i := 0; i < n; i++ {
		// systemd names a socket "unknown" when its unit gives no
		// name and it cannot pass the unit's.
		name := "unknown"
		if i < len(names) {
			name = names[i]
		}
		fd := sdListenFdsStart + i
		setCloseOnExec(fd)
		h.systemd = append(h.systemd, namedFD{fd, name})
	}
	h.systemdOK = true
}

func (h *Inherited) readEinhorn(getenv func(string) string, ppid int) {
	mpid, count := getenv("EINHORN_MASTER_PID"), getenv("EINHORN_FD_COUNT")
	if mpid == "" && count == "" {
		return
	}
	if p, err := strconv.Atoi(mpid); err != nil || p != ppid {
		h.einhornE = fmt.Errorf("EINHORN_MASTER_PID is %q, not this process's parent (%d)", mpid, ppid)
		return
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 || n > 1<<16 {
		h.einhornE = fmt.Errorf("EINHORN_FD_COUNT is %q, not a count of descriptors", count)
		return
	}
	for i := 0; i < n; i++ {
		v := getenv("EINHORN_FD_" + strconv.Itoa(i))
		fd, err := strconv.Atoi(v)
		if err != nil || fd < 0 {
			h.einhornE = fmt.Errorf("EINHORN_FD_%d is %q, not a descriptor number", i, v)
			h.einhorn = nil
			return
		}
		setCloseOnExec(fd)
		h.einhorn = append(h.einhorn, fd)
	}
	h.ackPath = getenv("EINHORN_SOCK_PATH")
	h.einhornOK = true
}

// IsInherited reports whether addr names an inherited socket (fd@N,
// einhorn@N or systemd:NAME) rather than one to bind.
func IsInherited(addr string) bool {
	return strings.HasPrefix(addr, "fd@") || strings.HasPrefix(addr, "einhorn@") || strings.HasPrefix(addr, "systemd:")
}

// CheckInherited checks the syntax of an inherited socket's address, for
// config validation; it opens nothing. It returns nil for an address that
// is not an inherited one.
func CheckInherited(addr string) error {
	for _, f := range []struct{ prefix, example string }{{"fd@", "fd@3"}, {"einhorn@", "einhorn@0"}} {
		if rest, ok := strings.CutPrefix(addr, f.prefix); ok {
			if n, err := strconv.Atoi(rest); err != nil || n < 0 {
				return fmt.Errorf("%s must be followed by a descriptor number, as in %s", f.prefix, f.example)
			}
			return nil
		}
	}
	if name, ok := strings.CutPrefix(addr, "systemd:"); ok {
		if name == "" || strings.ContainsAny(name, ": \t\n") {
			return errors.New("systemd: must be followed by the socket's name (the socket unit's FileDescriptorName=), as in systemd:dogstatsd")
		}
	}
	return nil
}

// take returns the inherited socket addr names, for the config key, after
// checking it is of kind want. Each descriptor serves one key only. The
// file returned owns the descriptor: closing it closes the descriptor.
func (h *Inherited) take(key, addr string, want sockKind) (*os.File, error) {
	if err := CheckInherited(addr); err != nil {
		return nil, err
	}
	if h != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
	}
	var fd int
	switch {
	case strings.HasPrefix(addr, "fd@"):
		fd, _ = strconv.Atoi(addr[len("fd@"):])
	case strings.HasPrefix(addr, "einhorn@"):
		n, _ := strconv.Atoi(addr[len("einhorn@"):])
		var err error
		if fd, err = h.einhornFD(n); err != nil {
			return nil, err
		}
	default:
		var err error
		if fd, err = h.systemdFD(strings.TrimPrefix(addr, "systemd:"), want); err != nil {
			return nil, err
		}
	}
	if h != nil {
		if other, ok := h.taken[fd]; ok {
			return nil, fmt.Errorf("descriptor %d already serves %s; give each key its own socket", fd, other)
		}
	}
	if err := checkSocket(fd, want); err != nil {
		return nil, fmt.Errorf("descriptor %d: %w", fd, err)
	}
	if h != nil {
		h.taken[fd] = key
		if strings.HasPrefix(addr, "einhorn@") {
			h.einhornTaken = true
		}
	}
	setCloseOnExec(fd)
	return os.NewFile(uintptr(fd), addr), nil
}

// einhornFD is einhorn's n-th socket. h.mu is held.
func (h *Inherited) einhornFD(n int) (int, error) {
	switch {
	case h == nil || (!h.einhornOK && h.einhornE == nil):
		return 0, errors.New("veneur was not started by einhorn (EINHORN_FD_COUNT is unset); run it under einhorn with -b, or use host:port")
	case !h.einhornOK:
		return 0, fmt.Errorf("einhorn's variables are unusable: %w", h.einhornE)
	case n >= len(h.einhorn):
		return 0, fmt.Errorf("einhorn passed %d socket(s), so einhorn@0 to einhorn@%d; bind more with einhorn -b", len(h.einhorn), len(h.einhorn)-1)
	}
	return h.einhorn[n], nil
}

// systemdFD finds the socket systemd passed under name that is of kind
// want. h.mu is held.
func (h *Inherited) systemdFD(name string, want sockKind) (int, error) {
	switch {
	case h == nil || (!h.systemdOK && h.systemdE == nil):
		return 0, errors.New("veneur was not started by systemd socket activation (LISTEN_FDS is unset); start it from a service with a socket unit (Sockets=), or use host:port")
	case !h.systemdOK:
		return 0, fmt.Errorf("systemd's variables are unusable: %w", h.systemdE)
	}
	var fits []int
	var passed, servesAlready []string
	for _, s := range h.systemd {
		if key, ok := h.taken[s.fd]; ok {
			// Taken sockets are closed here: say whose they are.
			passed = append(passed, fmt.Sprintf("%s=(serves %s)", s.name, key))
			if s.name == name {
				servesAlready = append(servesAlready, key)
			}
			continue
		}
		passed = append(passed, fmt.Sprintf("%s=%s", s.name, describeSocket(s.fd)))
		if s.name == name && checkSocket(s.fd, want) == nil {
			fits = append(fits, s.fd)
		}
	}
	switch {
	case len(fits) == 1:
		return fits[0], nil
	case len(fits) == 0 && len(servesAlready) > 0:
		return 0, fmt.Errorf("the socket systemd passed as %q already serves %s; give each key its own socket unit and FileDescriptorName=", name, strings.Join(servesAlready, ", "))
	case len(fits) == 0:
		return 0, fmt.Errorf("systemd passed no socket named %q that is %s (passed: %s); name it with FileDescriptorName= in its socket unit", name, want.what, strings.Join(passed, ", "))
	}
	return 0, fmt.Errorf("systemd passed %d sockets named %q that are each %s (passed: %s); give each its own socket unit and FileDescriptorName=", len(fits), name, want.what, strings.Join(passed, ", "))
}

// Unused lists the sockets systemd passed that no key took, for a warning:
// they are held open for nothing, and may be meant for a key whose
// address is mistyped.
func (h *Inherited) Unused() []string {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, s := range h.systemd {
		if _, ok := h.taken[s.fd]; !ok {
			out = append(out, fmt.Sprintf("systemd:%s (descriptor %d, %s)", s.name, s.fd, describeSocket(s.fd)))
		}
	}
	return out
}

// Ready tells einhorn that the process has started, when a key took an
// einhorn socket and einhorn gave a control socket: einhorn started with
// manual acknowledgement (-m manual) waits for it before it stops the
// previous worker.
func (h *Inherited) Ready() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	ack := h.einhornTaken && h.ackPath != ""
	h.mu.Unlock()
	if !ack {
		return nil
	}
	c, err := net.Dial("unix", h.ackPath)
	if err != nil {
		return fmt.Errorf("acknowledging to einhorn on EINHORN_SOCK_PATH %q: %w", h.ackPath, err)
	}
	defer c.Close()
	// einhorn reads one YAML (here JSON) document per line.
	if _, err := fmt.Fprintf(c, "{\"command\":\"worker:ack\",\"pid\":%d}\n", os.Getpid()); err != nil {
		return fmt.Errorf("acknowledging to einhorn on EINHORN_SOCK_PATH %q: %w", h.ackPath, err)
	}
	return nil
}
