//go:build ceph && linux && cgo

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/csi"
	"github.com/stowage/stowage/plugins/rbd/rbdtest"
	"github.com/stowage/stowage/plugins/volume"
)

// TestKill9 kills stow-rbd with SIGKILL while a volume is staged and
// published: the restarted sidecar reports the dead mapping, refuses to
// stage over it, cleans it up on unstage, and stages the volume again with
// the data synced before the kill.
func TestKill9(t *testing.T) {
	testenv.Require(t, "root", "loop", "mkfs.ext4")
	c := rbdtest.Start(t, rbdtest.Options{})
	sc := startSidecar(t, c, "crash")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dial := func() *csi.Client {
		cl, err := csi.Dial("unix://"+sc.socket, csi.ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	cl := dial()
	if _, err := cl.Create(ctx, volume.CreateRequest{Name: "v", CapacityBytes: 64 << 20}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	work := t.TempDir()
	staging, target := filepath.Join(work, "staging"), filepath.Join(work, "target")
	if err := os.Mkdir(staging, 0o755); err != nil {
		t.Fatal(err)
	}
	stage := func(cl *csi.Client) error {
		return cl.Stage(ctx, volume.StageRequest{VolumeID: "v", StagingPath: staging, Access: volume.SingleNodeWriter})
	}
	publish := func(cl *csi.Client) {
		t.Helper()
		if err := cl.Publish(ctx, volume.PublishRequest{VolumeID: "v", StagingPath: staging, TargetPath: target, Access: volume.SingleNodeWriter}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	release := func(cl *csi.Client) {
		t.Helper()
		if err := cl.Unpublish(ctx, "v", target); err != nil {
			t.Fatalf("Unpublish: %v", err)
		}
		if err := cl.Unstage(ctx, "v", staging); err != nil {
			t.Fatalf("Unstage: %v", err)
		}
	}
	if err := stage(cl); err != nil {
		t.Fatalf("Stage: %v", err)
	}
	publish(cl)
	data := make([]byte, 1<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(target, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	sc.kill9()
	sc.start()
	if log, _ := os.ReadFile(sc.log); !strings.Contains(string(log), "loop device of a previous run is still attached") {
		t.Errorf("the restarted sidecar does not report the dead mapping; log:\n%s", log)
	}
	cl = dial()
	if err := stage(cl); !errors.Is(err, volume.ErrInUse) {
		t.Errorf("Stage over the dead mapping: %v; want ErrInUse", err)
	} else {
		t.Logf("Stage over the dead mapping: %v", err)
	}
	release(cl) // cleans up what the killed sidecar left
	if devs, _ := filepath.Glob("/sys/block/loop*/loop/backing_file"); len(devs) > 0 {
		for _, d := range devs {
			if b, _ := os.ReadFile(d); strings.HasPrefix(string(b), sc.dir) {
				t.Errorf("loop device still attached after Unstage: %s", strings.TrimSpace(string(b)))
			}
		}
	}
	// The lock the killed sidecar held is this host's: broken at Stage.
	if err := stage(cl); err != nil {
		t.Fatalf("Stage after the cleanup: %v", err)
	}
	publish(cl)
	got, err := os.ReadFile(filepath.Join(target, "f"))
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("data synced before the kill: %d bytes, %v; want the %d written", len(got), err, len(data))
	}
	release(cl)
	if err := cl.Delete(ctx, "v"); err != nil {
		t.Errorf("Delete: %v", err)
	}
}
