package layer_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/runtime/layer"
)

// epoch is the mtime of every fixture entry unless a test changes it.
var epoch = time.Unix(1700000000, 0)

// node is one fixture entry. Paths are relative; a path ending in "/" is a
// directory, one with link set a symlink, one with hard set a hard link to
// another fixture path, anything else a file holding data.
type node struct {
	path  string
	data  string
	mode  os.FileMode // 0: 0755 for directories, 0644 for files
	link  string
	hard  string
	mtime time.Time // zero: epoch
	xattr map[string]string
}

// build makes the nodes under a new directory and returns it. Directory
// mtimes are set last, after their content exists.
func build(t *testing.T, nodes ...node) string {
	t.Helper()
	root := t.TempDir()
	var dirs []node
	for _, n := range nodes {
		p := filepath.Join(root, n.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(n.path, "/"):
			err = os.MkdirAll(p, 0o755)
			dirs = append(dirs, n)
		case n.link != "":
			err = os.Symlink(n.link, p)
		case n.hard != "":
			err = os.Link(filepath.Join(root, n.hard), p)
		default:
			err = os.WriteFile(p, []byte(n.data), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
		if n.link == "" && n.hard == "" {
			mode := n.mode
			if mode == 0 && strings.HasSuffix(n.path, "/") {
				mode = 0o755
			} else if mode == 0 {
				mode = 0o644
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
		}
		for k, v := range n.xattr {
			setxattr(t, p, k, v)
		}
		if n.hard == "" && !strings.HasSuffix(n.path, "/") {
			touch(t, p, n.mtime)
		}
	}
	slices.Reverse(dirs) // deepest first
	for _, n := range dirs {
		touch(t, filepath.Join(root, n.path), n.mtime)
	}
	touch(t, root, time.Time{})
	return root
}

func touch(t *testing.T, p string, mtime time.Time) {
	t.Helper()
	if mtime.IsZero() {
		mtime = epoch
	}
	ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

// setxattr sets an extended attribute, skipping the test when the
// filesystem of the temporary directory has no user xattrs.
func setxattr(t *testing.T, p, name, value string) {
	t.Helper()
	if err := unix.Lsetxattr(p, name, []byte(value), 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			testenv.Unavailable(t, "the filesystem of %s has no extended attributes (set TMPDIR to a directory on ext4, xfs or btrfs): %v", p, err)
		}
		t.Fatalf("set xattr %s on %s: %v", name, p, err)
	}
}

// whiteout makes an overlay whiteout (a 0:0 character device) at p. Linux
// 5.8 and later let anyone make one; elsewhere the test is skipped.
func whiteout(t *testing.T, p string) {
	t.Helper()
	if err := unix.Mknod(p, unix.S_IFCHR, 0); err != nil {
		testenv.Unavailable(t, "make whiteout %s (needs Linux 5.8+ or root): %v", p, err)
	}
}

// lines returns the changes as `docker diff` lines, sorted as lines (A, C,
// D), the order the tests write them in.
func lines(changes []layer.Change) []string {
	out := make([]string, 0, len(changes))
	for _, c := range changes {
		out = append(out, c.String())
	}
	slices.Sort(out)
	return out
}

func TestChangeString(t *testing.T) {
	for _, tc := range []struct {
		c    layer.Change
		want string
	}{
		{layer.Change{Kind: layer.Added, Path: "/a"}, "A /a"},
		{layer.Change{Kind: layer.Changed, Path: "/etc/passwd"}, "C /etc/passwd"},
		{layer.Change{Kind: layer.Deleted, Path: "/x y"}, "D /x y"},
	} {
		if got := tc.c.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.c, got, tc.want)
		}
	}
}

func TestChanges(t *testing.T) {
	base := []node{
		{path: "etc/"},
		{path: "etc/passwd", data: "root\n"},
		{path: "etc/group", data: "root\n"},
		{path: "bin/"},
		{path: "bin/sh", link: "busybox"},
		{path: "bin/busybox", data: "elf", mode: 0o755},
		{path: "a/b/c/"},
		{path: "a/b/c/deep", data: "deep"},
		{path: "dir/"},
		{path: "dir/old", data: "old"},
		{path: "dir/keep", data: "keep"},
		{path: "dir/sub/"},
		{path: "dir/sub/s", data: "s"},
		{path: "file", data: "file"},
	}
	for _, tc := range []struct {
		name  string
		upper []node
		want  []string
	}{
		{
			name: "nothing",
			want: []string{},
		},
		{
			name:  "add a file",
			upper: []node{{path: "etc/"}, {path: "etc/new", data: "x"}},
			want:  []string{"A /etc/new", "C /etc"},
		},
		{
			name:  "modify a file",
			upper: []node{{path: "etc/"}, {path: "etc/passwd", data: "root\nuser\n"}},
			want:  []string{"C /etc", "C /etc/passwd"},
		},
		{
			name:  "touch a file",
			upper: []node{{path: "etc/"}, {path: "etc/passwd", data: "root\n", mtime: epoch.Add(time.Second)}},
			want:  []string{"C /etc", "C /etc/passwd"},
		},
		{
			name:  "chmod only",
			upper: []node{{path: "etc/"}, {path: "etc/passwd", data: "root\n", mode: 0o600}},
			want:  []string{"C /etc", "C /etc/passwd"},
		},
		{
			name:  "chmod a directory only",
			upper: []node{{path: "etc/", mode: 0o700}},
			want:  []string{"C /etc"},
		},
		{
			name:  "copy-up alone is no change",
			upper: []node{{path: "etc/"}, {path: "etc/passwd", data: "root\n"}},
			want:  []string{},
		},
		{
			name:  "sub-second mtime against whole seconds is no change",
			upper: []node{{path: "etc/"}, {path: "etc/passwd", data: "root\n", mtime: epoch.Add(123)}},
			want:  []string{},
		},
		{
			name:  "hard link to a lower file",
			upper: []node{{path: "file", data: "file"}, {path: "link", hard: "file"}},
			want:  []string{"A /link"},
		},
		{
			name:  "symlink",
			upper: []node{{path: "etc/"}, {path: "etc/sl", link: "/etc/passwd"}},
			want:  []string{"A /etc/sl", "C /etc"},
		},
		{
			name:  "symlink retargeted",
			upper: []node{{path: "bin/"}, {path: "bin/sh", link: "/bin/busybox"}},
			want:  []string{"C /bin", "C /bin/sh"},
		},
		{
			name:  "new tree",
			upper: []node{{path: "new/dir/"}, {path: "new/dir/f", data: "f"}, {path: "new/g", link: "dir/f"}},
			want:  []string{"A /new", "A /new/dir", "A /new/dir/f", "A /new/g"},
		},
		{
			name:  "every directory above a change",
			upper: []node{{path: "a/b/c/"}, {path: "a/b/c/deep", data: "changed"}},
			want:  []string{"C /a", "C /a/b", "C /a/b/c", "C /a/b/c/deep"},
		},
		{
			name:  "file replaced by a directory",
			upper: []node{{path: "file/"}, {path: "file/in", data: "in"}},
			want:  []string{"A /file/in", "C /file"},
		},
		{
			name:  "directory replaced by a file",
			upper: []node{{path: "dir", data: "now a file"}},
			want:  []string{"C /dir"},
		},
		{
			name: "directory removed and made again",
			upper: []node{
				{path: "dir/", xattr: map[string]string{"user.overlay.opaque": "y"}},
				{path: "dir/new", data: "n"},
				{path: "dir/keep", data: "keep"},
			},
			want: []string{"A /dir/new", "C /dir", "D /dir/old", "D /dir/sub"},
		},
		{
			name: "directory removed and made again with a new subdirectory of an old name",
			upper: []node{
				{path: "dir/", xattr: map[string]string{"user.overlay.opaque": "y"}},
				{path: "dir/sub/"},
				{path: "dir/sub/t", data: "t"},
			},
			want: []string{"A /dir/sub/t", "C /dir", "C /dir/sub", "D /dir/keep", "D /dir/old", "D /dir/sub/s"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lower := build(t, base...)
			upper := build(t, tc.upper...)
			got, err := layer.Changes(upper, []string{lower})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(lines(got), tc.want) {
				t.Errorf("Changes:\n%s\nwant:\n%s", strings.Join(lines(got), "\n"), strings.Join(tc.want, "\n"))
			}
			if !slices.IsSortedFunc(got, func(a, b layer.Change) int { return strings.Compare(a.Path, b.Path) }) {
				t.Errorf("Changes not sorted by path: %v", got)
			}
		})
	}
}

// TestChangesLowerStack checks that a lower layer's whiteouts and opaque
// directories hide the layers below it.
func TestChangesLowerStack(t *testing.T) {
	bottom := build(t,
		node{path: "d/"}, node{path: "d/hidden", data: "h"},
		node{path: "gone", data: "g"},
		node{path: "only-bottom", data: "b"},
	)
	top := build(t, node{path: "d/", xattr: map[string]string{"user.overlay.opaque": "y"}}, node{path: "d/top", data: "t"})
	whiteout(t, filepath.Join(top, "gone"))
	upper := build(t,
		node{path: "d/"}, node{path: "d/hidden", data: "again"}, node{path: "d/top", data: "changed"},
		node{path: "gone", data: "back"},
		node{path: "only-bottom", data: "changed"},
	)
	got, err := layer.Changes(upper, []string{top, bottom})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"A /d/hidden", "A /gone", "C /d", "C /d/top", "C /only-bottom"}
	if !slices.Equal(lines(got), want) {
		t.Errorf("Changes:\n%s\nwant:\n%s", strings.Join(lines(got), "\n"), strings.Join(want, "\n"))
	}
}

func TestChangesWhiteout(t *testing.T) {
	lower := build(t,
		node{path: "etc/"}, node{path: "etc/group", data: "g"},
		node{path: "tree/a/"}, node{path: "tree/a/x", data: "x"},
	)
	upper := build(t, node{path: "etc/"}, node{path: "never/"})
	whiteout(t, filepath.Join(upper, "etc/group"))
	whiteout(t, filepath.Join(upper, "tree"))
	whiteout(t, filepath.Join(upper, "never/was")) // nothing below it: no change
	got, err := layer.Changes(upper, []string{lower})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"A /never", "C /etc", "D /etc/group", "D /tree"}
	if !slices.Equal(lines(got), want) {
		t.Errorf("Changes:\n%s\nwant:\n%s", strings.Join(lines(got), "\n"), strings.Join(want, "\n"))
	}
}

func TestChangesErrors(t *testing.T) {
	if _, err := layer.Changes(filepath.Join(t.TempDir(), "missing"), nil); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("missing upper: %v, want ErrNotFound", err)
	}
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := layer.Changes(f, nil); !errors.Is(err, volume.ErrInvalid) {
		t.Errorf("upper is a file: %v, want ErrInvalid", err)
	}
	if _, err := layer.Write(context.Background(), io.Discard, f, nil); !errors.Is(err, volume.ErrInvalid) {
		t.Errorf("Write, upper is a file: %v, want ErrInvalid", err)
	}
}

// entry is the part of a tar header the tests check.
type entry struct {
	name     string
	typ      byte
	mode     int64
	size     int64
	linkname string
	data     string
	xattrs   map[string]string
}

// readLayer returns the entries of a layer tar and checks what every header
// must be: PAX, numeric owners only, no atime or ctime, whole-second mtime.
func readLayer(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Uname != "" || hdr.Gname != "" || !hdr.AccessTime.IsZero() || !hdr.ChangeTime.IsZero() || hdr.ModTime.Nanosecond() != 0 {
			t.Errorf("%s: uname %q gname %q atime %v ctime %v mtime %v", hdr.Name, hdr.Uname, hdr.Gname, hdr.AccessTime, hdr.ChangeTime, hdr.ModTime)
		}
		if hdr.Uid != os.Getuid() || hdr.Gid != os.Getgid() {
			t.Errorf("%s: owner %d:%d, want %d:%d", hdr.Name, hdr.Uid, hdr.Gid, os.Getuid(), os.Getgid())
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		e := entry{name: hdr.Name, typ: hdr.Typeflag, mode: hdr.Mode, size: hdr.Size, linkname: hdr.Linkname, data: string(data)}
		for k, v := range hdr.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.xattrs == nil {
					e.xattrs = make(map[string]string)
				}
				e.xattrs[name] = v
			}
		}
		out = append(out, e)
	}
}

func write(t *testing.T, upper string, lowers []string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	id, err := layer.Write(context.Background(), &buf, upper, lowers)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	if want := "sha256:" + hex.EncodeToString(sum[:]); id != want {
		t.Fatalf("diff ID %s, but the bytes hash to %s", id, want)
	}
	return buf.Bytes(), id
}

func TestWrite(t *testing.T) {
	upper := build(t,
		node{path: "etc/"},
		node{path: "etc/passwd", data: "root\n", xattr: map[string]string{"user.note": "kept", "user.overlay.origin": "dropped"}},
		node{path: "bin/"},
		node{path: "bin/sh", link: "busybox"},
		node{path: "b/"},
		node{path: "b/two", hard: "etc/passwd"},
		node{path: "setuid", data: "s", mode: os.ModeSetuid | 0o755},
		node{path: "opq/", xattr: map[string]string{"user.overlay.opaque": "y"}},
		node{path: "opq/new", data: "n"},
		node{path: "a-b", data: "sorts before a/ byte-wise but comes after it"},
		node{path: "a/"},
	)
	if err := unix.Mkfifo(filepath.Join(upper, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	touch(t, filepath.Join(upper, "fifo"), time.Time{})
	b, _ := write(t, upper, nil)
	got := readLayer(t, b)
	want := []entry{
		{name: "a/", typ: tar.TypeDir, mode: 0o755},
		{name: "a-b", typ: tar.TypeReg, mode: 0o644, size: 44, data: "sorts before a/ byte-wise but comes after it"},
		{name: "b/", typ: tar.TypeDir, mode: 0o755},
		{name: "b/two", typ: tar.TypeReg, mode: 0o644, size: 5, data: "root\n", xattrs: map[string]string{"user.note": "kept"}},
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/sh", typ: tar.TypeSymlink, mode: 0o777, linkname: "busybox"},
		{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/passwd", typ: tar.TypeLink, mode: 0o644, linkname: "b/two", xattrs: map[string]string{"user.note": "kept"}},
		{name: "fifo", typ: tar.TypeFifo, mode: 0o600},
		{name: "opq/", typ: tar.TypeDir, mode: 0o755},
		{name: "opq/.wh..wh..opq", typ: tar.TypeReg, mode: 0o755},
		{name: "opq/new", typ: tar.TypeReg, mode: 0o644, size: 1, data: "n"},
		{name: "setuid", typ: tar.TypeReg, mode: 0o4755, size: 1, data: "s"},
	}
	// Names are sorted within each directory, as GNU tar --sort=name does:
	// "a" < "a-b", so "a/" comes first although "a-b" < "a/" byte-wise.
	if !equalEntries(got, want) {
		t.Errorf("layer entries:\n%s\nwant:\n%s", format(got), format(want))
	}
}

func TestWriteWhiteout(t *testing.T) {
	upper := build(t, node{path: "etc/"})
	whiteout(t, filepath.Join(upper, "etc/group"))
	touch(t, filepath.Join(upper, "etc/group"), time.Time{})
	b, _ := write(t, upper, nil)
	got := readLayer(t, b)
	want := []entry{
		{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/.wh.group", typ: tar.TypeReg, mode: 0},
	}
	if !equalEntries(got, want) {
		t.Errorf("layer entries:\n%s\nwant:\n%s", format(got), format(want))
	}
}

func TestWriteDeterministic(t *testing.T) {
	nodes := []node{
		{path: "etc/"},
		{path: "etc/passwd", data: "root\n", xattr: map[string]string{"user.a": "1", "user.b": "2", "user.c": "3"}},
		{path: "etc/link", hard: "etc/passwd"},
		{path: "z/y/x/"},
		{path: "z/y/x/w", data: strings.Repeat("w", 10000)},
		{path: "sl", link: "z/y"},
	}
	_, id1 := write(t, build(t, nodes...), nil)
	upper := build(t, nodes...)
	b2, id2 := write(t, upper, nil)
	if id1 != id2 {
		t.Fatalf("same tree, different diff IDs: %s, %s", id1, id2)
	}
	b3, id3 := write(t, upper, nil)
	if id3 != id2 || !bytes.Equal(b2, b3) {
		t.Fatalf("same directory written twice differs: %s, %s", id2, id3)
	}
	touch(t, filepath.Join(upper, "z/y/x/w"), epoch.Add(time.Second))
	if _, id4 := write(t, upper, nil); id4 == id2 {
		t.Fatalf("mtime changed, diff ID did not: %s", id4)
	}
}

func TestWriteCanceled(t *testing.T) {
	upper := build(t, node{path: "f", data: "f"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := layer.Write(ctx, io.Discard, upper, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write with a canceled context: %v", err)
	}
}

func equalEntries(a, b []entry) bool {
	return slices.EqualFunc(a, b, func(x, y entry) bool {
		return x.name == y.name && x.typ == y.typ && x.mode == y.mode && x.size == y.size &&
			x.linkname == y.linkname && x.data == y.data && maps.Equal(x.xattrs, y.xattrs)
	})
}

func format(es []entry) string {
	var sb strings.Builder
	for _, e := range es {
		fmt.Fprintf(&sb, "%s type=%c mode=%o size=%d link=%q data=%q xattrs=%v\n", e.name, e.typ, e.mode, e.size, e.linkname, e.data, e.xattrs)
	}
	return sb.String()
}
