// Package migratetest builds a tree of files that exercises everything a
// migration must keep (every file type, hard links, holes, modes with
// setuid and sticky, numeric owners, nanosecond mtimes, xattrs, POSIX ACLs,
// odd names), and compares two trees with independent tools: sha256sum,
// stat, getfattr, getfacl.
package migratetest

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Odd names in the tree.
const (
	NameSpace   = "dir with space"
	NameNewline = "new\nline"
	NameBad     = "bad\xff\xfe name"
)

// Tree says what BuildTree made.
type Tree struct {
	// Root is true when the tree holds what only root can make: owners,
	// devices, trusted. and security. xattrs.
	Root bool
	// Sparse is the sparse file's path and its allocated bytes.
	Sparse          string
	SparseAllocated int64
}

// BuildTree fills dir. Without root it leaves out owners, device nodes and
// trusted./security. xattrs. POSIX ACLs need setfacl.
func BuildTree(t testing.TB, dir string, root bool) Tree {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(rel string) string { return filepath.Join(dir, rel) }
	write := func(rel string, data []byte, mode os.FileMode) {
		t.Helper()
		must(os.WriteFile(p(rel), data, mode))
		must(os.Chmod(p(rel), mode))
	}
	random := make([]byte, 3<<20+123)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	must(os.MkdirAll(p(NameSpace+"/"+NameNewline), 0o755))
	must(os.Mkdir(p("empty"), 0o700))
	must(os.Mkdir(p("sticky"), 0o755))
	must(os.Chmod(p("sticky"), 0o1777))
	must(os.Mkdir(p("setgid"), 0o755))
	must(os.Chmod(p("setgid"), 0o2775))
	write("plain.txt", []byte("hello\n"), 0o644)
	write("empty.txt", nil, 0o600)
	write("big.bin", random, 0o640)
	write(NameSpace+"/"+NameNewline+"/file one", []byte("in an odd place\n"), 0o644)
	write(NameBad, []byte("non-UTF-8 name\n"), 0o644)
	write("setuid", []byte("#!/bin/sh\n"), 0o755)
	must(unix.Chmod(p("setuid"), 0o4755))
	must(os.Symlink("plain.txt", p("link")))
	must(os.Symlink("nowhere/at all", p("dangling")))
	write("hl1", []byte("hard linked\n"), 0o644)
	must(os.Link(p("hl1"), p(NameSpace+"/hl2")))
	must(os.Link(p("hl1"), p("setgid/hl3")))
	must(unix.Mkfifo(p("fifo"), 0o640))

	// A 64 MiB file with three data regions.
	f, err := os.Create(p("sparse.img"))
	must(err)
	must(f.Truncate(64 << 20))
	for _, off := range []int64{0, 10 << 20, 64<<20 - 4096} {
		_, err := f.WriteAt(random[:4096], off)
		must(err)
	}
	_, err = f.WriteAt(random[:1<<20], 20<<20)
	must(err)
	must(f.Close())

	must(unix.Lsetxattr(p("plain.txt"), "user.note", []byte("a note"), 0))
	must(unix.Lsetxattr(p("big.bin"), "user.binary", []byte{0, 1, 2, 255}, 0))
	must(unix.Lsetxattr(p(NameSpace), "user.dir", []byte("x"), 0))
	if _, err := exec.LookPath("setfacl"); err == nil {
		Run(t, dir, "setfacl", "-m", "u:1000:rwx,g:100:r", "plain.txt")
		Run(t, dir, "setfacl", "-d", "-m", "g:100:rx", "setgid")
	}
	tr := Tree{Root: root, Sparse: "sparse.img"}
	if root {
		must(unix.Lchown(p("plain.txt"), 1234, 5678))
		must(unix.Lchown(p("link"), 4321, 8765))
		must(unix.Lchown(p(NameSpace), 1000, 1000))
		must(unix.Chown(p("setuid"), 0, 0))
		must(unix.Chmod(p("setuid"), 0o4755))
		must(unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(unix.Mknod(p("loop200"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))))
		must(unix.Lsetxattr(p("big.bin"), "trusted.t", []byte("trusted value"), 0))
		// VFS_CAP_REVISION_2 with the effective bit, CAP_NET_RAW permitted.
		capv := make([]byte, 20)
		binary.LittleEndian.PutUint32(capv[0:], 0x02000001)
		binary.LittleEndian.PutUint32(capv[4:], 1<<13) // CAP_NET_RAW
		must(unix.Lsetxattr(p("setuid"), "security.capability", capv, 0))
	}
	// Mtimes with nanoseconds, children before their directories.
	paths := walkPaths(t, dir)
	slices.Reverse(paths)
	base := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC).UnixNano()
	for i, rel := range paths {
		ns := base + int64(i)*1_000_000_007 + 123_456_789
		ts := []unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, p(rel), ts, unix.AT_SYMLINK_NOFOLLOW))
	}
	var st unix.Stat_t
	must(unix.Stat(p("sparse.img"), &st))
	tr.SparseAllocated = st.Blocks * 512
	return tr
}

// Compare fails t unless the trees at a and b hold the same names, types,
// modes, owners, sizes, nanosecond mtimes, device numbers, hard-link
// counts, symlink targets, content (sha256sum), xattrs (getfattr) and ACLs
// (getfacl), and the sparse file's allocated size on b is within 5 % of a's.
// Directory sizes are not compared: they depend on the filesystem.
func Compare(t testing.TB, a, b string, tr Tree) {
	t.Helper()
	pa, pb := walkPaths(t, a), walkPaths(t, b)
	if !slices.Equal(pa, pb) {
		t.Fatalf("paths differ:\n%q\n%q", pa, pb)
	}
	for _, rel := range pa {
		for _, tool := range [][]string{
			{"stat", "--printf", "%F|%a|%u|%g|%.9Y|%t:%T|%h|%N", "--"},
			{"getfattr", "-h", "-d", "-m", "-", "-e", "hex", "--"},
		} {
			x, y := statLine(t, a, rel, tool), statLine(t, b, rel, tool)
			if x != y {
				t.Errorf("%s %q differs:\nsource: %s\ntarget: %s", tool[0], rel, x, y)
			}
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(a, rel), &st); err != nil {
			t.Fatal(err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			x := Run(t, a, "sha256sum", "--", rel)
			y := Run(t, b, "sha256sum", "--", rel)
			if x != y {
				t.Errorf("sha256sum %q differs: %s / %s", rel, x, y)
			}
			x, y = Run(t, a, "stat", "--printf", "%s", "--", rel), Run(t, b, "stat", "--printf", "%s", "--", rel)
			if x != y {
				t.Errorf("size of %q differs: %s / %s", rel, x, y)
			}
		case unix.S_IFLNK:
			continue
		}
		if _, err := exec.LookPath("getfacl"); err == nil {
			x := Run(t, a, "getfacl", "-n", "-P", "--", rel)
			y := Run(t, b, "getfacl", "-n", "-P", "--", rel)
			if x != y {
				t.Errorf("getfacl %q differs:\n%s\n%s", rel, x, y)
			}
		}
	}
	// Hard links stay links.
	ia := Run(t, b, "stat", "--printf", "%i", "--", "hl1")
	for _, l := range []string{NameSpace + "/hl2", "setgid/hl3"} {
		if ib := Run(t, b, "stat", "--printf", "%i", "--", l); ib != ia {
			t.Errorf("%q is not a hard link of hl1 on the target (inode %s, hl1 %s)", l, ib, ia)
		}
	}
	du, _, _ := strings.Cut(Run(t, b, "du", "-B1", "--", tr.Sparse), "\t")
	alloc, err := strconv.ParseInt(du, 10, 64)
	if err != nil {
		t.Fatalf("parse du output %q: %v", du, err)
	}
	if d := alloc - tr.SparseAllocated; d*20 > tr.SparseAllocated || -d*20 > tr.SparseAllocated {
		t.Errorf("sparse file: %d bytes allocated on the target, %d on the source (more than 5 %% apart)", alloc, tr.SparseAllocated)
	}
}

func statLine(t testing.TB, dir, rel string, tool []string) string {
	t.Helper()
	args := append(slices.Clone(tool[1:]), rel)
	out := Run(t, dir, tool[0], args...)
	return out
}

// walkPaths lists the paths below dir, sorted, relative to it.
func walkPaths(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			out = append(out, strings.TrimPrefix(path, dir+"/"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// Run runs name with args in dir and returns its standard output; it fails
// t when the command fails.
func Run(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %q in %s: %v: %s", name, args, dir, err, stderr.String())
	}
	return string(out)
}
