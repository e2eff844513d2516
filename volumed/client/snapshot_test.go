package client_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/client"
	"github.com/stowage/stowage/volumed/control"
	"github.com/stowage/stowage/volumed/control/controltest"
)

// TestSnapshotsResizeUnlock drives snapshots, copies, resize and unlock
// through the control API against the real manager and a fake "rbd"
// provider, next to a "local" one without these abilities.
func TestSnapshotsResizeUnlock(t *testing.T) {
	e := controltest.New(t, "rbd", "local"+controltest.BasicSuffix)
	c, err := client.New(e.Serve(t, control.Info{}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := c.CreateVolume(ctx, api.CreateRequest{Name: "pg", Options: map[string]string{"size": "1MiB"}}); err != nil {
		t.Fatal(err)
	}
	s, err := c.Snapshot(ctx, "pg", "s1")
	if err != nil || s.Volume != "pg" || s.Name != "s1" || s.State != api.StateReady || s.Provider != "rbd" {
		t.Fatalf("Snapshot = %+v, %v", s, err)
	}
	if ss, err := c.Snapshots(ctx, "pg"); err != nil || len(ss) != 1 || ss[0] != s {
		t.Errorf("Snapshots(pg) = %+v, %v", ss, err)
	}
	if ss, err := c.Snapshots(ctx, ""); err != nil || len(ss) != 1 {
		t.Errorf("Snapshots() = %+v, %v", ss, err)
	}
	v, err := c.CreateVolume(ctx, api.CreateRequest{Name: "copy", Options: map[string]string{"from": "pg@s1"}})
	if err != nil || v.Provider != "rbd" || v.CapacityBytes != 1<<20 || v.Options["from"] != "pg@s1" {
		t.Errorf("CreateVolume from pg@s1 = %+v, %v", v, err)
	}
	if err := c.RemoveVolume(ctx, "pg"); !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), "pg@s1") {
		t.Errorf("RemoveVolume of a volume with snapshots = %v; want ErrInUse naming pg@s1", err)
	}

	v, err = c.ResizeVolume(ctx, "pg", "2MiB")
	if err != nil || v.CapacityBytes != 2<<20 {
		t.Errorf("ResizeVolume = %+v, %v", v, err)
	}
	if _, err := c.ResizeVolume(ctx, "pg", "1MiB"); !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), "only grow") {
		t.Errorf("shrink = %v; want ErrInvalid", err)
	}
	if _, err := c.ResizeVolume(ctx, "pg", "lots"); !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), `size "lots"`) {
		t.Errorf("ResizeVolume(lots) = %v; want ErrInvalid about the size", err)
	}

	if err := e.Fakes["rbd"].SetLockHolder("pg", "host-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UnlockVolume(ctx, "pg", false); !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("UnlockVolume without force = %v; want ErrInvalid naming --force", err)
	}
	if res, err := c.UnlockVolume(ctx, "pg", true); err != nil || res != (api.UnlockResult{Volume: "pg", Holder: "host-b"}) {
		t.Errorf("UnlockVolume = %+v, %v", res, err)
	}

	if err := c.RemoveSnapshot(ctx, "pg", "s1"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveSnapshot(ctx, "pg", "s1"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("second RemoveSnapshot = %v; want ErrNotFound", err)
	}
	if _, err := c.Snapshot(ctx, "pg", "s2"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveVolumeWithSnapshots(ctx, "pg"); err != nil {
		t.Fatal(err)
	}
	if ss, err := c.Snapshots(ctx, ""); err != nil || len(ss) != 0 {
		t.Errorf("Snapshots after removing pg = %+v, %v", ss, err)
	}

	// A provider without the abilities says so, as not_supported (501).
	if _, err := c.CreateVolume(ctx, api.CreateRequest{Name: "plain", Options: map[string]string{"provider": "local", "size": "1MiB"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Snapshot(ctx, "plain", "s"); !errors.Is(err, volume.ErrNotSupported) || !strings.Contains(err.Error(), "provider local cannot take snapshots") {
		t.Errorf("Snapshot on local = %v", err)
	}
	if _, err := c.ResizeVolume(ctx, "plain", "2MiB"); !errors.Is(err, volume.ErrNotSupported) {
		t.Errorf("ResizeVolume on local = %v", err)
	}
	if _, err := c.UnlockVolume(ctx, "plain", true); !errors.Is(err, volume.ErrNotSupported) {
		t.Errorf("UnlockVolume on local = %v", err)
	}
	if _, err := c.Snapshots(ctx, "ghost"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Snapshots(ghost) = %v; want ErrNotFound", err)
	}
}
