package manifest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestWalkInDirectory: a walk, which looks names up in their directory
// (listing attributes with listxattrat where the kernel has it), finds
// what Stat finds by path, and so does it by path alone: many and long
// attribute names, a long symlink target, a directory large enough to be
// stated in parallel.
func TestWalkInDirectory(t *testing.T) {
	dir := tree(t)
	big := filepath.Join(dir, "big")
	if err := os.Mkdir(big, 0o755); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a-long-target/", 30)
	for i := range 2 * statFanout {
		p := filepath.Join(big, fmt.Sprintf("f%02d", i))
		if i%5 == 0 {
			if err := os.Symlink(long+fmt.Sprint(i), p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		// 300 bytes of names on some: more than the first buffer.
		for k := range i % 3 * 10 {
			name := fmt.Sprintf("user.%s-%02d", strings.Repeat("n", 20), k)
			if err := unix.Setxattr(p, name, []byte(fmt.Sprint(i, k)), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	walk := func() *Manifest {
		t.Helper()
		m, err := Walk(t.Context(), dir, WalkOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := walk()
	for i := range m.Entries {
		e := &m.Entries[i]
		want, _, err := Stat(filepath.Join(dir, e.Path), e.Path)
		if err != nil {
			t.Fatal(err)
		}
		want.LinkTo = e.LinkTo
		if d := Diff(&Manifest{Entries: []Entry{want}}, &Manifest{Entries: []Entry{*e}}); len(d) != 0 || e.Ino != want.Ino || e.CtimeNS != want.CtimeNS {
			t.Errorf("%s: walk found %+v, Stat %+v", e.Path, e, want)
		}
	}
	idx := m.Index()
	if e := idx["big/f20"]; e == nil || e.Target != long+"20" {
		t.Errorf("big/f20: %+v, want a symlink to %q", e, long+"20")
	}
	if e := idx["big/f29"]; e == nil || len(e.Xattrs) != 20 || string(e.Xattrs["user."+strings.Repeat("n", 20)+"-19"]) != "29 19" {
		t.Errorf("big/f29: attributes %q, want 20 of them", e.Xattrs)
	}
	noListxattrat.Store(true)
	defer noListxattrat.Store(false)
	if d := Diff(m, walk()); len(d) != 0 {
		t.Errorf("walk listing attributes by path differs: %v", d)
	}
}
