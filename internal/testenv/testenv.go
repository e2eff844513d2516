// Package testenv gates tests on the components they need: root, loop
// devices, dockerd, programs such as mkfs.ext4 or promtool. A test whose
// component is missing is skipped with the reason, or fails when
// STOWAGE_E2E_REQUIRED=1, as `make test` sets, so CI never skips silently.
package testenv

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RequiredEnv names the environment variable that turns a missing component
// into a test failure instead of a skip.
const RequiredEnv = "STOWAGE_E2E_REQUIRED"

// Require skips t (or fails it when RequiredEnv is "1") unless every named
// component is present. Known components: "root", "loop"
// (/dev/loop-control), "dockerd" (dockerd, containerd, runc and the docker
// CLI), "busybox" (a static busybox); any other name is a program looked up on PATH and in /sbin and
// /usr/sbin, for example "mkfs.ext4" or "promtool".
func Require(t testing.TB, components ...string) {
	t.Helper()
	var missing []string
	for _, c := range components {
		if err := check(c); err != nil {
			missing = append(missing, fmt.Sprintf("%s (%v)", c, err))
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "missing " + strings.Join(missing, ", ") + "; run as root after tests/scripts/deps.sh, or `make test`"
	if os.Getenv(RequiredEnv) == "1" {
		t.Fatalf("%s (%s=1 makes this a failure)", msg, RequiredEnv)
	}
	t.Skip(msg)
}

// Unavailable skips t with the reason, or fails it when RequiredEnv is
// "1": for a test that finds out only while it runs that the machine lacks
// what it needs.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequiredEnv) == "1" {
		t.Fatalf("%s (%s=1 makes this a failure)", msg, RequiredEnv)
	}
	t.Skip(msg)
}

func check(component string) error {
	switch component {
	case "root":
		if os.Geteuid() != 0 {
			return errors.New("not running as root")
		}
		return nil
	case "loop":
		_, err := os.Stat("/dev/loop-control")
		return err
	case "dockerd":
		for _, p := range []string{"dockerd", "containerd", "runc", "docker"} {
			if _, err := LookPath(p); err != nil {
				return err
			}
		}
		return nil
	case "busybox":
		_, err := StaticBusybox()
		return err
	default:
		_, err := LookPath(component)
		return err
	}
}

// LookPath finds a program on PATH or in /sbin and /usr/sbin, where Debian
// keeps mkfs and friends but a non-root PATH may not look.
func LookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH, /usr/sbin or /sbin", name)
}

// StaticBusybox returns the path of a statically linked busybox.
func StaticBusybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if static {
			return p, nil
		}
	}
	return "", errors.New("no static busybox (Debian package busybox-static)")
}
