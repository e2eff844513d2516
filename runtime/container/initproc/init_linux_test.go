package initproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
)

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "a/b"), 0o755))
	must(os.Symlink("/a", filepath.Join(root, "abs")))
	must(os.Symlink("../../..", filepath.Join(root, "a/b/up")))
	must(os.Symlink("/a/b", filepath.Join(root, "lib")))
	must(os.Symlink("loop", filepath.Join(root, "loop")))
	tests := map[string]string{
		"/a/b":          "/a/b",
		"/abs/b":        "/a/b",
		"/a/b/up/x":     "/x",
		"/../../x":      "/x",
		"/lib/x":        "/a/b/x",
		"/new/dir":      "/new/dir",
		"/abs/../abs/b": "/a/b",
	}
	for in, want := range tests {
		got, err := resolveIn(root, in)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("resolveIn(%q) = %q, %v, want %q", in, got, err, filepath.Join(root, want))
		}
	}
	if _, err := resolveIn(root, "/loop/x"); err == nil {
		t.Errorf("resolveIn through a link loop succeeded")
	}
}

func TestOverlayOptions(t *testing.T) {
	layer := func(i int) string { return fmt.Sprintf("/r/layers/sha256/%064x", i) }
	cfg := Config{Upper: "/r/containers/c/upper", Work: "/r/containers/c/work", Lowers: []string{"/r/containers/.init"}}
	for i := range 50 {
		cfg.Lowers = append(cfg.Lowers, layer(i))
	}
	data, dir, err := overlayOptions(cfg, 1<<20)
	if err != nil || dir != "" || !strings.HasPrefix(data, "lowerdir=/r/containers/.init:"+layer(0)+":") {
		t.Errorf("short options: %q %q %v", data, dir, err)
	}
	data, dir, err = overlayOptions(cfg, 4096)
	want := fmt.Sprintf("lowerdir=/r/containers/.init:%064x:%064x:", 0, 1)
	if err != nil || dir != "/r/layers/sha256" || !strings.HasPrefix(data, want) || !strings.HasSuffix(data, ",upperdir=/r/containers/c/upper,workdir=/r/containers/c/work") {
		t.Errorf("long options: %q %q %v; want %q... in /r/layers/sha256", data, dir, err, want)
	}
	for i := 50; i < 70; i++ {
		cfg.Lowers = append(cfg.Lowers, layer(i))
	}
	if _, _, err := overlayOptions(cfg, 4096); !errors.Is(err, volume.ErrNotSupported) {
		t.Errorf("70 layers: %v, want ErrNotSupported", err)
	}
}

func TestMkfileIn(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/real", filepath.Join(root, "etc")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "real", "kept"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"/etc/hosts": "real/hosts", "/etc/kept": "real/kept", "/new/dir/f": "new/dir/f"} {
		got, err := mkfileIn(root, p)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("mkfileIn(%q) = %q, %v; want %q", p, got, err, filepath.Join(root, want))
			continue
		}
		if fi, err := os.Lstat(got); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: %v %v, want a file", p, fi, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "real", "kept")); err != nil || string(b) != "x" {
		t.Errorf("an existing file changed: %q %v", b, err)
	}
}
