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
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

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

// Poll calls f until it returns nil or timeout passes, and returns f's last
// error then.
func Poll(timeout time.Duration, f func() error) error {
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

// Tail returns the last n lines of a file, for failure messages.
func Tail(path string, n int) string {
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
