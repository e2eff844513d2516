package agent

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/migrate/manifest"
)

// TestWriteFileOwnerMode checks that a small file gets the owner and mode
// it is sent with, whether or not the new file had them already: under a
// umask, in a set-group-ID directory, with set-ID bits that a chown
// clears, and with no permission at all.
func TestWriteFileOwnerMode(t *testing.T) {
	testenv.Require(t, "root")
	root := t.TempDir()
	sgid := filepath.Join(root, "sgid")
	if err := os.Mkdir(sgid, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(sgid, 0, 4321); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sgid, 0o2755); err != nil {
		t.Fatal(err)
	}
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	for _, tc := range []struct {
		name, dir string
		uid, gid  uint32
		mode      uint32
	}{
		{"same owner, mode the umask narrows", root, 0, 0, 0o644},
		{"other owner, set-ID bits", root, 1234, 5678, 0o6755},
		{"group of a set-group-ID directory", sgid, 0, 0, 0o640},
		{"group kept from a set-group-ID directory", sgid, 0, 4321, 0o2750},
		{"sticky, no permission", root, 0, 0, 0o1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.name)
			e := manifest.Entry{Path: "f", Type: manifest.Regular, Mode: tc.mode, UID: tc.uid, GID: tc.gid,
				Size: int64(len(data)), MtimeNS: 1_500_000_000_123_456_789}
			path := filepath.Join(tc.dir, tc.name)
			have, err := writeFile(path, data, &e, "")
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if st.Uid != tc.uid || st.Gid != tc.gid || st.Mode&0o7777 != tc.mode || fi.ModTime().UnixNano() != e.MtimeNS {
				t.Errorf("owner %d:%d, mode %#o, mtime %d; want %d:%d, %#o, %d", st.Uid, st.Gid, st.Mode&0o7777,
					fi.ModTime().UnixNano(), tc.uid, tc.gid, tc.mode, e.MtimeNS)
			}
			if have.Ino != st.Ino || have.CtimeNS != st.Ctim.Nano() || have.Mode != st.Mode&0o7777 {
				t.Errorf("returned facts %+v differ from the file's: ino %d, ctime %d", have, st.Ino, st.Ctim.Nano())
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != tc.name {
				t.Errorf("content %q (%v), want %q", got, err, tc.name)
			}
		})
	}
}
