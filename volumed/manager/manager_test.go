package manager

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/store"
)

type env struct {
	root  string
	fake  *volumetest.Fake
	store *store.Store
	m     *Manager
}

// isLink stands in for mountinfo: the fake publishes with symbolic links.
func isLink(path string) (bool, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return false, err
	}
	return fi.Mode()&os.ModeSymlink != 0, nil
}

func newEnv(t *testing.T, stage bool) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{root: root, fake: volumetest.NewFake(filepath.Join(root, "fake"), stage)}
	e.open(t)
	return e
}

// open (re)opens the store and a new manager on the same root, as a
// restarted volumed would.
func (e *env) open(t *testing.T) {
	t.Helper()
	e.store, e.m = openManager(t, e.root, e.store, Options{
		Root:            e.root,
		Providers:       map[string]volume.Provider{"fake": e.fake},
		DefaultProvider: "fake",
	})
}

// openManager closes prev when not nil, (re)opens the store in root and
// starts a manager on it with opts (and isLink for mountinfo), as a
// restarted volumed would. A cleanup closes the store.
func openManager(t *testing.T, root string, prev *store.Store, opts Options) (*store.Store, *Manager) {
	t.Helper()
	if prev != nil {
		prev.Close()
	}
	s, err := store.Open(filepath.Join(root, "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	opts.Store, opts.IsMounted = s, isLink
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, m
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustList(t *testing.T, m *Manager) []api.Volume {
	t.Helper()
	vols, err := m.List(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return vols
}

func TestCreateInvalid(t *testing.T) {
	e := newEnv(t, false)
	ctx := ctxT(t)
	if _, err := e.m.Create(ctx, "keep", nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, vol string
		opts      map[string]string
		want      string
	}{
		{"dotdot", "../x", nil, "not allowed"},
		{"empty", "", nil, "empty"},
		{"too long", strings.Repeat("a", 300), nil, "300 characters"},
		{"slash", "a/b", nil, "not allowed"},
		{"leading dot", ".x", nil, "not allowed"},
		{"unknown option", "v", map[string]string{"colour": "red"}, `unknown option "colour"`},
		{"unknown provider", "v", map[string]string{"provider": "nfs"}, `unknown provider "nfs" (configured providers: fake)`},
		{"bad size", "v", map[string]string{"size": "lots"}, `size "lots"`},
		{"exists with other options", "keep", map[string]string{"label": "x"}, "already exists with other options"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := mustList(t, e.m)
			_, err := e.m.Create(ctx, tc.vol, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Create(%q, %v) err = %v; want it to contain %q", tc.vol, tc.opts, err, tc.want)
			}
			if !errors.Is(err, volume.ErrInvalid) && !errors.Is(err, volume.ErrExists) {
				t.Errorf("err = %v; want class invalid or exists", err)
			}
			if after := mustList(t, e.m); len(after) != len(before) {
				t.Errorf("volumes changed: %v -> %v", before, after)
			}
		})
	}
}

func TestCreateIdempotent(t *testing.T) {
	e := newEnv(t, false)
	ctx := ctxT(t)
	opts := map[string]string{"size": "64MiB", "label": "a"}
	a, err := e.m.Create(ctx, "data", opts)
	if err != nil {
		t.Fatal(err)
	}
	if a.State != api.StateReady || a.CapacityBytes != 64<<20 || a.Provider != "fake" || a.ID == "" {
		t.Fatalf("Create = %+v", a)
	}
	b, err := e.m.Create(ctx, "data", opts)
	if err != nil || b.ID != a.ID {
		t.Fatalf("second Create = %+v, %v", b, err)
	}
	if n := e.fake.Calls("Create"); n != 1 {
		t.Errorf("provider Create called %d times; want 1", n)
	}
}

func TestMountCounting(t *testing.T) {
	for _, stage := range []bool{false, true} {
		t.Run(map[bool]string{false: "publish", true: "stage"}[stage], func(t *testing.T) {
			e := newEnv(t, stage)
			ctx := ctxT(t)
			if _, err := e.m.Create(ctx, "v", nil); err != nil {
				t.Fatal(err)
			}
			// dockerd: container M1, docker cp with the same ID, container M2.
			var mp string
			for _, id := range []string{"M1", "M1", "M2"} {
				p, err := e.m.Mount(ctx, "v", id)
				if err != nil {
					t.Fatalf("Mount %s: %v", id, err)
				}
				mp = p
			}
			if mp != filepath.Join(e.root, "mounts", "v") {
				t.Errorf("mount point = %q", mp)
			}
			if err := os.WriteFile(filepath.Join(mp, "f"), []byte("hi"), 0o644); err != nil {
				t.Fatal(err)
			}
			if n := e.fake.Calls("Publish"); n != 1 {
				t.Errorf("Publish called %d times; want 1", n)
			}
			if n := e.fake.Calls("Stage"); stage && n != 1 || !stage && n != 0 {
				t.Errorf("Stage called %d times", n)
			}
			v, _ := e.m.Get(ctx, "v")
			if v.Mounts != 3 || v.MountIDs["M1"] != 2 || v.Mountpoint != mp {
				t.Fatalf("Get = %+v; want 3 mounts, M1 twice", v)
			}

			err := e.m.Remove(ctx, "v")
			if !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), "in use by 3 mounts") {
				t.Fatalf("Remove while mounted: %v", err)
			}
			err = e.m.Unmount(ctx, "v", "nope")
			if !errors.Is(err, volume.ErrNotFound) || !strings.Contains(err.Error(), `no mount with ID "nope"`) {
				t.Fatalf("Unmount unknown ID: %v", err)
			}
			if err := e.m.Unmount(ctx, "v", "M1"); err != nil { // the docker cp
				t.Fatal(err)
			}

			e.open(t) // a restarted volumed knows the counts
			if err := e.m.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			v, _ = e.m.Get(ctx, "v")
			if v.Mounts != 2 || v.Mountpoint != mp {
				t.Fatalf("after restart Get = %+v; want 2 mounts", v)
			}
			for _, id := range []string{"M1", "M2"} {
				if err := e.m.Unmount(ctx, "v", id); err != nil {
					t.Fatalf("Unmount %s: %v", id, err)
				}
			}
			if n := e.fake.Calls("Unpublish"); n != 1 {
				t.Errorf("Unpublish called %d times; want 1", n)
			}
			if n := e.fake.Calls("Unstage"); stage && n != 1 || !stage && n != 0 {
				t.Errorf("Unstage called %d times", n)
			}
			if v, _ := e.m.Get(ctx, "v"); v.Mounts != 0 || v.Mountpoint != "" {
				t.Fatalf("after last unmount Get = %+v", v)
			}
			if _, err := e.m.Mount(ctx, "v", "M3"); err != nil { // data survived
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "hi" {
				t.Fatalf("data = %q, %v", b, err)
			}
			if err := e.m.Unmount(ctx, "v", "M3"); err != nil {
				t.Fatal(err)
			}
			if err := e.m.Remove(ctx, "v"); err != nil {
				t.Fatal(err)
			}
			if _, err := e.m.Get(ctx, "v"); !errors.Is(err, volume.ErrNotFound) {
				t.Fatalf("Get after Remove: %v", err)
			}
		})
	}
}

func TestMissingVolume(t *testing.T) {
	e := newEnv(t, false)
	ctx := ctxT(t)
	if _, err := e.m.Mount(ctx, "ghost", "M1"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Mount: %v", err)
	}
	if err := e.m.Unmount(ctx, "ghost", "M1"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Unmount: %v", err)
	}
	if err := e.m.Remove(ctx, "ghost"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Remove: %v", err)
	}
	if p, err := e.m.Path(ctx, "ghost"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Path = %q, %v", p, err)
	}
	if _, err := e.m.Mount(ctx, "ghost", ""); !errors.Is(err, volume.ErrInvalid) {
		t.Errorf("Mount with empty ID: %v", err)
	}
}

func TestReconcileDropsStaleMounts(t *testing.T) {
	e := newEnv(t, false)
	ctx := ctxT(t)
	if _, err := e.m.Create(ctx, "v", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Mount(ctx, "v", "M1"); err != nil {
		t.Fatal(err)
	}
	// The host restarted: the mount is gone, the record still counts it.
	if err := os.Remove(e.m.Mountpoint("v")); err != nil {
		t.Fatal(err)
	}
	e.open(t)
	if err := e.m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	v, _ := e.m.Get(ctx, "v")
	if v.Mounts != 0 || v.Mountpoint != "" || v.State != api.StateReady {
		t.Fatalf("after reconcile Get = %+v; want ready with no mounts", v)
	}
	if err := e.m.Remove(ctx, "v"); err != nil {
		t.Fatalf("Remove after reconcile: %v", err)
	}
}

func TestHungProvider(t *testing.T) {
	e := newEnv(t, false)
	ctx := ctxT(t)
	if _, err := e.m.Create(ctx, "v", nil); err != nil {
		t.Fatal(err)
	}
	e.fake.Hang(true)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := e.m.Create(short, "w", nil)
	if !errors.Is(err, volume.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `provider "fake" did not finish create within`) {
		t.Fatalf("Create on a hung provider: %v", err)
	}
	short2, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := e.m.Mount(short2, "v", "M1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Mount on a hung provider: %v", err)
	}
	e.fake.Hang(false)
	vols := mustList(t, e.m)
	if len(vols) != 1 || vols[0].Name != "v" || vols[0].Mounts != 0 {
		t.Fatalf("after hung calls volumes = %+v; want just v, unmounted", vols)
	}
}

func TestFailingProvider(t *testing.T) {
	e := newEnv(t, false)
	ctx := ctxT(t)
	e.fake.Fail(volume.ErrUnavailable)
	if _, err := e.m.Create(ctx, "v", nil); !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("Create: %v", err)
	}
	if vols := mustList(t, e.m); len(vols) != 0 {
		t.Fatalf("a failed create left %+v", vols)
	}
	e.m.ProbeAll(ctx)
	ps := e.m.Providers(ctx)
	if len(ps) != 1 || ps[0].State != api.ProviderDown || ps[0].LastError == "" {
		t.Fatalf("Providers = %+v; want fake down with an error", ps)
	}
	e.fake.Fail(nil)
	e.m.ProbeAll(ctx)
	if ps := e.m.Providers(ctx); ps[0].State != api.ProviderUp || ps[0].Driver != "stowage.fake" {
		t.Fatalf("Providers = %+v; want fake up", ps)
	}
}
