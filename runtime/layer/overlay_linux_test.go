package layer_test

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/runtime/layer"
)

// mountOverlay mounts an overlay of lower with a new upper and work
// directory and returns the merged directory, the upper directory and a
// function that unmounts it (also run at cleanup).
func mountOverlay(t *testing.T, lower, opts string) (merged, upper string, unmount func()) {
	t.Helper()
	testenv.Require(t, "root")
	dir := t.TempDir()
	upper, work, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, p := range []string{upper, work, merged} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if opts != "" {
		data += "," + opts
	}
	if err := unix.Mount("overlay", merged, "overlay", 0, data); err != nil {
		t.Fatalf("mount overlay %s: %v", data, err)
	}
	mounted := true
	unmount = func() {
		t.Helper()
		if !mounted {
			return
		}
		mounted = false
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmount %s: %v", merged, err)
		}
	}
	t.Cleanup(unmount)
	return merged, upper, unmount
}

// TestOverlay runs the scripted operations on a real overlay mount and
// checks the changes and the layer overlayfs's upper directory gives.
func TestOverlay(t *testing.T) {
	lower := build(t,
		node{path: "etc/"},
		node{path: "etc/passwd", data: "root\n"},
		node{path: "etc/group", data: "root\n"},
		node{path: "dir/"},
		node{path: "dir/old", data: "old"},
		node{path: "dir/sub/"},
		node{path: "dir/sub/s", data: "s"},
		node{path: "file", data: "file"},
		node{path: "h/"},
		node{path: "h/src", data: "src"},
		node{path: "tree/a/b/"},
		node{path: "tree/a/b/x", data: "x"},
	)
	merged, upper, unmount := mountOverlay(t, lower, "")
	m := func(p string) string { return filepath.Join(merged, p) }
	ops := []struct {
		name string
		do   func() error
	}{
		{"add a file", func() error { return os.WriteFile(m("etc/new"), []byte("new\n"), 0o644) }},
		{"modify a file", func() error {
			f, err := os.OpenFile(m("etc/passwd"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteString("user\n")
			return errors.Join(err, f.Close())
		}},
		{"delete a file", func() error { return os.Remove(m("etc/group")) }},
		{"delete a directory", func() error { return os.RemoveAll(m("dir")) }},
		{"make it again", func() error { return os.Mkdir(m("dir"), 0o755) }},
		{"add a file to it", func() error { return os.WriteFile(m("dir/new"), []byte("n"), 0o644) }},
		{"chmod only", func() error { return os.Chmod(m("file"), 0o600) }},
		{"hard link", func() error { return os.Link(m("h/src"), m("h/link")) }},
		{"symlink", func() error { return os.Symlink("/etc/passwd", m("sl")) }},
		{"delete a tree", func() error { return os.RemoveAll(m("tree")) }},
	}
	for _, op := range ops {
		if err := op.do(); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
	}
	unmount()

	changes, err := layer.Changes(upper, []string{lower})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"A /dir/new", "A /etc/new", "A /h/link", "A /sl",
		"C /dir", "C /etc", "C /etc/passwd", "C /file", "C /h",
		"D /dir/old", "D /dir/sub", "D /etc/group", "D /tree",
	}
	if got := lines(changes); !slices.Equal(got, want) {
		t.Errorf("Changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	b, _ := write(t, upper, []string{lower})
	var got []string
	for _, e := range readLayer(t, b) {
		got = append(got, string(e.typ)+" "+e.name+" "+e.linkname)
		if len(e.xattrs) != 0 {
			t.Errorf("%s: xattrs %v in the layer, want none (overlayfs's own are left out)", e.name, e.xattrs)
		}
	}
	wantTar := []string{
		"5 dir/ ", "0 dir/.wh..wh..opq ", "0 dir/new ",
		"5 etc/ ", "0 etc/.wh.group ", "0 etc/new ", "0 etc/passwd ",
		"0 file ",
		"5 h/ ", "0 h/link ", "1 h/src h/link",
		"2 sl /etc/passwd",
		"0 .wh.tree ",
	}
	if !slices.Equal(got, wantTar) {
		t.Errorf("layer entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantTar, "\n"))
	}
}

// TestOverlayMetacopy checks a metadata-only copy-up (its data is read from
// the lower layer) and a renamed directory (refused).
func TestOverlayMetacopy(t *testing.T) {
	lower := build(t, node{path: "f", data: "lower data"}, node{path: "d/"}, node{path: "d/x", data: "x"})
	merged, upper, unmount := mountOverlay(t, lower, "redirect_dir=on,metacopy=on")
	if err := os.Chmod(filepath.Join(merged, "f"), 0o600); err != nil {
		t.Fatal(err)
	}
	unmount()
	if _, err := unix.Lgetxattr(filepath.Join(upper, "f"), "trusted.overlay.metacopy", nil); err != nil {
		testenv.Unavailable(t, "this kernel made no metadata-only copy-up: %v", err)
	}
	changes, err := layer.Changes(upper, []string{lower})
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(changes); !slices.Equal(got, []string{"C /f"}) {
		t.Errorf("Changes: %v, want [C /f]", got)
	}
	b, _ := write(t, upper, []string{lower})
	entries := readLayer(t, b)
	if len(entries) != 1 || entries[0].name != "f" || entries[0].data != "lower data" || entries[0].mode != 0o600 || entries[0].typ != tar.TypeReg {
		t.Errorf("layer entries %+v, want f, 0600, holding the lower layer's data", entries)
	}

	merged, upper, unmount = mountOverlay(t, lower, "redirect_dir=on,metacopy=on")
	if err := os.Rename(filepath.Join(merged, "d"), filepath.Join(merged, "e")); err != nil {
		t.Fatal(err)
	}
	unmount()
	if _, err := layer.Write(context.Background(), io.Discard, upper, []string{lower}); !errors.Is(err, volume.ErrNotSupported) {
		t.Errorf("Write of a renamed directory: %v, want ErrNotSupported", err)
	}
}
