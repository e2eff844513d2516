package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/tests/e2e/harness"
)

// TestRuntimeSidecarLoopAfterRestart: the local provider in a sidecar
// container stages a filesystem volume through a loop device, and is
// killed; the provider in the next container, which reaches the image
// through a mount namespace of its own, still finds the image attached:
// it refuses to delete the volume while it is staged, and its unstage
// waits until the loop device is gone, so no device is left and the
// volume can be deleted right after.
func TestRuntimeSidecarLoopAfterRestart(t *testing.T) {
	testenv.Require(t, "root", "loop", "mkfs.ext4", "mkfs.xfs", "ldd", "tar")
	s := newRuntimeSidecar(t, harness.BuildBinaries(t))
	c := dialRuntimeSidecar(t, s, "loop-1")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	vol, err := c.Create(ctx, volume.CreateRequest{Name: "v", CapacityBytes: 64 << 20, Parameters: map[string]string{"type": "fs"}})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	staging, target := s.stagePublish(ctx, c, vol.ID, "v")
	staged := hostMountAt(t, staging)
	if staged == nil || !strings.HasPrefix(staged.Source, "/dev/loop") {
		t.Fatalf("the host has no loop device mounted at the staging path: %+v", staged)
	}
	backing := filepath.Join("/sys/block", filepath.Base(staged.Source), "loop", "backing_file")
	image := "/" + filepath.Join(vol.ID, "disk.img")
	attached := func() bool {
		b, err := os.ReadFile(backing)
		return err == nil && strings.HasSuffix(strings.TrimSpace(string(b)), image)
	}
	if !attached() {
		t.Fatalf("%s is not backed by the volume's image", staged.Source)
	}

	s.must("kill", "-s", "KILL", "loop-1")
	s.start("loop-2")
	if err := c.Delete(ctx, vol.ID); !errors.Is(err, volume.ErrInUse) {
		t.Fatalf("DeleteVolume of a staged volume after the provider restarted: %v; want in use", err)
	}
	if _, err := os.Stat(filepath.Join(s.data, vol.ID, "disk.img")); err != nil {
		t.Fatalf("the staged volume's image after a refused delete: %v", err)
	}
	if err := c.Unpublish(ctx, vol.ID, target); err != nil {
		t.Fatalf("NodeUnpublishVolume: %v", err)
	}
	if err := c.Unstage(ctx, vol.ID, staging); err != nil {
		t.Fatalf("NodeUnstageVolume: %v", err)
	}
	// NodeUnstageVolume waits until the device is gone, so the volume can
	// be deleted at once.
	if err := c.Delete(ctx, vol.ID); err != nil {
		t.Fatalf("DeleteVolume after NodeUnstageVolume: %v", err)
	}
	err = harness.Poll(10*time.Second, func() error {
		if attached() {
			return fmt.Errorf("%s is still attached", staged.Source)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
