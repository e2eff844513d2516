package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var commands struct {
	mu    sync.Mutex // held across a build, so each is built once
	paths map[string]string
}

// BuildCommand builds the main package pkg, a path from the module root such
// as "./tests/e2e/faultdriver" (CGO_ENABLED=0), once per test binary, beside
// the binaries of BuildBinaries, and returns the program's path. Main
// removes it at the end.
func BuildCommand(t testing.TB, pkg string) string {
	t.Helper()
	bins := BuildBinaries(t) // makes the directory Main removes
	commands.mu.Lock()
	defer commands.mu.Unlock()
	if p, ok := commands.paths[pkg]; ok {
		return p
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(filepath.Dir(bins.Volumed), filepath.Base(pkg))
	cmd := exec.Command(gobin, "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = environ([]string{"CGO_ENABLED=0"})
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	if commands.paths == nil {
		commands.paths = map[string]string{}
	}
	commands.paths[pkg] = out
	return out
}

// Daemon is a program started by StartDaemon and stopped by its PID.
type Daemon struct {
	proc *process
}

// StartDaemon starts name with args in a process group of its own, its
// output appended to logPath, and waits up to 30 s until it accepts
// connections on the unix socket at socket. A cleanup stops it with SIGTERM
// and fails the test unless it exits 0 within 30 s (it is killed then).
func StartDaemon(t testing.TB, logPath, socket, name string, args ...string) *Daemon {
	t.Helper()
	p, err := startProcess(logPath, nil, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{proc: p}
	t.Cleanup(func() {
		killed, err := p.stop(30 * time.Second)
		switch {
		case killed:
			t.Errorf("%s did not stop within 30s of SIGTERM; killed", filepath.Base(name))
		case err != nil:
			t.Errorf("%s after SIGTERM: %v", filepath.Base(name), err)
		}
	})
	err = Poll(30*time.Second, func() error {
		if p.exited() {
			return fmt.Errorf("%s exited: %v", filepath.Base(name), p.err)
		}
		c, err := net.DialTimeout("unix", socket, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		t.Fatalf("start %s: %v\nlog:\n%s", filepath.Base(name), err, Tail(logPath, 40))
	}
	return d
}

// Signal sends sig to the daemon.
func (d *Daemon) Signal(sig os.Signal) error { return d.proc.cmd.Process.Signal(sig) }

// Pid returns the daemon's process ID.
func (d *Daemon) Pid() int { return d.proc.pid() }
