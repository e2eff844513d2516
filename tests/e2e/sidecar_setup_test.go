package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/plugins/csi"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/tests/e2e/harness"
)

// volumedSidecarDirs are the directories of a test of volumed with a
// provider of type sidecar, all below base.
type volumedSidecarDirs struct {
	base    string
	root    string // volumed's root, the sidecar's mount_dir
	rtRoot  string // the runtime root of the sidecar and of stow run
	sockDir string
	dataDir string
}

// newVolumedSidecar makes the directories of a test of volumed with a
// provider of type sidecar (the runtime root made, the others left to
// volumed) and a runtimeSidecar that runs stow on the runtime root alone
// (images, inspect, rm). Cleanups run in reverse: the test's later cleanups
// (dockerd, volumed, which leaves the sidecar running by design) first, then
// the sidecar container is stopped with stop (when not "", the seconds of
// `stow stop -t`) and removed, then what is left below base is released.
func newVolumedSidecar(t *testing.T, stow, prefix, container, stop string) (volumedSidecarDirs, *runtimeSidecar) {
	t.Helper()
	// Not t.TempDir: the sidecar's socket path must stay below 108 bytes.
	base, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	d := volumedSidecarDirs{
		base:    base,
		root:    filepath.Join(base, "root"),
		rtRoot:  filepath.Join(base, "runtime"),
		sockDir: filepath.Join(base, "csi"),
		dataDir: filepath.Join(base, "data"),
	}
	rt := &runtimeSidecar{t: t, stow: stow, root: d.rtRoot}
	t.Cleanup(func() {
		harness.Sweep(t, base)
		if err := os.RemoveAll(base); err != nil {
			t.Errorf("remove %s: %v", base, err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of %s:\n%s", container, rt.run("logs", container).Stdout)
		}
		if stop != "" {
			if r := rt.run("stop", "-t", stop, container); r.Code != 0 && !strings.Contains(r.Stderr, "not found") {
				t.Errorf("stow stop %s: %s", container, r)
			}
		}
		if r := rt.run("rm", "-f", container); r.Code != 0 && !strings.Contains(r.Stderr, "not found") {
			t.Errorf("stow rm -f %s: %s", container, r)
		}
	})
	if err := os.Mkdir(d.rtRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	return d, rt
}

// buildImage builds an image with tests/scripts/SCRIPT from binary as a
// tarball in dir and imports it into the runtime root as name.
func (s *runtimeSidecar) buildImage(dir, script, binary, name string) {
	s.t.Helper()
	tarball := filepath.Join(dir, strings.TrimSuffix(script, ".sh")+".tar")
	ctx, cancel := context.WithTimeout(s.t.Context(), 5*time.Minute)
	defer cancel()
	path := filepath.Join("..", "scripts", script)
	if out, err := exec.CommandContext(ctx, path, tarball, binary).CombinedOutput(); err != nil {
		s.t.Fatalf("%s: %v\n%s", path, err, out)
	}
	s.must("image", "import", tarball, name)
}

// dialRuntimeSidecar starts the local provider as the sidecar container
// name and dials its CSI socket; a cleanup closes the client.
func dialRuntimeSidecar(t *testing.T, s *runtimeSidecar, name string) *csi.Client {
	t.Helper()
	s.start(name)
	c, err := csi.Dial("unix://"+s.socket(), csi.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// stagePublish stages volume id at s.mnt/staging/name and publishes it at
// s.mnt/mounts/name (single node writer), and returns both paths.
func (s *runtimeSidecar) stagePublish(ctx context.Context, c *csi.Client, id, name string) (staging, target string) {
	s.t.Helper()
	staging, target = filepath.Join(s.mnt, "staging", name), filepath.Join(s.mnt, "mounts", name)
	if err := os.MkdirAll(staging, 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := c.Stage(ctx, volume.StageRequest{VolumeID: id, StagingPath: staging, Access: volume.SingleNodeWriter}); err != nil {
		s.t.Fatalf("NodeStageVolume: %v", err)
	}
	if err := c.Publish(ctx, volume.PublishRequest{VolumeID: id, StagingPath: staging, TargetPath: target, Access: volume.SingleNodeWriter}); err != nil {
		s.t.Fatalf("NodePublishVolume: %v", err)
	}
	return staging, target
}
