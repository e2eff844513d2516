package local

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"

	"github.com/stowage/stowage/plugins/volume"
)

const mib = 1 << 20

func newProvider(t *testing.T, root string) *Provider {
	t.Helper()
	p, err := New(root, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// needMkfs skips unless mkfs for fsType is in PATH.
func needMkfs(t *testing.T, fsType string) {
	t.Helper()
	testenv.Require(t, "mkfs."+fsType)
}

func TestCreate(t *testing.T) {
	tests := []struct {
		name   string
		mkfs   string // mkfs tool the case needs, if any
		req    volume.CreateRequest
		again  volume.CreateRequest // a request that must return the same volume
		other  volume.CreateRequest // a request that must fail with ErrExists
		files  []string             // files the volume directory must hold
		capRes int64
	}{
		{
			name:  "dir",
			req:   volume.CreateRequest{Name: "d"},
			again: volume.CreateRequest{Name: "d", Parameters: map[string]string{"type": "dir"}},
			other: volume.CreateRequest{Name: "d", CapacityBytes: 64 * mib},
			files: []string{metaFile, dataDir},
		},
		{
			name:   "ext4",
			mkfs:   fsExt4,
			req:    volume.CreateRequest{Name: "e", CapacityBytes: 8 * mib},
			again:  volume.CreateRequest{Name: "e", CapacityBytes: 8 * mib, Parameters: map[string]string{"type": "fs", "fs": "ext4"}},
			other:  volume.CreateRequest{Name: "e", CapacityBytes: 16 * mib},
			files:  []string{metaFile, imageFile},
			capRes: 8 * mib,
		},
		{
			name:   "invalid request on an existing name",
			req:    volume.CreateRequest{Name: "x"},
			again:  volume.CreateRequest{Name: "x"},
			other:  volume.CreateRequest{Name: "x", Parameters: map[string]string{"type": "fs"}},
			files:  []string{metaFile, dataDir},
			capRes: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.mkfs != "" {
				needMkfs(t, tt.mkfs)
			}
			ctx := testContext(t)
			p := newProvider(t, t.TempDir())
			v, err := p.Create(ctx, tt.req)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if v.ID != tt.req.Name || v.CapacityBytes != tt.capRes {
				t.Errorf("Create = %+v; want ID %q, capacity %d", v, tt.req.Name, tt.capRes)
			}
			for _, f := range tt.files {
				if _, err := os.Stat(filepath.Join(p.root, v.ID, f)); err != nil {
					t.Errorf("volume file: %v", err)
				}
			}
			w, err := p.Create(ctx, tt.again)
			if err != nil || w.ID != v.ID || w.CapacityBytes != v.CapacityBytes {
				t.Errorf("Create again = %+v, %v; want %+v", w, err, v)
			}
			if _, err := p.Create(ctx, tt.other); !errors.Is(err, volume.ErrExists) || errors.Is(err, volume.ErrInvalid) {
				t.Errorf("Create with other options: %v; want only ErrExists", err)
			}
		})
	}
}

func TestCreateRejects(t *testing.T) {
	tests := []struct {
		name string
		req  volume.CreateRequest
		want error
	}{
		{"unknown key", volume.CreateRequest{Name: "v", Parameters: map[string]string{"nope": "1"}}, volume.ErrInvalid},
		{"escaping name", volume.CreateRequest{Name: "../v"}, volume.ErrInvalid},
		{"dot name", volume.CreateRequest{Name: ".creating-v"}, volume.ErrInvalid},
		{"empty name", volume.CreateRequest{}, volume.ErrInvalid},
		{"fs without size", volume.CreateRequest{Name: "v", Parameters: map[string]string{"type": "fs"}}, volume.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			root := t.TempDir()
			p := newProvider(t, root)
			if _, err := p.Create(ctx, tt.req); !errors.Is(err, tt.want) {
				t.Fatalf("Create: %v; want %v", err, tt.want)
			}
			entries, err := os.ReadDir(root)
			if err != nil || len(entries) != 0 {
				t.Fatalf("root holds %v, %v; want nothing", entries, err)
			}
		})
	}
}

func TestCreateWithoutMkfs(t *testing.T) {
	tests := []struct {
		fs, pkg string
		size    int64
	}{
		{fsExt4, "e2fsprogs", 64 * mib},
		{fsXFS, "xfsprogs", 300 * mib},
	}
	for _, tt := range tests {
		t.Run(tt.fs, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			ctx := testContext(t)
			root := t.TempDir()
			p := newProvider(t, root)
			_, err := p.Create(ctx, volume.CreateRequest{Name: "v", CapacityBytes: tt.size, Parameters: map[string]string{"fs": tt.fs}})
			if !errors.Is(err, volume.ErrUnavailable) || !strings.Contains(err.Error(), tt.pkg) {
				t.Fatalf("Create: %v; want ErrUnavailable naming %s", err, tt.pkg)
			}
			if entries, _ := os.ReadDir(root); len(entries) != 0 {
				t.Errorf("failed Create left %v behind", entries)
			}
		})
	}
}

func TestCreateCancelled(t *testing.T) {
	p := newProvider(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Create(ctx, volume.CreateRequest{Name: "v"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Create: %v; want context.Canceled", err)
	}
}

func TestPersistence(t *testing.T) {
	needMkfs(t, fsExt4)
	ctx := testContext(t)
	root := t.TempDir()
	p := newProvider(t, root)
	reqs := []volume.CreateRequest{
		{Name: "a", Parameters: map[string]string{"type": "dir"}},
		{Name: "b", CapacityBytes: 16 * mib, Parameters: map[string]string{"fs": "ext4"}},
	}
	for _, req := range reqs {
		if _, err := p.Create(ctx, req); err != nil {
			t.Fatalf("Create %s: %v", req.Name, err)
		}
	}
	b, err := os.ReadFile(filepath.Join(root, "b", metaFile))
	if err != nil {
		t.Fatal(err)
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("metadata is not JSON: %v", err)
	}
	want := meta{Version: metaVersion, Name: "b", Type: typeFS, FS: fsExt4, CapacityBytes: 16 * mib, Parameters: map[string]string{"fs": "ext4"}}
	if m.Name != want.Name || m.spec() != want.spec() || m.Version != want.Version || m.Parameters["fs"] != "ext4" || len(m.Parameters) != 1 {
		t.Errorf("metadata = %+v; want %+v", m, want)
	}

	// A new provider on the same root, as after a restart.
	q := newProvider(t, root)
	for _, req := range reqs {
		v, err := q.Create(ctx, req)
		if err != nil || v.ID != req.Name {
			t.Errorf("Create %s after restart = %+v, %v; want the existing volume", req.Name, v, err)
		}
	}
	if _, err := q.Create(ctx, volume.CreateRequest{Name: "b", CapacityBytes: 32 * mib}); !errors.Is(err, volume.ErrExists) {
		t.Errorf("Create b with another size after restart: %v; want ErrExists", err)
	}
	vols, err := q.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantVols := []volume.Volume{{ID: "a"}, {ID: "b", CapacityBytes: 16 * mib}}
	if len(vols) != len(wantVols) || vols[0].ID != "a" || vols[1].ID != "b" || vols[1].CapacityBytes != 16*mib {
		t.Errorf("List after restart = %+v; want %+v", vols, wantVols)
	}
}

func TestList(t *testing.T) {
	ctx := testContext(t)
	root := t.TempDir()
	p := newProvider(t, root)
	vols, err := p.List(ctx)
	if err != nil || vols == nil || len(vols) != 0 {
		t.Fatalf("List of an empty root = %#v, %v; want an empty list", vols, err)
	}
	for _, name := range []string{"c", "a", "b"} {
		if _, err := p.Create(ctx, volume.CreateRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	// Leftovers of interrupted work and strangers are not volumes.
	for _, dir := range []string{creatingPrefix + "d", deletingPrefix + "e", "nometa", "lost+found"} {
		if err := os.Mkdir(filepath.Join(root, dir), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	vols, err = p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, v := range vols {
		ids = append(ids, v.ID)
	}
	if strings.Join(ids, ",") != "a,c" {
		t.Errorf("List = %v; want [a c]", ids)
	}
}

func TestDelete(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want error
	}{
		{"missing", "nothere", nil},
		{"escaping", "../x", volume.ErrInvalid},
		{"empty", "", volume.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProvider(t, t.TempDir())
			if err := p.Delete(testContext(t), tt.id); !errors.Is(err, tt.want) {
				t.Fatalf("Delete(%q) = %v; want %v", tt.id, err, tt.want)
			}
		})
	}
	t.Run("removes data", func(t *testing.T) {
		ctx := testContext(t)
		root := t.TempDir()
		p := newProvider(t, root)
		if _, err := p.Create(ctx, volume.CreateRequest{Name: "v"}); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "v", dataDir, "f"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := p.Delete(ctx, "v"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if entries, _ := os.ReadDir(root); len(entries) != 0 {
			t.Errorf("root holds %v after Delete", entries)
		}
	})
}

func TestProbe(t *testing.T) {
	ctx := testContext(t)
	root := t.TempDir()
	p := newProvider(t, root)
	if err := p.Probe(ctx); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if err := os.Remove(root); err != nil {
		t.Fatal(err)
	}
	if err := p.Probe(ctx); !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("Probe without a root: %v; want ErrUnavailable", err)
	}
}
