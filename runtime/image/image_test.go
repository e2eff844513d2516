package image

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
)

func TestParseName(t *testing.T) {
	tests := []struct {
		in, want string // want "" means ErrInvalid
	}{
		{"busybox", "busybox:latest"},
		{"busybox:1.36", "busybox:1.36"},
		{"library/busybox:v1.0_rc-2", "library/busybox:v1.0_rc-2"},
		{"a.b_c-d/e:TAG", "a.b_c-d/e:TAG"},
		{"0", "0:latest"},
		{"", ""},
		{"Busybox", ""},
		{"-x", ""},
		{"a//b", ""},
		{"a/", ""},
		{"/a", ""},
		{"a:", ""},
		{"a:-x", ""},
		{"a:b:c", ""},
		{"a@sha256:00", ""},
		{"localhost:5000/a", ""},
		{"../a", ""},
		{"a:" + string(bytes.Repeat([]byte("t"), 129)), ""},
	}
	for _, tt := range tests {
		got, err := ParseName(tt.in)
		if tt.want == "" {
			if !errors.Is(err, volume.ErrInvalid) {
				t.Errorf("ParseName(%q) = %q, %v; want ErrInvalid", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestStore(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	baseTar, topTar := mktar(t, file("base", "b")), mktar(t, file("top", "t"))
	base, err := s.AddLayer(ctx, bytes.NewReader(baseTar))
	if err != nil {
		t.Fatal(err)
	}
	top, err := s.AddLayer(ctx, bytes.NewReader(topTar))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Env: []string{"A=1"}, Cmd: []string{"/bin/true"}, WorkingDir: "/w", User: "1:1"}
	both, err := s.Create("app/both", []string{base, top}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if both.Name != "app/both:latest" || !slices.Equal(both.Layers, []string{base, top}) {
		t.Errorf("Create: %+v", both)
	}
	if _, err := s.Create("app/base:v1", []string{base}, Config{}); err != nil {
		t.Fatal(err)
	}

	t.Run("get", func(t *testing.T) {
		got, err := s.Get("app/both")
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != both.ID || !got.Created.Equal(both.Created) || !slices.Equal(got.Config.Cmd, cfg.Cmd) {
			t.Errorf("Get: %+v, want %+v", got, both)
		}
		_, err = s.Get("nothere")
		if !errors.Is(err, volume.ErrNotFound) {
			t.Fatalf("Get(nothere): %v", err)
		}
		contains(t, err.Error(), "nothere:latest")
		if _, err := s.Get("Bad"); !errors.Is(err, volume.ErrInvalid) {
			t.Errorf("Get(Bad): %v", err)
		}
	})
	t.Run("record", func(t *testing.T) {
		var rec imageRecord
		if err := readJSON(filepath.Join(s.imagesDir(), "app%2Fboth:latest.json"), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Version != 1 || rec.Name != "app/both:latest" {
			t.Errorf("record %+v", rec)
		}
	})
	t.Run("list", func(t *testing.T) {
		imgs, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, i := range imgs {
			names = append(names, i.Name)
		}
		if !slices.Equal(names, []string{"app/base:v1", "app/both:latest"}) {
			t.Errorf("List: %v", names)
		}
	})
	t.Run("layer dirs", func(t *testing.T) {
		dirs, err := s.LayerDirs(both)
		if err != nil {
			t.Fatal(err)
		}
		if len(dirs) != 2 || readFile(t, filepath.Join(dirs[0], "top")) != "t" || readFile(t, filepath.Join(dirs[1], "base")) != "b" {
			t.Errorf("LayerDirs: %v, want top first", dirs)
		}
		size, err := s.Size(both)
		if want := int64(len(baseTar) + len(topTar)); err != nil || size != want {
			t.Errorf("Size: %d, %v; want %d", size, err, want)
		}
	})
	t.Run("create", func(t *testing.T) {
		if _, err := s.Create("app/both", []string{base}, cfg); !errors.Is(err, volume.ErrExists) {
			t.Errorf("Create over another image: %v, want ErrExists", err)
		}
		again, err := s.Create("app/both", []string{base, top}, cfg)
		if err != nil || again.ID != both.ID {
			t.Errorf("Create again: %+v, %v", again, err)
		}
		missing := "sha256:" + string(bytes.Repeat([]byte("a"), 64))
		if _, err := s.Create("x", []string{missing}, cfg); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("Create over a missing layer: %v, want ErrNotFound", err)
		}
		if _, err := s.Create("x", []string{"sha256:../../etc"}, cfg); !errors.Is(err, volume.ErrInvalid) {
			t.Errorf("Create over a bad layer ID: %v, want ErrInvalid", err)
		}
		if _, err := s.Create("x", nil, cfg); !errors.Is(err, volume.ErrInvalid) {
			t.Errorf("Create without layers: %v, want ErrInvalid", err)
		}
	})
	t.Run("remove", func(t *testing.T) {
		if err := s.Remove("app/both"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.layerDir(top); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("top layer after remove: %v, want it gone", err)
		}
		if _, err := os.Stat(filepath.Join(s.layersDir(), top[7:])); !os.IsNotExist(err) {
			t.Errorf("top layer directory after remove: %v", err)
		}
		if _, err := s.layerDir(base); err != nil {
			t.Errorf("base layer, still used: %v", err)
		}
		if err := s.Remove("app/both"); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("Remove again: %v, want ErrNotFound", err)
		}
		if _, err := s.LayerDirs(both); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("LayerDirs of a removed image: %v, want ErrNotFound", err)
		}
	})
}

func TestAddLayerReplacesIncomplete(t *testing.T) {
	s, _ := newStore(t)
	data := mktar(t, file("f", "content"))
	id, err := s.AddLayer(t.Context(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	// An interrupted remove: the metadata is gone, the directory partly.
	dir := filepath.Join(s.layersDir(), id[7:])
	os.Remove(dir + ".json")
	os.Remove(filepath.Join(dir, "f"))
	if _, err := s.AddLayer(t.Context(), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "f")); got != "content" {
		t.Errorf("f = %q after re-adding", got)
	}
}

func TestConcurrentImport(t *testing.T) {
	s, _ := newStore(t)
	data := mktar(t, dir("etc/"), file("etc/os", "x"), file("bin/sh", "sh"))
	p := writeBytes(t, data)
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// Half add the layer, half import it as an image: each goes
			// through its own flock on ROOT/lock.
			if i%2 == 0 {
				ids[i], errs[i] = s.AddLayer(t.Context(), bytes.NewReader(data))
				return
			}
			var img Image
			img, errs[i] = s.Import(t.Context(), p, "same")
			if errs[i] == nil {
				ids[i] = img.Layers[0]
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Errorf("%d: %s, %v; want %s", i, ids[i], errs[i], ids[0])
		}
	}
	if ents, _ := os.ReadDir(s.layersDir()); len(ents) != 2 {
		t.Errorf("%d entries in the layer directory, want one layer", len(ents))
	}
	if got := tree(t, s.tmpDir()); len(got) != 0 {
		t.Errorf("tmp holds %v", got)
	}
}
