package e2e

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// repoRoot is the module's root, where the Dockerfile and packaging/ are.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// staticProblems lists why the ELF file at path is not a static
// executable: a program interpreter (PT_INTERP, the dynamic loader) or
// shared libraries it needs (DT_NEEDED).
func staticProblems(t *testing.T, path string) []string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("reading %s as ELF: %v", path, err)
	}
	defer f.Close()
	var out []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			out = append(out, "has a PT_INTERP program header (needs the dynamic loader)")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		t.Fatalf("reading the libraries %s needs: %v", path, err)
	}
	for _, l := range libs {
		out = append(out, "needs "+l+" (DT_NEEDED)")
	}
	return out
}

// The Dockerfile builds a static binary for its empty image: the test runs
// the Dockerfile's own build line and finds neither a program interpreter
// nor a needed library in the result. (The test binary's own veneur, built
// with the toolchain's defaults, is the control: with cgo it is dynamic.)
func TestDockerfileBuildsStaticBinary(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the image is linux/ELF")
	}
	root := repoRoot(t)
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var build string
	sc := bufio.NewScanner(strings.NewReader(string(df)))
	for sc.Scan() {
		if cmd, ok := strings.CutPrefix(sc.Text(), "RUN CGO_ENABLED=0 go build "); ok {
			build = "CGO_ENABLED=0 go build " + cmd
		}
	}
	if build == "" || !strings.Contains(build, "-o /out/veneur ./cmd/veneur") {
		t.Fatalf("the Dockerfile has no line \"RUN CGO_ENABLED=0 go build ... -o /out/veneur ./cmd/veneur\":\n%s", df)
	}
	out := filepath.Join(t.TempDir(), "veneur")
	cmd := exec.Command("/bin/sh", "-c", strings.Replace(build, "/out/veneur", out, 1))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VERSION=e2e-static")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build (%s) failed: %v\n%s", build, err, b)
	}
	if p := staticProblems(t, out); len(p) > 0 {
		t.Errorf("the image's binary is not static: %s", strings.Join(p, "; "))
	}
	if v, err := exec.Command(out, "-version").Output(); err != nil || strings.TrimSpace(string(v)) != "e2e-static" {
		t.Errorf("the static binary's -version: %q, %v; want e2e-static", v, err)
	}
	if p := staticProblems(t, binPath()); len(p) > 0 {
		t.Logf("control: the default build %s", strings.Join(p, "; "))
	} else {
		t.Logf("control: the default build is static too (cgo off in this toolchain)")
	}
}

// unitSocket is one Listen line of a socket unit.
type unitSocket struct {
	datagram bool
	addr     string
	name     string
}

// readSocketUnit reads the active ListenDatagram= and ListenStream= lines
// and the FileDescriptorName= of a socket unit.
func readSocketUnit(t *testing.T, path string) []unitSocket {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []unitSocket
	name := filepath.Base(path)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		switch {
		case !ok:
		case k == "ListenDatagram":
			out = append(out, unitSocket{datagram: true, addr: v})
		case k == "ListenStream":
			out = append(out, unitSocket{addr: v})
		case k == "FileDescriptorName":
			name = v
		}
	}
	for i := range out {
		out[i].name = name
	}
	return out
}

// The shipped systemd units pass what the shipped config names: veneur
// starts on packaging/systemd/veneur.yaml with the sockets of veneur.socket
// and veneur-http.socket, as systemd would pass them (on free ports), and
// takes DogStatsD over UDP and TCP. Where systemd-analyze is installed, the
// units also pass its checks.
func TestSystemdPackaging(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("systemd is Linux's")
	}
	dir := filepath.Join(repoRoot(t), "packaging", "systemd")
	var socks []unitSocket
	for _, u := range []string{"veneur.socket", "veneur-http.socket"} {
		socks = append(socks, readSocketUnit(t, filepath.Join(dir, u))...)
	}
	// Bind each as systemd would, on the unit's host with a free port.
	var files []*os.File
	var names []string
	var udpAddr, tcpAddr, httpAddr string
	for _, s := range socks {
		host, _, err := net.SplitHostPort(s.addr)
		if err != nil {
			t.Fatalf("socket unit address %q is not host:port (the test binds those only): %v", s.addr, err)
		}
		var f *os.File
		if s.datagram {
			c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			udpAddr = c.LocalAddr().String()
			f, err = c.(*net.UDPConn).File()
			if err != nil {
				t.Fatal(err)
			}
		} else {
			ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if s.name == "http" {
				httpAddr = ln.Addr().String()
			} else {
				tcpAddr = ln.Addr().String()
			}
			f, err = ln.(*net.TCPListener).File()
			if err != nil {
				t.Fatal(err)
			}
		}
		defer f.Close()
		files = append(files, f)
		names = append(names, s.name)
	}
	if udpAddr == "" || tcpAddr == "" || httpAddr == "" {
		t.Fatalf("the units pass %+v; want a UDP and a TCP DogStatsD socket and an HTTP socket named http", socks)
	}
	shipped, err := os.ReadFile(filepath.Join(dir, "veneur.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg config
	if err := yaml.Unmarshal(shipped, &cfg); err != nil {
		t.Fatalf("packaging/systemd/veneur.yaml: %v", err)
	}
	// Keep its addresses; aim it at a stand-in API, without self-metrics.
	fake := newFakeDD(t)
	cfg["api_hostname"], cfg["key"], cfg["stats_address"], cfg["hostname"], cfg["interval"] = fake.URL(), apiKey, "", hostName, "1h"
	d, err := launch(t, fake, cfg, udpAddr, httpAddr, func(path string) *exec.Cmd {
		cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=`+fmt.Sprint(len(files))+` LISTEN_FDNAMES=`+strings.Join(names, ":")+` exec "$0" "$@"`,
			binPath(), "-f", path)
		cmd.ExtraFiles = files
		return cmd
	})
	if err != nil {
		t.Fatalf("veneur on the shipped units and config: %v", err)
	}
	defer func() {
		if t.Failed() {
			d.logOutput(t)
		}
	}()
	sendRaw(t, d, "pkg.udp:1|c")
	conn, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("pkg.tcp:2|c\n")); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	reqs := d.stopAndCollect(t)
	expectSeries(t, reqs, "pkg.udp", rate(1/hour, hour, "env:prod"))
	expectSeries(t, reqs, "pkg.tcp", rate(2/hour, hour, "env:prod"))

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze not found (%v): the units' syntax is not checked", err)
		return
	}
	// systemd-analyze verify wants ExecStart's binary to exist: check
	// copies that name the test's binary.
	tmp := t.TempDir()
	var units []string
	for _, u := range []string{"veneur.service", "veneur.socket", "veneur-http.socket"} {
		b, err := os.ReadFile(filepath.Join(dir, u))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(tmp, u)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/veneur", binPath())), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, p)
	}
	verify := exec.Command(analyze, append([]string{"verify", "--man=no"}, units...)...)
	if out, err := verify.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("systemd-analyze verify found problems in the units (%v):\n%s", err, out)
	}
}
