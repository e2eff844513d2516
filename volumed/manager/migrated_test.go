package manager

import (
	"errors"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
)

func TestMarkMigrated(t *testing.T) {
	e := newEnv(t, false)
	ctx := t.Context()
	if _, err := e.m.Create(ctx, "v", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.MarkMigrated(ctx, "v", ""); !errors.Is(err, volume.ErrInvalid) {
		t.Errorf("MarkMigrated with no target = %v, want ErrInvalid", err)
	}
	if _, err := e.m.MarkMigrated(ctx, "nope", "ssh://b"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("MarkMigrated of an unknown volume = %v, want ErrNotFound", err)
	}
	if _, err := e.m.Mount(ctx, "v", "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.MarkMigrated(ctx, "v", "ssh://b"); !errors.Is(err, volume.ErrInUse) {
		t.Errorf("MarkMigrated while mounted = %v, want ErrInUse", err)
	}
	if err := e.m.Unmount(ctx, "v", "c1"); err != nil {
		t.Fatal(err)
	}
	v, err := e.m.MarkMigrated(ctx, "v", "ssh://b")
	if err != nil || v.MigratedTo != "ssh://b" {
		t.Fatalf("MarkMigrated = %+v, %v", v, err)
	}
	// The mark survives a restart and goes with the volume.
	e.open(t)
	if v, err := e.m.Get(ctx, "v"); err != nil || v.MigratedTo != "ssh://b" {
		t.Fatalf("after restart: %+v, %v; want migrated_to ssh://b", v, err)
	}
	if err := e.m.Remove(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Create(ctx, "v", nil); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.m.Get(ctx, "v"); v.MigratedTo != "" {
		t.Errorf("a new volume of the same name is marked migrated to %q", v.MigratedTo)
	}
}
