package initproc

import (
	"os"
	"path/filepath"
	"testing"
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

func TestCommonDir(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"/r/layers/sha256/aa", "/r/layers/sha256/bb"}, "/r/layers/sha256"},
		{[]string{"/r/layers/sha256/aa"}, "/r/layers/sha256"},
		{[]string{"/r/a/x", "/r/b/y"}, "/r"},
		{[]string{"/a/x", "/b/y"}, "/"},
	}
	for _, tt := range tests {
		if got := commonDir(tt.in); got != tt.want {
			t.Errorf("commonDir(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
