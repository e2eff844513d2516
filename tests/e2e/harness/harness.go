// Package harness runs stowage's end-to-end tests against real components: a
// private dockerd, a busybox image, and the volumed and stow binaries built
// from this module.
//
// Every e2e test starts with Require, which skips the test when a component
// is missing, or fails it when STOWAGE_E2E_REQUIRED=1 (as `make test` sets),
// so that CI never skips silently.
//
// Start volumed before dockerd: cleanups run in reverse order, so dockerd
// then removes its containers (and dockerd unmounts their volumes) while
// volumed still answers.
package harness

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RequiredEnv names the environment variable that turns a missing component
// into a test failure instead of a skip.
const RequiredEnv = "STOWAGE_E2E_REQUIRED"

// Require skips t (or fails it when RequiredEnv is "1") unless every named
// component is present. Known components: "root", "dockerd" (dockerd,
// containerd, runc and the docker CLI), "busybox" (a static busybox), "loop"
// (/dev/loop-control); any other name is a program looked up on PATH and in
// /sbin and /usr/sbin, for example "mkfs.ext4", "promtool", "curl".
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

func check(component string) error {
	switch component {
	case "root":
		if os.Geteuid() != 0 {
			return errors.New("not running as root")
		}
		return nil
	case "dockerd":
		for _, p := range []string{"dockerd", "containerd", "runc", "docker"} {
			if _, err := lookPath(p); err != nil {
				return err
			}
		}
		return nil
	case "busybox":
		_, err := staticBusybox()
		return err
	case "loop":
		_, err := os.Stat("/dev/loop-control")
		return err
	default:
		_, err := lookPath(component)
		return err
	}
}

// lookPath finds a program on PATH or in the sbin directories, which a
// non-root PATH often lacks.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// staticBusybox returns the path of a statically linked busybox.
func staticBusybox() (string, error) {
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

// Result is what a command printed and how it exited.
type Result struct {
	Stdout string
	Stderr string
	// Code is the exit code; -1 when the command could not run or was
	// killed.
	Code int
}

// String formats r for test messages.
func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
}

// commandTimeout bounds every command the harness runs.
const commandTimeout = 3 * time.Minute

// run runs a program with extra environment and optional stdin.
func run(env []string, stdin []byte, name string, args ...string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = environ(env)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.Code = exitErr.ExitCode()
	default:
		res.Code = -1
		res.Stderr += err.Error()
	}
	if ctx.Err() != nil {
		res.Stderr += fmt.Sprintf("\n(killed after %s)", commandTimeout)
	}
	return res
}

// environ returns this process's environment without the variables that
// steer docker and stow elsewhere, plus extra ("KEY=value" entries).
func environ(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(key, "DOCKER_") || key == "STOW_HOST" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// poll calls f until it returns nil or timeout passes, and returns f's last
// error then.
func poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	interval := 10 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(interval)
		interval = min(2*interval, 250*time.Millisecond)
	}
}

// moduleRoot returns the directory of this module's go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// tail returns the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
