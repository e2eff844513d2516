package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// MountsUnder returns the mount points at or below dir in this process's
// mount table, deepest first.
func MountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	var points []string
	for _, m := range infos {
		points = append(points, m.Mountpoint)
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	return points
}

// LoopsBackedUnder returns the loop devices whose backing file lies at or
// below dir.
func LoopsBackedUnder(t testing.TB, dir string) []string {
	t.Helper()
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		t.Fatalf("list loop devices: %v", err)
	}
	var loops []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // detached meanwhile
		}
		backing := strings.TrimSpace(string(b))
		if backing == dir || strings.HasPrefix(backing, strings.TrimSuffix(dir, "/")+"/") {
			loops = append(loops, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return loops
}

// Sweep unmounts everything below dir and detaches loop devices backed by
// files below it, so that dir can be removed. It logs what it had to do.
func Sweep(t testing.TB, dir string) {
	t.Helper()
	for _, m := range MountsUnder(t, dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", m, err)
			continue
		}
		t.Logf("cleanup: unmounted %s", m)
	}
	for _, l := range LoopsBackedUnder(t, dir) {
		if out, err := exec.Command("losetup", "-d", l).CombinedOutput(); err != nil {
			t.Logf("detach %s: %v: %s", l, err, out)
			continue
		}
		t.Logf("cleanup: detached %s", l)
	}
}
