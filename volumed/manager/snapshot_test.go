package manager

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/store"
)

// abilityEnv is a manager with a provider "rbd" that has every ability
// (the default) and a provider "local" that has none.
type abilityEnv struct {
	root  string
	full  *volumetest.Fake
	basic *volumetest.Fake
	store *store.Store
	m     *Manager
}

func newAbilityEnv(t *testing.T) *abilityEnv {
	t.Helper()
	root := t.TempDir()
	e := &abilityEnv{
		root:  root,
		full:  volumetest.NewFake(filepath.Join(root, "rbd"), true),
		basic: volumetest.NewFake(filepath.Join(root, "local"), false),
	}
	e.open(t)
	return e
}

// open (re)opens the store and a new manager, as a restarted volumed would.
func (e *abilityEnv) open(t *testing.T) {
	t.Helper()
	e.store, e.m = openManager(t, e.root, e.store, Options{
		Root:            filepath.Join(e.root, "volumed"),
		Providers:       map[string]volume.Provider{"rbd": e.full, "local": e.basic.Basic()},
		DefaultProvider: "rbd",
	})
}

// write mounts the volume, writes data to f and unmounts it.
func (e *abilityEnv) write(t *testing.T, name, data string) {
	t.Helper()
	ctx := ctxT(t)
	mp, err := e.m.Mount(ctx, name, "w")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Unmount(ctx, name, "w"); err != nil {
		t.Fatal(err)
	}
}

// read mounts the volume, reads f and unmounts it.
func (e *abilityEnv) read(t *testing.T, name string) string {
	t.Helper()
	ctx := ctxT(t)
	mp, err := e.m.Mount(ctx, name, "r")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(mp, "f"))
	if err != nil {
		t.Error(err)
	}
	if err := e.m.Unmount(ctx, name, "r"); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func snapNames(snaps []api.Snapshot) string {
	var out []string
	for _, s := range snaps {
		out = append(out, s.Volume+"@"+s.Name+":"+s.State)
	}
	return strings.Join(out, " ")
}

func TestSnapshotCloneRoundTrip(t *testing.T) {
	e := newAbilityEnv(t)
	ctx := ctxT(t)
	if _, err := e.m.Create(ctx, "pg", map[string]string{"size": "1MiB", "label": "db"}); err != nil {
		t.Fatal(err)
	}
	e.write(t, "pg", "v1")
	s, err := e.m.Snapshot(ctx, "pg", "s1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Volume != "pg" || s.Name != "s1" || s.Provider != "rbd" || s.ID != "s1" || s.State != api.StateReady || !s.ReadyToUse || s.SizeBytes != 1<<20 {
		t.Errorf("Snapshot = %+v", s)
	}
	if again, err := e.m.Snapshot(ctx, "pg", "s1"); err != nil || again != s {
		t.Errorf("second Snapshot = %+v, %v; want %+v", again, err, s)
	}
	e.write(t, "pg", "v2")

	// A restarted volumed knows its snapshots.
	e.open(t)
	if got, err := e.m.Snapshots(ctx, "pg"); err != nil || snapNames(got) != "pg@s1:ready" {
		t.Fatalf("Snapshots(pg) after restart = %q, %v", snapNames(got), err)
	}

	// A copy of the snapshot, on the source's provider with its size and
	// parameters, and a copy of the volume as it is now.
	c, err := e.m.Create(ctx, "pg-copy", map[string]string{"from": "pg@s1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Provider != "rbd" || c.CapacityBytes != 1<<20 {
		t.Errorf("copy = %+v; want provider rbd with 1 MiB", c)
	}
	if again, err := e.m.Create(ctx, "pg-copy", map[string]string{"from": "pg@s1"}); err != nil || again.Name != "pg-copy" {
		t.Errorf("second Create from the snapshot = %+v, %v", again, err)
	}
	if got := e.read(t, "pg-copy"); got != "v1" {
		t.Errorf("copy of pg@s1 has %q; want v1", got)
	}
	if _, err := e.m.Create(ctx, "pg-now", map[string]string{"from": "pg", "size": "2MiB"}); err != nil {
		t.Fatal(err)
	}
	if got := e.read(t, "pg-now"); got != "v2" {
		t.Errorf("copy of pg has %q; want v2", got)
	}
	e.write(t, "pg-copy", "changed")
	if got := e.read(t, "pg"); got != "v2" {
		t.Errorf("writing a copy changed pg to %q", got)
	}

	if all, err := e.m.Snapshots(ctx, ""); err != nil || len(all) != 1 {
		t.Errorf("Snapshots(\"\") = %+v, %v", all, err)
	}
	if err := e.m.RemoveSnapshot(ctx, "pg", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Create(ctx, "pg-copy", map[string]string{"from": "pg@s1"}); err != nil {
		t.Errorf("Create of an existing copy whose snapshot is gone: %v", err)
	}
	if err := e.m.RemoveSnapshot(ctx, "pg", "s1"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("second RemoveSnapshot = %v; want ErrNotFound", err)
	}
	if snaps, err := e.full.ListSnapshots(ctx, ""); err != nil || len(snaps) != 0 {
		t.Errorf("provider still has snapshots %+v, %v", snaps, err)
	}
}

func TestSnapshotFailureLeavesNothing(t *testing.T) {
	e := newAbilityEnv(t)
	ctx := ctxT(t)
	if _, err := e.m.Create(ctx, "pg", nil); err != nil {
		t.Fatal(err)
	}
	e.full.Fail(volume.ErrUnavailable)
	if _, err := e.m.Snapshot(ctx, "pg", "s1"); !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("Snapshot of a broken provider = %v; want ErrUnavailable", err)
	}
	if _, err := e.m.Create(ctx, "copy", map[string]string{"from": "pg"}); !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("Create from a broken provider = %v; want ErrUnavailable", err)
	}
	e.full.Fail(nil)
	if got, err := e.m.Snapshots(ctx, ""); err != nil || len(got) != 0 {
		t.Errorf("Snapshots after failures = %q, %v; want none", snapNames(got), err)
	}
	if _, err := e.m.Get(ctx, "copy"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("a failed copy left a record: %v", err)
	}

	// A snapshot whose record says creating (volumed stopped while the
	// provider took it) is finished by taking it again, or removed.
	if err := e.store.PutSnapshot(store.Snapshot{Volume: "pg", Name: "half", Provider: "rbd", State: api.StateCreating}); err != nil {
		t.Fatal(err)
	}
	if s, err := e.m.Snapshot(ctx, "pg", "half"); err != nil || s.State != api.StateReady || s.ID == "" {
		t.Errorf("Snapshot of a half-taken snapshot = %+v, %v", s, err)
	}
	if err := e.store.PutSnapshot(store.Snapshot{Volume: "pg", Name: "half2", Provider: "rbd", State: api.StateCreating}); err != nil {
		t.Fatal(err)
	}
	if err := e.m.RemoveSnapshot(ctx, "pg", "half2"); err != nil {
		t.Errorf("RemoveSnapshot of a half-taken snapshot: %v", err)
	}
	if got, err := e.m.Snapshots(ctx, "pg"); err != nil || snapNames(got) != "pg@half:ready" {
		t.Errorf("Snapshots = %q, %v", snapNames(got), err)
	}
}

func TestRemoveVolumeWithSnapshots(t *testing.T) {
	e := newAbilityEnv(t)
	ctx := ctxT(t)
	if _, err := e.m.Create(ctx, "pg", nil); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"a", "b"} {
		if _, err := e.m.Snapshot(ctx, "pg", s); err != nil {
			t.Fatal(err)
		}
	}
	err := e.m.Remove(ctx, "pg")
	if !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), "pg@a, pg@b") {
		t.Fatalf("Remove of a volume with snapshots = %v; want ErrInUse listing them", err)
	}
	if _, err := e.m.Get(ctx, "pg"); err != nil {
		t.Fatalf("refused Remove changed something: %v", err)
	}
	if _, err := e.m.Mount(ctx, "pg", "m"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.RemoveWithSnapshots(ctx, "pg"); !errors.Is(err, volume.ErrInUse) {
		t.Fatalf("RemoveWithSnapshots of a mounted volume = %v; want ErrInUse", err)
	}
	if got, _ := e.m.Snapshots(ctx, "pg"); len(got) != 2 {
		t.Fatalf("refused RemoveWithSnapshots removed snapshots: %q", snapNames(got))
	}
	if err := e.m.Unmount(ctx, "pg", "m"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.RemoveWithSnapshots(ctx, "pg"); err != nil {
		t.Fatal(err)
	}
	if got, err := e.m.Snapshots(ctx, ""); err != nil || len(got) != 0 {
		t.Errorf("snapshots left: %q, %v", snapNames(got), err)
	}
	if vols, _ := e.full.List(ctx); len(vols) != 0 {
		t.Errorf("provider volumes left: %+v", vols)
	}
}

func TestAbilitiesNotSupported(t *testing.T) {
	e := newAbilityEnv(t)
	ctx := ctxT(t)
	if _, err := e.m.Create(ctx, "plain", map[string]string{"provider": "local", "size": "1MiB"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"snapshot", func() error { _, err := e.m.Snapshot(ctx, "plain", "s"); return err }, "provider local cannot take snapshots"},
		{"copy", func() error {
			_, err := e.m.Create(ctx, "copy", map[string]string{"from": "plain"})
			return err
		}, "provider local cannot create volumes from snapshots or copies"},
		{"resize", func() error { _, err := e.m.Resize(ctx, "plain", 2<<20); return err }, "provider local cannot resize volumes"},
		{"unlock", func() error { _, err := e.m.Unlock(ctx, "plain", true); return err }, "provider local cannot break write locks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, volume.ErrNotSupported) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want ErrNotSupported saying %q", err, tt.want)
			}
		})
	}
	if got, _ := e.m.Snapshots(ctx, ""); len(got) != 0 {
		t.Errorf("snapshot records left: %q", snapNames(got))
	}
	if _, err := e.m.Get(ctx, "copy"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("refused copy left a record: %v", err)
	}
}

func TestCreateFromInvalid(t *testing.T) {
	e := newAbilityEnv(t)
	ctx := ctxT(t)
	if _, err := e.m.Create(ctx, "pg", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Snapshot(ctx, "pg", "s1"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		opts  map[string]string
		class error
		want  string
	}{
		{map[string]string{"from": "pg@"}, volume.ErrInvalid, "snapshot name is empty"},
		{map[string]string{"from": "@s1"}, volume.ErrInvalid, "volume name is empty"},
		{map[string]string{"from": "pg@s1@x"}, volume.ErrInvalid, "not allowed"},
		{map[string]string{"from": "nope@s1"}, volume.ErrNotFound, `volume "nope"`},
		{map[string]string{"from": "pg@nope"}, volume.ErrNotFound, `no snapshot "nope"`},
		{map[string]string{"from": "pg", "provider": "local"}, volume.ErrInvalid, "same provider"},
		{map[string]string{"from": "new"}, volume.ErrInvalid, "from itself"},
	}
	for _, tt := range tests {
		_, err := e.m.Create(ctx, "new", tt.opts)
		if !errors.Is(err, tt.class) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Create(%v) = %v; want %v saying %q", tt.opts, err, tt.class, tt.want)
		}
	}
	if _, err := e.m.Get(ctx, "new"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("refused creates left a record: %v", err)
	}
	for _, bad := range []string{"", "a/b", "-x"} {
		if _, err := e.m.Snapshot(ctx, "pg", bad); !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), "snapshot name") {
			t.Errorf("Snapshot(pg, %q) = %v; want ErrInvalid about the snapshot name", bad, err)
		}
	}
	if _, err := e.m.Snapshot(ctx, "nope", "s"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Snapshot of an unknown volume = %v; want ErrNotFound", err)
	}
	if _, err := e.m.Snapshots(ctx, "nope"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Snapshots of an unknown volume = %v; want ErrNotFound", err)
	}
}

func TestResize(t *testing.T) {
	e := newAbilityEnv(t)
	ctx := ctxT(t)
	if _, err := e.m.Create(ctx, "pg", map[string]string{"size": "1MiB"}); err != nil {
		t.Fatal(err)
	}
	v, err := e.m.Resize(ctx, "pg", 2<<20)
	if err != nil || v.CapacityBytes != 2<<20 {
		t.Fatalf("Resize = %+v, %v", v, err)
	}
	if got := e.full.Expands(); len(got) != 1 || got[0].StagingPath != "" || got[0].TargetPath != "" {
		t.Errorf("offline expand requests = %+v; want one without paths", got)
	}
	if _, err := e.m.Resize(ctx, "pg", 1<<20); !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), "only grow") {
		t.Errorf("shrink = %v; want ErrInvalid saying volumes only grow", err)
	}
	if _, err := e.m.Resize(ctx, "pg", 0); !errors.Is(err, volume.ErrInvalid) {
		t.Errorf("size 0 = %v; want ErrInvalid", err)
	}
	if len(e.full.Expands()) != 1 {
		t.Error("a refused resize reached the provider")
	}

	// Online: the provider gets the paths on this host.
	mp, err := e.m.Mount(ctx, "pg", "m")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Resize(ctx, "pg", 4<<20); err != nil {
		t.Fatal(err)
	}
	got := e.full.Expands()
	if last := got[len(got)-1]; last.TargetPath != mp || last.StagingPath != e.m.stagingPath("pg") || last.CapacityBytes != 4<<20 {
		t.Errorf("online expand request = %+v; want target %s and the staging path", last, mp)
	}
	if err := e.m.Unmount(ctx, "pg", "m"); err != nil {
		t.Fatal(err)
	}
	e.open(t)
	if v, err := e.m.Get(ctx, "pg"); err != nil || v.CapacityBytes != 4<<20 {
		t.Errorf("recorded capacity after restart = %+v, %v", v, err)
	}
}

func TestUnlock(t *testing.T) {
	e := newAbilityEnv(t)
	ctx := ctxT(t)
	if _, err := e.m.Create(ctx, "pg", nil); err != nil {
		t.Fatal(err)
	}
	if err := e.full.SetLockHolder("pg", "client.4123 on host-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Mount(ctx, "pg", "m"); !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), "host-b") {
		t.Fatalf("Mount of a volume host-b holds = %v; want ErrInUse naming it", err)
	}
	_, err := e.m.Unlock(ctx, "pg", false)
	if !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), "fences") {
		t.Fatalf("Unlock without force = %v; want ErrInvalid explaining and naming --force", err)
	}
	if e.full.Calls("Unlock") != 0 {
		t.Fatal("Unlock without force reached the provider")
	}
	holder, err := e.m.Unlock(ctx, "pg", true)
	if err != nil || holder != "client.4123 on host-b" {
		t.Fatalf("Unlock = %q, %v", holder, err)
	}
	if _, err := e.m.Mount(ctx, "pg", "m"); err != nil {
		t.Fatalf("Mount after Unlock: %v", err)
	}
	if _, err := e.m.Unlock(ctx, "pg", true); !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), "mounted on this host") {
		t.Errorf("Unlock of a volume mounted here = %v; want ErrInUse", err)
	}
	if err := e.m.Unmount(ctx, "pg", "m"); err != nil {
		t.Fatal(err)
	}
	if holder, err := e.m.Unlock(ctx, "pg", true); err != nil || holder != "" {
		t.Errorf("Unlock of an unlocked volume = %q, %v", holder, err)
	}
}

func TestCopyNeedsClone(t *testing.T) {
	e := newAbilityEnv(t)
	e.full.CopyVolumes(false)
	ctx := ctxT(t)
	if _, err := e.m.Create(ctx, "pg", nil); err != nil {
		t.Fatal(err)
	}
	_, err := e.m.Create(ctx, "copy", map[string]string{"from": "pg"})
	if !errors.Is(err, volume.ErrNotSupported) || !strings.Contains(err.Error(), "take a snapshot and create the volume from it (from=pg@SNAPSHOT)") {
		t.Fatalf("copy without Clone = %v; want ErrNotSupported pointing to snapshots", err)
	}
	if _, err := e.m.Snapshot(ctx, "pg", "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Create(ctx, "copy", map[string]string{"from": "pg@s"}); err != nil {
		t.Fatalf("copy of a snapshot: %v", err)
	}
}

// FuzzParseFrom checks that the option from either parses into names that
// are valid and give the option back, or is refused as invalid.
func FuzzParseFrom(f *testing.F) {
	for _, s := range []string{"pg", "pg@s1", "pg@", "@s", "a@b@c", "", "../x@y", "a.b-c_d@e.f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, from string) {
		vol, snap, err := parseFrom(from)
		if err != nil {
			if !errors.Is(err, volume.ErrInvalid) {
				t.Fatalf("parseFrom(%q) = %v; want ErrInvalid", from, err)
			}
			return
		}
		if ValidateName(vol) != nil || (snap != "" && validateSnapshotName(snap) != nil) {
			t.Fatalf("parseFrom(%q) = %q, %q: not valid names", from, vol, snap)
		}
		back := vol
		if snap != "" {
			back += "@" + snap
		}
		if back != from {
			t.Fatalf("parseFrom(%q) = %q, %q, which give %q", from, vol, snap, back)
		}
	})
}
