package veneur

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// depsSystem is a fake Debian system for .ci/deps's install_pkg: a root
// directory (DEPS_ROOT) and a PATH of stubs. The stubs of apt-get,
// dpkg-query, systemctl, deb-systemd-helper and update-rc.d log their
// calls; apt-get "installs" the package fake, whose maintainer scripts
// enable fake.service (a wants link and an alias) and an init script, as
// Debian's influxdb does. Every other command the script may run is a
// link to the real one; anything else is not found, so the test cannot
// reach the real system's services.
type depsSystem struct {
	root, bin, log string
}

func newDepsSystem(t *testing.T, systemdRunning bool) *depsSystem {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	d := &depsSystem{root: t.TempDir(), bin: t.TempDir()}
	d.log = filepath.Join(d.root, "calls.log")
	for _, tool := range []string{"bash", "find", "readlink", "basename", "grep", "xargs", "sort", "tr", "tee", "chmod", "rm", "env", "dirname", "id", "cat", "mkdir", "ln", "sh"} {
		real, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("no %s: %v", tool, err)
		}
		if err := os.Symlink(real, filepath.Join(d.bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	etc := filepath.Join(d.root, "etc", "systemd", "system")
	stub := func(name, body string) {
		script := "#!/bin/sh\necho \"" + name + " $*\" >> " + d.log + "\n" + body
		if err := os.WriteFile(filepath.Join(d.bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stub("sudo", `exec "$@"`)
	stub("systemctl", "")
	stub("deb-systemd-helper", "")
	stub("update-rc.d", "")
	stub("dpkg-query", `case "$1" in
-W) echo 1.0-1 ;;
-L) [ -e `+d.root+`/installed ] && printf '/lib/systemd/system/fake.service\n/etc/init.d/fake\n/usr/bin/fakedaemon\n' ;;
esac`)
	// apt-get records what the policy says about starting fake, then
	// installs it and enables its service as its postinst would. An
	// unrelated unit's link and a masked unit must survive.
	stub("apt-get", `policy=`+d.root+`/usr/sbin/policy-rc.d
if [ -x "$policy" ]; then "$policy" fake start; echo "policy-rc.d exit $?" >> `+d.log+`; else echo "no policy-rc.d" >> `+d.log+`; fi
mkdir -p `+etc+`/multi-user.target.wants `+d.root+`/etc/init.d
ln -s /lib/systemd/system/fake.service `+etc+`/multi-user.target.wants/fake.service
ln -s /lib/systemd/system/fake.service `+etc+`/fakealias.service
ln -s /lib/systemd/system/other.service `+etc+`/multi-user.target.wants/other.service
ln -s /dev/null `+etc+`/masked.service
printf '#!/bin/sh\necho "init.d/fake $1" >> `+d.log+`\n[ "$1" = status ]\n' > `+d.root+`/etc/init.d/fake
chmod 755 `+d.root+`/etc/init.d/fake
: > `+d.root+`/installed`)
	mkdir := func(p string) {
		if err := os.MkdirAll(filepath.Join(d.root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mkdir("usr/sbin")
	mkdir("etc/systemd/system")
	if systemdRunning {
		mkdir("run/systemd/system")
	}
	return d
}

// run sources .ci/deps and runs shell, returning its output, the stubs'
// log and its exit error.
func (d *depsSystem) run(t *testing.T, shell string) (string, string, error) {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(d.bin, "bash"), "-c", "source .ci/deps && "+shell)
	cmd.Dir = wd
	cmd.Env = []string{"PATH=" + d.bin, "DEPS_ROOT=" + d.root, "HOME=" + d.root}
	out, err := cmd.CombinedOutput()
	log, _ := os.ReadFile(d.log)
	return string(out), string(log), err
}

func (d *depsSystem) exists(p string) bool {
	_, err := os.Lstat(filepath.Join(d.root, p))
	return err == nil
}

func TestCIDepsInstallPkg(t *testing.T) {
	for _, systemd := range []bool{false, true} {
		name := "systemd not PID 1"
		if systemd {
			name = "systemd running"
		}
		t.Run(name, func(t *testing.T) {
			d := newDepsSystem(t, systemd)
			out, log, err := d.run(t, "install_pkg fakedaemon fake")
			if err != nil {
				t.Fatalf("install_pkg: %v\n%s", err, out)
			}
			// It says what it installs, and that nothing is left enabled.
			for _, w := range []string{
				"deps: fakedaemon: missing; installing Debian package fake with apt-get",
				"deps: fake: fake.service disabled",
				"deps: fake: init script fake disabled",
				"deps: fakedaemon: installed fake 1.0-1; no service of it is running or enabled",
			} {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			// No service could start during the install, and the policy
			// that saw to it is gone.
			if !strings.Contains(log, "policy-rc.d exit 101") {
				t.Errorf("apt-get ran without a policy-rc.d refusing starts; calls:\n%s", log)
			}
			if d.exists("usr/sbin/policy-rc.d") {
				t.Error("policy-rc.d left in place after the install")
			}
			for _, gone := range []string{"etc/systemd/system/multi-user.target.wants/fake.service", "etc/systemd/system/fakealias.service"} {
				if d.exists(gone) {
					t.Errorf("%s still enables fake.service", gone)
				}
			}
			for _, kept := range []string{"etc/systemd/system/multi-user.target.wants/other.service", "etc/systemd/system/masked.service"} {
				if !d.exists(kept) {
					t.Errorf("%s, not fake's, was removed", kept)
				}
			}
			if !strings.Contains(log, "update-rc.d fake disable") {
				t.Errorf("init script not disabled; calls:\n%s", log)
			}
			if systemd {
				if !strings.Contains(log, "systemctl disable --now --quiet fake.service") {
					t.Errorf("systemctl did not stop and disable fake.service; calls:\n%s", log)
				}
			} else {
				for _, w := range []string{"deb-systemd-helper disable fake.service", "systemctl --root=" + d.root + " --quiet disable fake.service", "init.d/fake status", "init.d/fake stop"} {
					if !strings.Contains(log, w) {
						t.Errorf("calls lack %q:\n%s", w, log)
					}
				}
			}
		})
	}
}

// With an existing policy-rc.d (container images ship one) the script
// leaves it as it is.
func TestCIDepsKeepsAPolicy(t *testing.T) {
	d := newDepsSystem(t, false)
	policy := filepath.Join(d.root, "usr", "sbin", "policy-rc.d")
	if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, _, err := d.run(t, "install_pkg fakedaemon fake"); err != nil {
		t.Fatalf("install_pkg: %v\n%s", err, out)
	}
	if !d.exists("usr/sbin/policy-rc.d") {
		t.Error("an existing policy-rc.d was removed")
	}
}

// A package whose command is present is not installed; an enabled unit
// of it is pointed out, not changed.
func TestCIDepsPresentCommand(t *testing.T) {
	d := newDepsSystem(t, false)
	if out, _, err := d.run(t, "install_pkg fakedaemon fake"); err != nil {
		t.Fatalf("install_pkg: %v\n%s", err, out)
	}
	// Enable it again, as an older script would have left it, and put the
	// command on PATH.
	if err := os.Symlink("/lib/systemd/system/fake.service", filepath.Join(d.root, "etc/systemd/system/multi-user.target.wants/fake.service")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.bin, "fakedaemon"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(d.log); err != nil {
		t.Fatal(err)
	}
	out, log, err := d.run(t, "install_pkg fakedaemon fake")
	if err != nil {
		t.Fatalf("install_pkg: %v\n%s", err, out)
	}
	if strings.Contains(log, "apt-get") {
		t.Errorf("apt-get ran for a present command; calls:\n%s", log)
	}
	for _, w := range []string{"deps: fakedaemon: present (" + d.bin + "/fakedaemon); not installing fake", "deps: note: fake.service is enabled at boot"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if !d.exists("etc/systemd/system/multi-user.target.wants/fake.service") {
		t.Error("a present package's unit was disabled")
	}
}
