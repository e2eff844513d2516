package migrate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/migrate/manifest"
)

// TestFreshHashesReuseSettledRoundHashes: the source's hashing before the
// final pass reads no file that the last pre-copy round read (to send it)
// and that is unchanged since with a ctime settled when that round began,
// but reads again a file changed since, and the verification still finds
// both sides equal.
func TestFreshHashesReuseSettledRoundHashes(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	var size int64
	for i := range 10 {
		data := []byte(strings.Repeat(fmt.Sprintf("file %d ", i), 100))
		size = int64(len(data))
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The round's hashes count only for files whose ctime was
	// manifest.SettledHash old when its walk began.
	waitSettled(t, src)
	r := pipeRun(t, src, dst)
	ctx := t.Context()
	_, first, err := r.round(ctx, PhasePrecopy, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	changeKeepingTimes(t, filepath.Join(src, "f04"), 'X')
	before := r.res.HashedBytes
	prev, err := r.freshHashes(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	// The target hashes its 10 files (the source's hashes are not its
	// own); the source only f04.
	if n, want := r.res.HashedBytes-before, 11*size; n != want {
		t.Errorf("fresh hashes read %d bytes, want %d (the target's 10 files and the source's changed f04)", n, want)
	}
	for _, e := range prev.Entries {
		if e.Path == "f04" && e.SHA256 == first.Index()["f04"].SHA256 {
			t.Errorf("fresh hash of the changed f04 is the round's hash of its old content")
		}
	}
	_, final, err := r.round(ctx, PhaseFinal, 2, prev)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.verify(ctx, final); err != nil {
		t.Fatal(err)
	}
}

// waitSettled waits until every file under dir has a ctime at least
// manifest.SettledHash old.
func waitSettled(t *testing.T, dir string) {
	t.Helper()
	var newest int64
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range ents {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, de.Name()), &st); err != nil {
			t.Fatal(err)
		}
		newest = max(newest, st.Ctim.Nano())
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().UnixNano()-newest <= manifest.SettledHash.Nanoseconds() {
		if time.Now().After(deadline) {
			t.Fatal("files under the test directory did not become settled")
		}
		<-tick.C
	}
}
