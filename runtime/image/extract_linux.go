package image

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/plugins/volume"
)

const noFollow = unix.O_NOFOLLOW

var errXattrNotSupported = unix.ENOTSUP

// mknodWhiteout creates an overlayfs whiteout: a 0:0 character device.
func mknodWhiteout(path string) error {
	err := unix.Mknod(path, unix.S_IFCHR|0o000, int(unix.Mkdev(0, 0)))
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: a whiteout is a 0:0 character device, and creating one needs CAP_MKNOD on kernels before Linux 5.8: %w", volume.ErrNotSupported, err)
	}
	return err
}

// setOpaque marks a directory opaque for overlayfs.
func setOpaque(dir string) error {
	err := unix.Lsetxattr(dir, "trusted.overlay.opaque", []byte("y"), 0)
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: an opaque directory has a trusted.* xattr, and setting one needs root (CAP_SYS_ADMIN): %w", volume.ErrNotSupported, err)
	}
	return err
}

func mkfifo(path string) error { return unix.Mkfifo(path, 0o600) }

func lchown(path string, uid, gid int) error { return os.Lchown(path, uid, gid) }

func chmod(path string, mode uint32) error {
	// Fchmodat with flags 0 follows a final symlink; callers never pass one.
	return unix.Fchmodat(unix.AT_FDCWD, path, mode, 0)
}

func lsetxattr(path, attr string, value []byte) error {
	return unix.Lsetxattr(path, attr, value, 0)
}

func setTimes(path string, atime, mtime time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// flock takes an exclusive lock on f, waiting for it.
func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
