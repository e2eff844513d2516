package volumetest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
)

// runAbilities checks the optional abilities the provider has: snapshots
// (volume.Snapshotter), volumes created from a source, expansion
// (volume.Expander) and write locks (volume.Unlocker). A provider without
// an ability, or that implements its interface but answers
// ErrNotSupported (a CSI client of a driver without it), is not checked for
// it. A copy of a volume (CreateRequest.Source naming a volume) is
// checked when Capabilities.Clone is set; a snapshotter without it must
// refuse one with ErrNotSupported.
func runAbilities(t *testing.T, h Harness) {
	t.Run("Snapshots", func(t *testing.T) {
		p := h.New(t)
		sp, ok := p.(volume.Snapshotter)
		if !ok {
			t.Log("the provider takes no snapshots")
			return
		}
		ctx := testContext(t)
		caps := capabilities(t, ctx, p)
		v := create(t, ctx, p, h, "snapped")
		writeFile(t, ctx, p, caps, v, "f", "before")

		s, err := sp.CreateSnapshot(ctx, v.ID, "snap-1")
		if errors.Is(err, volume.ErrNotSupported) { // a CSI driver without the capability
			t.Logf("the provider takes no snapshots: %v", err)
			return
		}
		if err != nil {
			t.Fatalf("CreateSnapshot: %v", err)
		}
		if s.ID == "" || s.SourceVolumeID != v.ID {
			t.Fatalf("CreateSnapshot = %+v; want an ID and source %q", s, v.ID)
		}
		if again, err := sp.CreateSnapshot(ctx, v.ID, "snap-1"); err != nil || again.ID != s.ID {
			t.Fatalf("second CreateSnapshot = %+v, %v; want ID %q", again, err, s.ID)
		}
		other := create(t, ctx, p, h, "other")
		if _, err := sp.CreateSnapshot(ctx, other.ID, "snap-1"); !errors.Is(err, volume.ErrExists) {
			t.Errorf("CreateSnapshot of another volume with a taken name: err = %v; want ErrExists", err)
		}
		if _, err := sp.CreateSnapshot(ctx, "no-such-volume", "snap-2"); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("CreateSnapshot of an unknown volume: err = %v; want ErrNotFound", err)
		}
		snaps, err := sp.ListSnapshots(ctx, v.ID)
		if err != nil || len(snaps) != 1 || snaps[0].ID != s.ID {
			t.Fatalf("ListSnapshots(%q) = %+v, %v; want just %q", v.ID, snaps, err, s.ID)
		}
		if snaps, err := sp.ListSnapshots(ctx, other.ID); err != nil || len(snaps) != 0 {
			t.Errorf("ListSnapshots(%q) = %+v, %v; want none", other.ID, snaps, err)
		}
		if all, err := sp.ListSnapshots(ctx, ""); err != nil || !hasSnapshot(all, s.ID) {
			t.Errorf("ListSnapshots(\"\") = %+v, %v; want %q among them", all, err, s.ID)
		}

		// The snapshot keeps the data of its time.
		writeFile(t, ctx, p, caps, v, "f", "after")
		clone, err := p.Create(ctx, volume.CreateRequest{Name: "from-snap", CapacityBytes: h.CapacityBytes, Parameters: h.Parameters[0], Source: &volume.Source{SnapshotID: s.ID}})
		switch {
		case errors.Is(err, volume.ErrNotSupported):
			t.Log("the provider creates no volumes from snapshots")
		case err != nil:
			t.Fatalf("Create from snapshot: %v", err)
		default:
			if got := readFile(t, ctx, p, caps, clone, "f"); got != "before" {
				t.Errorf("volume from snapshot has %q; want the snapshot's %q", got, "before")
			}
			writeFile(t, ctx, p, caps, clone, "f", "clone")
			if got := readFile(t, ctx, p, caps, v, "f"); got != "after" {
				t.Errorf("writing the clone changed its origin to %q", got)
			}
			if _, err := p.Create(ctx, volume.CreateRequest{Name: "from-snap", CapacityBytes: h.CapacityBytes, Parameters: h.Parameters[0], Source: &volume.Source{SnapshotID: s.ID}}); err != nil {
				t.Errorf("second Create from snapshot: %v", err)
			}
			if _, err := p.Create(ctx, volume.CreateRequest{Name: "from-none", CapacityBytes: h.CapacityBytes, Parameters: h.Parameters[0], Source: &volume.Source{SnapshotID: "no-such-snapshot"}}); !errors.Is(err, volume.ErrNotFound) {
				t.Errorf("Create from an unknown snapshot: err = %v; want ErrNotFound", err)
			}
			if err := p.Delete(ctx, clone.ID); err != nil {
				t.Fatalf("Delete clone: %v", err)
			}
		}

		if err := sp.DeleteSnapshot(ctx, s.ID); err != nil {
			t.Fatalf("DeleteSnapshot: %v", err)
		}
		if err := sp.DeleteSnapshot(ctx, s.ID); err != nil {
			t.Fatalf("second DeleteSnapshot: %v", err)
		}
		if snaps, err := sp.ListSnapshots(ctx, v.ID); err != nil || len(snaps) != 0 {
			t.Errorf("ListSnapshots after DeleteSnapshot = %+v, %v; want none", snaps, err)
		}
		for _, id := range []string{v.ID, other.ID} {
			if err := p.Delete(ctx, id); err != nil {
				t.Fatalf("Delete: %v", err)
			}
		}
	})
	t.Run("CloneVolume", func(t *testing.T) {
		p := h.New(t)
		ctx := testContext(t)
		caps := capabilities(t, ctx, p)
		_, snapshots := p.(volume.Snapshotter)
		if !caps.Clone && !snapshots {
			t.Log("the provider copies no volumes")
			return
		}
		v := create(t, ctx, p, h, "origin")
		src := &volume.Source{VolumeID: v.ID}
		if !caps.Clone {
			_, err := p.Create(ctx, volume.CreateRequest{Name: "copy", CapacityBytes: h.CapacityBytes, Parameters: h.Parameters[0], Source: src})
			if !errors.Is(err, volume.ErrNotSupported) {
				t.Errorf("Create from a volume without Capabilities.Clone: err = %v; want ErrNotSupported", err)
			}
			if err := p.Delete(ctx, v.ID); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			return
		}
		writeFile(t, ctx, p, caps, v, "f", "origin")
		c, err := p.Create(ctx, volume.CreateRequest{Name: "copy", CapacityBytes: h.CapacityBytes, Parameters: h.Parameters[0], Source: src})
		if err != nil {
			t.Fatalf("Create from volume: %v", err)
		}
		if got := readFile(t, ctx, p, caps, c, "f"); got != "origin" {
			t.Errorf("copy has %q; want %q", got, "origin")
		}
		writeFile(t, ctx, p, caps, c, "f", "copy")
		if got := readFile(t, ctx, p, caps, v, "f"); got != "origin" {
			t.Errorf("writing the copy changed its origin to %q", got)
		}
		if again, err := p.Create(ctx, volume.CreateRequest{Name: "copy", CapacityBytes: h.CapacityBytes, Parameters: h.Parameters[0], Source: src}); err != nil || again.ID != c.ID {
			t.Errorf("second Create from volume = %+v, %v; want ID %q", again, err, c.ID)
		}
		if _, err := p.Create(ctx, volume.CreateRequest{Name: "copy", CapacityBytes: h.CapacityBytes, Parameters: h.Parameters[0]}); !errors.Is(err, volume.ErrExists) {
			t.Errorf("Create of the copy's name without its source: err = %v; want ErrExists", err)
		}
		if _, err := p.Create(ctx, volume.CreateRequest{Name: "copy-none", CapacityBytes: h.CapacityBytes, Parameters: h.Parameters[0], Source: &volume.Source{VolumeID: "no-such-volume"}}); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("Create from an unknown volume: err = %v; want ErrNotFound", err)
		}
		for _, id := range []string{c.ID, v.ID} {
			if err := p.Delete(ctx, id); err != nil {
				t.Fatalf("Delete: %v", err)
			}
		}
	})
	t.Run("Expand", func(t *testing.T) {
		p := h.New(t)
		ep, ok := p.(volume.Expander)
		if !ok || h.CapacityBytes <= 0 {
			t.Log("the provider expands no volumes, or the harness gives no capacity")
			return
		}
		ctx := testContext(t)
		caps := capabilities(t, ctx, p)
		v := create(t, ctx, p, h, "grown")
		size := 2 * h.CapacityBytes
		got, err := ep.Expand(ctx, volume.ExpandRequest{VolumeID: v.ID, CapacityBytes: size})
		if errors.Is(err, volume.ErrNotSupported) {
			t.Logf("the provider expands no volumes: %v", err)
			return
		}
		if err != nil || got < size {
			t.Fatalf("Expand(%d) = %d, %v; want at least %d", size, got, err, size)
		}
		if again, err := ep.Expand(ctx, volume.ExpandRequest{VolumeID: v.ID, CapacityBytes: got}); err != nil || again != got {
			t.Errorf("Expand to the current capacity = %d, %v; want %d", again, err, got)
		}
		if _, err := ep.Expand(ctx, volume.ExpandRequest{VolumeID: v.ID, CapacityBytes: h.CapacityBytes}); !errors.Is(err, volume.ErrInvalid) {
			t.Errorf("Expand to less: err = %v; want ErrInvalid (no shrink)", err)
		}
		if _, err := ep.Expand(ctx, volume.ExpandRequest{VolumeID: "no-such-volume", CapacityBytes: size}); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("Expand of an unknown volume: err = %v; want ErrNotFound", err)
		}

		// Online: while published, through its paths.
		dir := t.TempDir()
		target := mount(t, ctx, p, caps, v, dir, "on", false)
		if err := os.WriteFile(filepath.Join(target, "f"), []byte("kept"), 0o644); err != nil {
			t.Fatal(err)
		}
		var before volume.Stats
		if caps.Stats {
			if before, err = p.Stats(ctx, v.ID, target); err != nil {
				t.Fatalf("Stats: %v", err)
			}
		}
		staging := ""
		if caps.Stage {
			staging = filepath.Join(dir, "on-staging")
		}
		size = 2 * got
		got, err = ep.Expand(ctx, volume.ExpandRequest{VolumeID: v.ID, CapacityBytes: size, StagingPath: staging, TargetPath: target})
		if err != nil || got < size {
			t.Fatalf("online Expand(%d) = %d, %v; want at least %d", size, got, err, size)
		}
		if caps.Stats {
			after, err := p.Stats(ctx, v.ID, target)
			if err != nil || after.CapacityBytes <= before.CapacityBytes {
				t.Errorf("Stats after online Expand = %+v, %v; want more than %d bytes", after, err, before.CapacityBytes)
			}
		}
		if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "kept" {
			t.Errorf("data after online Expand = %q, %v", b, err)
		}
		unmount(t, ctx, p, caps, v, dir, "on")
		if err := p.Delete(ctx, v.ID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	})
	t.Run("Unlock", func(t *testing.T) {
		p := h.New(t)
		up, ok := p.(volume.Unlocker)
		if !ok {
			t.Log("the provider keeps no write locks")
			return
		}
		ctx := testContext(t)
		caps := capabilities(t, ctx, p)
		v := create(t, ctx, p, h, "locked")
		if _, err := up.Unlock(ctx, v.ID); errors.Is(err, volume.ErrNotSupported) {
			t.Logf("the provider keeps no write locks: %v", err)
			return
		}
		for i := 0; i < 2; i++ {
			if holder, err := up.Unlock(ctx, v.ID); err != nil || holder != "" {
				t.Fatalf("Unlock of an unlocked volume #%d = %q, %v; want \"\", nil", i+1, holder, err)
			}
		}
		if h.Lock != nil {
			want := h.Lock(t, p, v.ID)
			dir := t.TempDir()
			staging, target := filepath.Join(dir, "s"), filepath.Join(dir, "t")
			if err := os.MkdirAll(staging, 0o755); err != nil {
				t.Fatal(err)
			}
			if caps.Stage {
				err := p.Stage(ctx, volume.StageRequest{VolumeID: v.ID, StagingPath: staging, Context: v.Context})
				if !errors.Is(err, volume.ErrInUse) {
					t.Errorf("Stage of a volume another host holds: err = %v; want ErrInUse", err)
				}
			} else {
				err := p.Publish(ctx, volume.PublishRequest{VolumeID: v.ID, TargetPath: target, Context: v.Context})
				if !errors.Is(err, volume.ErrInUse) {
					t.Errorf("Publish of a volume another host holds: err = %v; want ErrInUse", err)
				}
			}
			holder, err := up.Unlock(ctx, v.ID)
			if err != nil || holder != want {
				t.Fatalf("Unlock = %q, %v; want %q", holder, err, want)
			}
			writeFile(t, ctx, p, caps, v, "f", "mine now")
		}
		if err := p.Delete(ctx, v.ID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	})
}

func capabilities(t *testing.T, ctx context.Context, p volume.Provider) volume.Capabilities {
	t.Helper()
	caps, err := p.Capabilities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return caps
}

func create(t *testing.T, ctx context.Context, p volume.Provider, h Harness, name string) volume.Volume {
	t.Helper()
	v, err := p.Create(ctx, volume.CreateRequest{Name: name, CapacityBytes: h.CapacityBytes, Parameters: h.Parameters[0]})
	if err != nil {
		t.Fatalf("Create %s: %v", name, err)
	}
	return v
}

// writeFile mounts v, writes name and unmounts it again.
func writeFile(t *testing.T, ctx context.Context, p volume.Provider, caps volume.Capabilities, v volume.Volume, name, data string) {
	t.Helper()
	dir := t.TempDir()
	target := mount(t, ctx, p, caps, v, dir, "w", false)
	if err := os.WriteFile(filepath.Join(target, name), []byte(data), 0o644); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	unmount(t, ctx, p, caps, v, dir, "w")
}

// readFile mounts v, reads name and unmounts it again.
func readFile(t *testing.T, ctx context.Context, p volume.Provider, caps volume.Capabilities, v volume.Volume, name string) string {
	t.Helper()
	dir := t.TempDir()
	target := mount(t, ctx, p, caps, v, dir, "r", false)
	b, err := os.ReadFile(filepath.Join(target, name))
	if err != nil {
		t.Errorf("read %s: %v", name, err)
	}
	unmount(t, ctx, p, caps, v, dir, "r")
	return string(b)
}

func hasSnapshot(snaps []volume.Snapshot, id string) bool {
	for _, s := range snaps {
		if s.ID == id {
			return true
		}
	}
	return false
}
