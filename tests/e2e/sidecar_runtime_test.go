package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/runtime/container"
	"github.com/stowage/stowage/tests/e2e/harness"
)

// runtimeSidecar runs the local provider in containers of the bundled runtime,
// from the image tests/scripts/provider-image.sh builds: its CSI socket in
// a host directory bound at /csi, its volumes in a host directory bound at
// /data (so they outlive the container), and the directory where it mounts
// volumes bound rshared at the same path as on the host, since the paths
// given over CSI are the host's.
type runtimeSidecar struct {
	t    *testing.T
	stow string
	dir  string // holds all of the below
	root string // the runtime root
	sock string // the socket directory
	data string // the provider's root, /data in the container
	mnt  string // staging and publish paths, rshared
	// names are the containers started, for the cleanup and its logs.
	names []string
}

// newRuntimeSidecar builds and imports the provider image into a new runtime
// root. A cleanup removes the containers, unmounts what is left below its
// directory (the bind of the mount directory on itself included) and
// removes it.
func newRuntimeSidecar(t *testing.T, bins harness.Binaries) *runtimeSidecar {
	t.Helper()
	// Not t.TempDir: a unix socket path must stay below 108 bytes.
	dir, err := os.MkdirTemp("", "stowage-sidecar-")
	if err != nil {
		t.Fatal(err)
	}
	s := &runtimeSidecar{t: t, stow: bins.Stow, dir: dir, root: filepath.Join(dir, "runtime"),
		sock: filepath.Join(dir, "csi"), data: filepath.Join(dir, "data"), mnt: filepath.Join(dir, "mnt")}
	t.Cleanup(func() {
		for _, name := range s.names {
			if t.Failed() {
				t.Logf("log of %s:\n%s", name, s.run("logs", name).Stdout)
			}
			if r := s.run("rm", "-f", name); r.Code != 0 {
				t.Errorf("stow rm -f %s: %s", name, r)
			}
		}
		harness.Sweep(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	for _, d := range []string{s.root, s.sock, s.data, s.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.buildImage(dir, "provider-image.sh", filepath.Join(filepath.Dir(bins.Stow), "stow-provider"), "stowage-provider")
	return s
}

// run runs stow on the sidecar's runtime root.
func (s *runtimeSidecar) run(args ...string) harness.Result {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.stow, append([]string{"--root", s.root}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := harness.Result{Stdout: stdout.String(), Stderr: stderr.String(), Code: cmd.ProcessState.ExitCode()}
	if err != nil && r.Code == 0 {
		r.Code, r.Stderr = -1, r.Stderr+err.Error()
	}
	return r
}

// must runs stow, fails the test unless it exits 0 and returns its output
// without surrounding space.
func (s *runtimeSidecar) must(args ...string) string {
	s.t.Helper()
	r := s.run(args...)
	if r.Code != 0 {
		s.t.Fatalf("stow %s: %s", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

// socket returns the CSI socket's host path.
func (s *runtimeSidecar) socket() string { return filepath.Join(s.sock, "csi.sock") }

// start runs the provider in a detached, privileged container named name
// and waits until its socket answers on the host.
func (s *runtimeSidecar) start(name string) {
	s.t.Helper()
	s.names = append(s.names, name)
	s.must("run", "-d", "--name", name, "--privileged", "--net", "host",
		"--mount", "type=bind,source="+s.sock+",target=/csi",
		"--mount", "type=bind,source="+s.data+",target=/data",
		"--mount", "type=bind,source="+s.mnt+",target="+s.mnt+",propagation=rshared",
		"stowage-provider",
		"stow-provider", "local", "--endpoint", "unix:///csi/csi.sock", "--root", "/data",
		"--node-id", "e2e", "--log-level", "debug")
	err := harness.Poll(30*time.Second, func() error {
		if st := s.state(name); st.Status != container.Running {
			return fmt.Errorf("container %s is %s (exit %d, %s)", name, st.Status, st.ExitCode, st.Error)
		}
		c, err := net.DialTimeout("unix", s.socket(), time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		s.t.Fatalf("start the provider in container %s: %v\nlog:\n%s", name, err, s.run("logs", name).Stdout)
	}
}

// state returns the state of container name.
func (s *runtimeSidecar) state(name string) container.State {
	s.t.Helper()
	var cs []container.Container
	out := s.must("inspect", name)
	if err := json.Unmarshal([]byte(out), &cs); err != nil || len(cs) != 1 {
		s.t.Fatalf("stow inspect %s: %v\n%s", name, err, out)
	}
	return cs[0].State
}

// hostMountAt returns the host's topmost mount at path, or nil.
func hostMountAt(t *testing.T, path string) *mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	if len(infos) == 0 {
		return nil
	}
	return infos[len(infos)-1]
}

// TestRuntimeProviderSidecar runs the local provider as a sidecar container of the
// bundled runtime and drives it from the host over its CSI socket: a
// filesystem volume staged and published by the container is mounted on
// the host, where a file is written and read; the mounts and the data stay
// when the container is killed with SIGKILL; a new container of the
// provider unpublishes, unstages and deletes the volume, and nothing is
// left mounted or attached.
func TestRuntimeProviderSidecar(t *testing.T) {
	testenv.Require(t, "root", "loop", "mkfs.ext4", "mkfs.xfs", "ldd", "tar")
	s := newRuntimeSidecar(t, harness.BuildBinaries(t))
	c := dialRuntimeSidecar(t, s, "provider-1")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	vol, err := c.Create(ctx, volume.CreateRequest{Name: "v", CapacityBytes: 64 << 20, Parameters: map[string]string{"type": "fs"}})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.data, vol.ID)); err != nil {
		t.Errorf("the volume is not in the provider's root on the host: %v", err)
	}
	staging, target := s.stagePublish(ctx, c, vol.ID, "v")
	// The mounts the container made are the host's.
	staged := hostMountAt(t, staging)
	if staged == nil || staged.FSType != "ext4" || !strings.HasPrefix(staged.Source, "/dev/loop") {
		t.Fatalf("the host has no ext4 on a loop device at the staging path: %+v", staged)
	}
	loop := staged.Source
	backing := filepath.Join("/sys/block", filepath.Base(loop), "loop", "backing_file")
	// The loop device's backing file, as the host sees its path: the
	// container opened it through its own bind of the data directory.
	image := "/" + filepath.Join(vol.ID, "disk.img")
	if b, err := os.ReadFile(backing); err != nil || !strings.HasSuffix(strings.TrimSpace(string(b)), image) {
		t.Fatalf("%s: %q, %v, want the volume's image (a path ending in %s)", backing, b, err, image)
	} else {
		t.Logf("%s is backed by %s", loop, strings.TrimSpace(string(b)))
	}
	if m := hostMountAt(t, target); m == nil || m.FSType != "ext4" {
		t.Fatalf("the host has no ext4 at the publish path: %+v", m)
	}
	file := filepath.Join(target, "f")
	if err := os.WriteFile(file, []byte("before\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(staging, "f")); err != nil || string(b) != "before\n" {
		t.Errorf("the staged file system reads %q, %v, want what was written through the publish path", b, err)
	}

	// SIGKILL to the provider: its container ends, the host keeps the
	// mounts, the loop device and the data.
	s.must("kill", "-s", "KILL", "provider-1")
	err = harness.Poll(30*time.Second, func() error {
		if st := s.state("provider-1"); st.Status != container.Exited {
			return fmt.Errorf("provider-1 is %s", st.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := s.state("provider-1"); st.ExitCode != 137 {
		t.Errorf("provider-1 exited with %d, want 137 (SIGKILL)", st.ExitCode)
	}
	for _, p := range []string{staging, target} {
		if m := hostMountAt(t, p); m == nil || m.Source != loop {
			t.Errorf("after the provider was killed, %s is %+v, want still mounted from %s", p, m, loop)
		}
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString("during\n")
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		t.Errorf("write while the provider is down: %v", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "before\nduring\n" {
		t.Errorf("read while the provider is down: %q, %v", b, err)
	}

	// A new container of the provider takes over: the client reconnects to
	// the same socket, and the unmounts it makes reach the host.
	s.start("provider-2")
	if err := c.Unpublish(ctx, vol.ID, target); err != nil {
		t.Fatalf("NodeUnpublishVolume: %v", err)
	}
	if m := hostMountAt(t, target); m != nil {
		t.Errorf("the publish path is still mounted on the host: %+v", m)
	}
	if err := c.Unstage(ctx, vol.ID, staging); err != nil {
		t.Fatalf("NodeUnstageVolume: %v", err)
	}
	if err := c.Delete(ctx, vol.ID); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.data, vol.ID)); !os.IsNotExist(err) {
		t.Errorf("the volume is still in the provider's root: %v", err)
	}
	// Below the mount directory only its bind on itself is left, which the
	// runtime made shared for the rshared bind.
	if m := harness.MountsUnder(t, s.mnt); len(m) != 1 || m[0] != s.mnt {
		t.Errorf("mounts below %s: %v, want only its bind on itself", s.mnt, m)
	}
	err = harness.Poll(10*time.Second, func() error {
		if b, err := os.ReadFile(backing); err == nil && strings.HasSuffix(strings.TrimSpace(string(b)), image) {
			return fmt.Errorf("%s is still attached to %s", loop, strings.TrimSpace(string(b)))
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	// SIGTERM stops the provider gracefully.
	s.must("stop", "provider-2")
	if st := s.state("provider-2"); st.Status != container.Exited || st.ExitCode != 0 {
		t.Errorf("provider-2 after stow stop: %s, exit %d, want exited 0", st.Status, st.ExitCode)
	}
}
