// Package rbdtest starts a throwaway one-node Ceph cluster for tests, with
// the project's script tests/scripts/ceph.sh: one monitor and one memstore
// OSD on 127.0.0.1, an RBD pool, cephx or no authentication. The test's
// cleanup stops the daemons by PID and removes everything.
package rbdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
)

// Cluster is a running test cluster.
type Cluster struct {
	// Dir holds the cluster's configuration, data and logs.
	Dir string
	// Conf is the path of its ceph.conf.
	Conf string
	// Keyring is the path of client.admin's keyring ("" with auth none).
	Keyring string
	// Pool is the RBD pool the script created.
	Pool string
}

// Options configure Start.
type Options struct {
	// Auth is "cephx" (the default) or "none".
	Auth string
}

// startTimeout bounds the script; the cluster is normally ready in about
// ten seconds.
const startTimeout = 3 * time.Minute

// Start starts a cluster and registers its stop with tb.Cleanup. It skips
// the test (or fails it under STOWAGE_E2E_REQUIRED=1) when Ceph or root
// is missing.
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	testenv.Require(tb, "root", "ceph-mon", "ceph-osd", "ceph", "rbd", "monmaptool", "ceph-authtool", "uuidgen")
	if opts.Auth == "" {
		opts.Auth = "cephx"
	}
	script, err := Script()
	if err != nil {
		tb.Fatal(err)
	}
	// Not tb.TempDir: the daemons' admin sockets go below it, and a unix
	// socket path must stay below 108 bytes.
	parent, err := os.MkdirTemp("", "stowage-ceph-")
	if err != nil {
		tb.Fatal(err)
	}
	c := &Cluster{Dir: filepath.Join(parent, "c"), Pool: "rbd"}
	c.Conf = filepath.Join(c.Dir, "ceph.conf")
	if opts.Auth == "cephx" {
		c.Keyring = filepath.Join(c.Dir, "keyring")
	}
	ports := freePorts(tb, 2)
	env := append(os.Environ(), "AUTH="+opts.Auth, "POOL="+c.Pool,
		"MON_V2_PORT="+strconv.Itoa(ports[0]), "MON_V1_PORT="+strconv.Itoa(ports[1]))
	tb.Cleanup(func() {
		cmd := exec.Command(script, "stop", c.Dir)
		cmd.Env = append(os.Environ(), "FAST=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Errorf("stop the Ceph cluster: %v\n%s", err, out)
		}
		if err := os.RemoveAll(parent); err != nil {
			tb.Errorf("remove %s: %v", parent, err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "start", c.Dir)
	cmd.Env = env
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("start a Ceph cluster with %s: %v\n%s", script, err, out)
	}
	tb.Logf("Ceph cluster (auth %s) ready in %s at %s", opts.Auth, time.Since(start).Round(100*time.Millisecond), c.Dir)
	return c
}

// Script returns the path of tests/scripts/ceph.sh, found from the
// working directory up to the module root.
func Script() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "tests", "scripts", "ceph.sh"), nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("rbdtest: no go.mod above the working directory")
		}
		dir = up
	}
}

// freePorts returns n ports on 127.0.0.1 that were free a moment ago.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// Pid returns the process ID of the cluster's daemon name ("mon.a",
// "osd.0"), from the PIDs the script recorded.
func (c *Cluster) Pid(tb testing.TB, name string) int {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(c.Dir, "pids"))
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		pid, n, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && n == name {
			if p, err := strconv.Atoi(pid); err == nil {
				return p
			}
		}
	}
	tb.Fatalf("no daemon %s in %s/pids", name, c.Dir)
	return 0
}

// Env returns the environment for Ceph's command line tools.
func (c *Cluster) Env() []string {
	return append(os.Environ(), "CEPH_CONF="+c.Conf)
}

// Run runs a Ceph command line tool (ceph, rbd, ...) against the cluster
// and returns its trimmed standard output; it fails the test on error.
func (c *Cluster) Run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := c.Try(name, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Try is Run returning the error.
func (c *Cluster) Try(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.Env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// AdminKey returns client.admin's secret key, for tests that check it
// never shows.
func (c *Cluster) AdminKey(tb testing.TB) string {
	tb.Helper()
	return c.Run(tb, "ceph", "auth", "get-key", "client.admin")
}

// Namespace creates a new RADOS namespace in the pool and returns its name,
// so that a test has a pool of its own to list.
func (c *Cluster) Namespace(tb testing.TB, name string) string {
	tb.Helper()
	c.Run(tb, "rbd", "namespace", "create", "--pool", c.Pool, "--namespace", name)
	return name
}
