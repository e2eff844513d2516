package image

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
)

func TestExtractWhiteoutsAndOwnership(t *testing.T) {
	testenv.Require(t, "root")
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 600, time.UTC)
	data := mktar(t,
		dir("d/"),
		file("d/.wh..wh..opq", ""),
		file("d/kept", "new content of an opaque dir"),
		file(".wh.gone", ""),
		file("sub/.wh.gone", ""),
		entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "owned", Mode: 0o6750, Uid: 1234, Gid: 5678, ModTime: mtime,
			AccessTime: mtime, Format: tar.FormatPAX,
			PAXRecords: map[string]string{
				"SCHILY.xattr.user.note":                "kept",
				"SCHILY.xattr.trusted.overlay.redirect": "/elsewhere",
			}}, body: "x"},
		entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "owned", Uid: 42, Gid: 43, ModTime: mtime, Format: tar.FormatPAX}},
		entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "home/", Mode: 0o700, Uid: 1000, Gid: 1000, ModTime: mtime, Format: tar.FormatPAX}},
	)
	s, log := newStore(t)
	id, err := s.AddLayer(t.Context(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(s.layersDir(), id[len("sha256:"):])
	for _, p := range []string{"gone", "sub/gone"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%s: mode %o rdev %d, want a 0:0 character device", p, st.Mode, st.Rdev)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, ".wh.gone")); !os.IsNotExist(err) {
		t.Errorf(".wh.gone is in the layer: %v", err)
	}
	buf := make([]byte, 16)
	n, err := unix.Lgetxattr(filepath.Join(root, "d"), "trusted.overlay.opaque", buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("d: trusted.overlay.opaque = %q, %v; want y", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(root, "d", ".wh..wh..opq")); !os.IsNotExist(err) {
		t.Errorf("the opaque marker is in the layer: %v", err)
	}
	if readFile(t, filepath.Join(root, "d/kept")) == "" {
		t.Error("d/kept is empty")
	}

	want := map[string]struct {
		uid, gid, mode uint32
	}{
		"owned": {1234, 5678, unix.S_IFREG | 0o6750},
		"link":  {42, 43, unix.S_IFLNK | 0o777},
		"home":  {1000, 1000, unix.S_IFDIR | 0o700},
	}
	for p, w := range want {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != w.uid || st.Gid != w.gid || st.Mode != w.mode {
			t.Errorf("%s: %d:%d mode %o, want %d:%d mode %o", p, st.Uid, st.Gid, st.Mode, w.uid, w.gid, w.mode)
		}
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(mtime) {
			t.Errorf("%s: mtime %v, want %v", p, got, mtime)
		}
	}
	n, err = unix.Lgetxattr(filepath.Join(root, "owned"), "user.note", buf)
	if err != nil || string(buf[:n]) != "kept" {
		t.Errorf("owned: user.note = %q, %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(root, "owned"), "trusted.overlay.redirect", buf); err == nil {
		t.Error("owned: the layer's trusted.overlay.redirect was set")
	}
	contains(t, log.String(), "skipped overlayfs xattr")
}
