package agent

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/migrate/manifest"
)

// create makes a non-regular entry at path unless an entry of the same type
// (and, for a symlink, target; for a device, number) is there already; what
// else is in the way is removed.
func create(path string, e *manifest.Entry) error {
	if have, _, err := manifest.Stat(path, e.Path); err == nil {
		same := have.Type == e.Type
		switch e.Type {
		case manifest.Symlink:
			same = same && have.Target == e.Target
		case manifest.CharDevice, manifest.BlockDevice:
			same = same && have.Rdev == e.Rdev
		}
		if same {
			return nil
		}
		if err := os.RemoveAll(path); err != nil {
			return err
		}
	} else if !errors.Is(err, unix.ENOENT) {
		return err
	}
	switch e.Type {
	case manifest.Dir:
		return unix.Mkdir(path, 0o700)
	case manifest.Symlink:
		return unix.Symlink(e.Target, path)
	case manifest.CharDevice:
		return unix.Mknod(path, unix.S_IFCHR|0o600, int(e.Rdev))
	case manifest.BlockDevice:
		return unix.Mknod(path, unix.S_IFBLK|0o600, int(e.Rdev))
	case manifest.FIFO:
		return unix.Mkfifo(path, 0o600)
	case manifest.Socket:
		return unix.Mknod(path, unix.S_IFSOCK|0o600, 0)
	}
	return fmt.Errorf("cannot create a %s", e.Type)
}

// setMeta gives path e's owner, mode, extended attributes (exactly e's:
// others are removed) and its mtime, except a directory's mtime unless
// withMtime (what is created inside it later would change it again). The order matters: chown clears setuid
// bits and security.capability, so it comes first; the mtime comes last.
func setMeta(path string, e *manifest.Entry, withMtime bool) error {
	q := manifest.Quote(e.Path)
	if err := unix.Lchown(path, int(e.UID), int(e.GID)); err != nil {
		return fmt.Errorf("chown %s: %w", q, err)
	}
	if e.Type != manifest.Symlink {
		if err := unix.Fchmodat(unix.AT_FDCWD, path, e.Mode, 0); err != nil {
			return fmt.Errorf("chmod %s: %w", q, err)
		}
	}
	have, err := manifest.Xattrs(path)
	if err != nil {
		return err
	}
	for name := range have {
		if _, ok := e.Xattrs[name]; ok {
			continue
		}
		if err := unix.Lremovexattr(path, name); err != nil && !errors.Is(err, unix.ENODATA) {
			return fmt.Errorf("remove xattr %s of %s: %w", name, q, err)
		}
	}
	for name, v := range e.Xattrs {
		if old, ok := have[name]; ok && string(old) == string(v) {
			continue
		}
		if err := unix.Lsetxattr(path, name, v, 0); err != nil {
			return fmt.Errorf("set xattr %s of %s: %w", name, q, err)
		}
	}
	if e.Type == manifest.Dir && !withMtime {
		return nil
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(e.MtimeNS)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set mtime of %s: %w", q, err)
	}
	return nil
}
