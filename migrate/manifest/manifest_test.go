package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// tree makes a small tree of every unprivileged kind of entry.
func tree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(dir, "d"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "d", "a file"), []byte("content"), 0o640))
	must(os.WriteFile(filepath.Join(dir, "new\nline\xff"), []byte("odd"), 0o600))
	must(os.Link(filepath.Join(dir, "d", "a file"), filepath.Join(dir, "z-link")))
	must(os.Symlink("d/a file", filepath.Join(dir, "sym")))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	must(os.Mkdir(filepath.Join(dir, "skip"), 0o700))
	must(unix.Setxattr(filepath.Join(dir, "d", "a file"), "user.k", []byte{0, 'v', 0xff}, 0))
	f, err := os.Create(filepath.Join(dir, "sparse"))
	must(err)
	must(f.Truncate(8 << 20))
	_, err = f.WriteAt([]byte("x"), 4<<20)
	must(err)
	must(f.Close())
	return dir
}

func TestWalk(t *testing.T) {
	dir := tree(t)
	m, err := Walk(t.Context(), dir, WalkOptions{Hash: true, Exclude: []string{"skip"}})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range m.Entries {
		paths = append(paths, e.Path)
	}
	want := []string{".", "d", "d/a file", "fifo", "new\nline\xff", "sparse", "sym", "z-link"}
	if !slices.Equal(paths, want) {
		t.Fatalf("paths = %q, want %q", paths, want)
	}
	idx := m.Index()
	tests := []struct {
		path  string
		check func(e *Entry) bool
		what  string
	}{
		{".", func(e *Entry) bool { return e.Type == Dir }, "root is a dir"},
		{"d", func(e *Entry) bool { return e.Type == Dir && e.Mode == 0o750 && e.Size == 0 }, "dir 0750 without size"},
		{"d/a file", func(e *Entry) bool {
			return e.Type == Regular && e.Size == 7 && e.SHA256 == sum([]byte("content")) && e.LinkTo == "" &&
				string(e.Xattrs["user.k"]) == "\x00v\xff" && e.Mode == 0o640
		}, "file with hash, xattr, mode"},
		{"z-link", func(e *Entry) bool {
			return e.Type == Regular && e.LinkTo == "d/a file" && e.SHA256 == sum([]byte("content"))
		}, "hard link to the first path"},
		{"sym", func(e *Entry) bool { return e.Type == Symlink && e.Target == "d/a file" }, "symlink target"},
		{"fifo", func(e *Entry) bool { return e.Type == FIFO && e.Mode == 0o644 }, "fifo"},
		{"new\nline\xff", func(e *Entry) bool { return e.SHA256 == sum([]byte("odd")) }, "odd name"},
		{"sparse", func(e *Entry) bool { return e.Size == 8<<20 && e.Blocks*512 < 1<<20 }, "sparse size and few blocks"},
	}
	for _, tc := range tests {
		e := idx[tc.path]
		if e == nil || !tc.check(e) {
			t.Errorf("%q: want %s, got %+v", tc.path, tc.what, e)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "d", "a file"), &st); err != nil {
		t.Fatal(err)
	}
	if got := idx["d/a file"].MtimeNS; got != st.Mtim.Nano() {
		t.Errorf("mtime = %d, want %d (nanoseconds)", got, st.Mtim.Nano())
	}

	// The manifest travels as gob with its names intact.
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(m); err != nil {
		t.Fatal(err)
	}
	var back Manifest
	if err := gob.NewDecoder(&buf).Decode(&back); err != nil {
		t.Fatal(err)
	}
	if d := Diff(m, &back); len(d) != 0 {
		t.Errorf("manifest differs after gob: %v", d)
	}
}

func TestWalkReusesHashes(t *testing.T) {
	dir := tree(t)
	first, err := Walk(t.Context(), dir, WalkOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	// A planted hash shows whether the file was read again.
	first.Index()["d/a file"].SHA256 = "planted"
	first.Index()["new\nline\xff"].SHA256 = "planted"
	if err := os.WriteFile(filepath.Join(dir, "new\nline\xff"), []byte("changed"), 0o600); err != nil {
		t.Fatal(err)
	}
	second, err := Walk(t.Context(), dir, WalkOptions{Hash: true, Previous: first})
	if err != nil {
		t.Fatal(err)
	}
	idx := second.Index()
	if got := idx["d/a file"].SHA256; got != "planted" {
		t.Errorf("unchanged file: hash %q, want the previous walk's", got)
	}
	if got := idx["new\nline\xff"].SHA256; got != sum([]byte("changed")) {
		t.Errorf("changed file: hash %q, want it computed again", got)
	}
}

func TestDiff(t *testing.T) {
	base := func() *Manifest {
		return &Manifest{Entries: []Entry{
			{Path: ".", Type: Dir, Mode: 0o755},
			{Path: "a", Type: Regular, Mode: 0o644, Size: 1, SHA256: "h1", MtimeNS: 10},
			{Path: "b", Type: Symlink, Target: "a"},
			{Path: "c", Type: Regular, Mode: 0o644, LinkTo: "a", SHA256: "h1", MtimeNS: 10},
			{Path: "x", Type: Regular, Xattrs: map[string][]byte{"user.a": []byte("1")}},
		}}
	}
	tests := []struct {
		name   string
		change func(m *Manifest)
		want   []Difference
	}{
		{"same", func(*Manifest) {}, nil},
		{"mode", func(m *Manifest) { m.Entries[1].Mode = 0o4755 }, []Difference{{"a", []Field{FieldMode}}}},
		{"content", func(m *Manifest) { m.Entries[1].SHA256 = "h2" }, []Difference{{"a", []Field{FieldContent}}}},
		{"owner and mtime", func(m *Manifest) { m.Entries[1].UID = 7; m.Entries[1].MtimeNS = 11 },
			[]Difference{{"a", []Field{FieldOwner, FieldMtime}}}},
		{"type", func(m *Manifest) { m.Entries[2].Type = Regular }, []Difference{{"b", []Field{FieldType}}}},
		{"target", func(m *Manifest) { m.Entries[2].Target = "c" }, []Difference{{"b", []Field{FieldTarget}}}},
		{"link", func(m *Manifest) { m.Entries[3].LinkTo = "" }, []Difference{{"c", []Field{FieldLink}}}},
		{"xattr value", func(m *Manifest) { m.Entries[4].Xattrs["user.a"] = []byte("2") }, []Difference{{"x", []Field{FieldXattrs}}}},
		{"xattr gone", func(m *Manifest) { m.Entries[4].Xattrs = nil }, []Difference{{"x", []Field{FieldXattrs}}}},
		{"missing and extra", func(m *Manifest) {
			m.Entries[2].Path = "bb"
			m.Sort()
		}, []Difference{{"b", []Field{FieldMissing}}, {"bb", []Field{FieldExtra}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			have := base()
			tc.change(have)
			got := Diff(base(), have)
			if len(got) != len(tc.want) {
				t.Fatalf("Diff = %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i].Path != tc.want[i].Path || !slices.Equal(got[i].Fields, tc.want[i].Fields) {
					t.Errorf("Diff = %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestExtents(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(16 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 4096), 8<<20); err != nil {
		t.Fatal(err)
	}
	x, err := Extents(f, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	var data int64
	for _, e := range x {
		if e[0] > 8<<20 || e[0]+e[1] < 8<<20+4096 {
			t.Errorf("extent %v does not cover the data at 8 MiB", e)
		}
		data += e[1]
	}
	if len(x) != 1 || data >= 1<<20 {
		t.Errorf("extents = %v: want one small region around 8 MiB", x)
	}
}

func TestWalkDevicesAndOwners(t *testing.T) {
	testenv.Require(t, "root")
	dir := t.TempDir()
	if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("x", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lchown(filepath.Join(dir, "l"), 12, 34); err != nil {
		t.Fatal(err)
	}
	m, err := Walk(t.Context(), dir, WalkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	idx := m.Index()
	if e := idx["null"]; e.Type != CharDevice || e.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("null: %+v, want char device 1:3", e)
	}
	if e := idx["l"]; e.UID != 12 || e.GID != 34 {
		t.Errorf("symlink owner %d:%d, want 12:34", e.UID, e.GID)
	}
}
