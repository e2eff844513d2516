//go:build ceph && linux && cgo

package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/rbd/rbdtest"
	"github.com/stowage/stowage/tests/e2e/harness"
)

// TestCSISanity builds stow-rbd, serves a real cluster's pool with it (as
// the command line the scripts use, with a cephx keyring) and runs the CSI
// conformance suite csi-sanity against it. The key shows neither in the
// sidecar's log nor in what csi-sanity saw.
func TestCSISanity(t *testing.T) {
	testenv.Require(t, "root", "loop", "mkfs.ext4", "csi-sanity")
	c := rbdtest.Start(t, rbdtest.Options{Auth: "cephx"})
	key := c.AdminKey(t)
	sc := startSidecar(t, c, "sanity")
	dir, socket, logPath := sc.dir, sc.socket, sc.log
	r := harness.CSISanity(t, socket, harness.SanityOptions{
		Dir: dir, VolumeSize: 64 << 20, ExpandSize: 128 << 20, Timeout: 15 * time.Minute, Log: logPath,
	})
	for reason, n := range r.Skips {
		if !slices.Contains(notOffered, reason) {
			t.Errorf("csi-sanity skipped %d specs for %q, which stow-rbd should offer", n, reason)
		}
	}
	sc.stop()
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), key) || strings.Contains(string(r.Output), key) {
		t.Error("the Ceph key shows in the sidecar's log or in csi-sanity's output")
	}
	if devs, _ := filepath.Glob("/sys/block/loop*/loop/backing_file"); len(devs) > 0 {
		for _, d := range devs {
			if b, _ := os.ReadFile(d); strings.HasPrefix(string(b), dir) {
				t.Errorf("loop device left attached: %s -> %s", d, strings.TrimSpace(string(b)))
			}
		}
	}
}

// sidecar is a stow-rbd process serving a test cluster, stopped by its PID.
type sidecar struct {
	t      *testing.T
	bin    string
	args   []string
	dir    string // holds the binary, the socket, the log and the run directory
	socket string
	log    string
	cmd    *exec.Cmd
	done   chan error
}

// startSidecar builds stow-rbd and starts it on the cluster's pool as
// host, with a cephx keyring given only by --keyring, and waits until it
// listens. A cleanup stops it.
func startSidecar(t *testing.T, c *rbdtest.Cluster, host string) *sidecar {
	t.Helper()
	// Not t.TempDir: a unix socket path must stay below 108 bytes.
	dir, err := os.MkdirTemp("", "stowage-rbd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "stow-rbd")
	build := exec.Command("go", "build", "-tags", "ceph,pacific", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build stow-rbd: %v\n%s", err, out)
	}
	// A copy of ceph.conf without the keyring line: the key comes only
	// from --keyring.
	conf := filepath.Join(dir, "ceph.conf")
	b, err := os.ReadFile(c.Conf)
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`(?m)^keyring = .*$`).ReplaceAllString(string(b), "")
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &sidecar{t: t, bin: bin, dir: dir, socket: filepath.Join(dir, "csi.sock"), log: filepath.Join(dir, "stow-rbd.log")}
	s.args = []string{"--endpoint", "unix://" + s.socket, "--ceph-conf", conf, "--keyring", c.Keyring,
		"--pool", c.Pool, "--host-id", host, "--run-dir", filepath.Join(dir, "run"), "--log-level", "debug"}
	t.Cleanup(s.stop)
	s.start()
	return s
}

// start starts the process and waits until its socket accepts connections.
func (s *sidecar) start() {
	s.t.Helper()
	logFile, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logFile.Close()
	os.Remove(s.socket) // left by a killed process
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd, s.done = cmd, make(chan error, 1)
	go func(done chan error) { done <- cmd.Wait() }(s.done)
	deadline := time.After(60 * time.Second)
	for {
		if conn, err := net.DialTimeout("unix", s.socket, time.Second); err == nil {
			conn.Close()
			return
		}
		select {
		case err := <-s.done:
			s.done <- err
			log, _ := os.ReadFile(s.log)
			s.t.Fatalf("stow-rbd exited: %v\n%s", err, log)
		case <-deadline:
			log, _ := os.ReadFile(s.log)
			s.t.Fatalf("stow-rbd did not listen on %s within 60s:\n%s", s.socket, log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and fails the test unless the process exits 0 within
// 30 seconds; repeated calls are fine.
func (s *sidecar) stop() {
	s.t.Helper()
	if s.cmd == nil {
		return
	}
	cmd := s.cmd
	s.cmd = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("stow-rbd after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-s.done
		s.t.Errorf("stow-rbd did not stop within 30s of SIGTERM")
	}
}

// kill9 kills the process with SIGKILL and waits for it.
func (s *sidecar) kill9() {
	s.t.Helper()
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// notOffered are the reasons for which csi-sanity may skip specs against
// stow-rbd: the calls and capabilities that plugins/csi's Server does not
// offer (GetSnapshot, group snapshots, capacity, modify, controller
// publish, health, topology), and a multi-writer mode, which a file system
// on RBD cannot take. Anything else skipped is a capability lost.
var notOffered = []string{
	"GetSnapshot not supported",
	"GetCapacity not supported",
	"Modify volume not supported",
	"Modify Volume not supported",
	"ControllerModifyVolume not supported",
	"ControllerPublishVolume not supported",
	"ControllerUnpublishVolume not supported",
	"Controller Publish, UnpublishVolume not supported",
	"GroupControllerService not supported",
	"NodeGetStorageHealth not supported",
	"ControllerGetVolumeHealth not supported",
	"NodeGetVolumeHealth not supported",
	"ControllerListVolumeHealth not supported",
	"SNAPSHOT_ACCESSIBILITY_CONSTRAINTS not supported",
	"Service does not have single node multi writer capability",
}
