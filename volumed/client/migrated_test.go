package client_test

import (
	"errors"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/client"
	"github.com/stowage/stowage/volumed/control"
	"github.com/stowage/stowage/volumed/control/controltest"
)

func TestMarkMigrated(t *testing.T) {
	e := controltest.New(t)
	c, err := client.New(e.Serve(t, control.Info{}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := e.Manager.Create(ctx, "v", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Manager.Mount(ctx, "v", "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MarkMigrated(ctx, "v", "ssh://b/?volume=v"); !errors.Is(err, volume.ErrInUse) {
		t.Errorf("MarkMigrated of a mounted volume = %v, want ErrInUse", err)
	}
	if err := e.Manager.Unmount(ctx, "v", "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MarkMigrated(ctx, "nope", "ssh://b"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("MarkMigrated of an unknown volume = %v, want ErrNotFound", err)
	}
	v, err := c.MarkMigrated(ctx, "v", "ssh://b/?volume=v")
	if err != nil || v.MigratedTo != "ssh://b/?volume=v" {
		t.Fatalf("MarkMigrated = %+v, %v", v, err)
	}
	if v, err := c.Volume(ctx, "v"); err != nil || v.MigratedTo != "ssh://b/?volume=v" {
		t.Errorf("Volume after MarkMigrated = %+v, %v", v, err)
	}
}
