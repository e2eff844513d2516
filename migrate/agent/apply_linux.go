package agent

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

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

// writeFile creates the file path, which must not exist yet, with data as
// its content, e.Size as its size (what data lacks is a hole) and e's
// metadata, all through one descriptor: a path is looked up once, where
// setMeta would look it up for every call; then, unless final is empty, it
// renames it to final (replacing what is there). errExist says that path
// exists. It returns the file's facts after the last change (inode, size,
// mtime, ctime), by which a hash of data stays valid.
func writeFile(path string, data []byte, e *manifest.Entry, final string) (manifest.Entry, error) {
	q := manifest.Quote(e.Path)
	// Created with its permission bits, the file needs no chmod when the
	// umask (the agent runs with none) and the directory's default ACL
	// leave them as they are.
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, e.Mode&0o777)
	if errors.Is(err, unix.EEXIST) {
		return manifest.Entry{}, errExist
	}
	if err != nil {
		return manifest.Entry{}, fmt.Errorf("create %s: %w", q, err)
	}
	defer unix.Close(fd)
	for off := 0; off < len(data); {
		n, err := unix.Write(fd, data[off:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return manifest.Entry{}, fmt.Errorf("write %s: %w", q, err)
		}
		off += n
	}
	if int64(len(data)) != e.Size {
		if err := unix.Ftruncate(fd, e.Size); err != nil {
			return manifest.Entry{}, fmt.Errorf("truncate %s: %w", q, err)
		}
	}
	// As setMeta: owner, mode, extended attributes, mtime. Each change
	// of an inode costs a journal transaction: the owner and mode are
	// changed only where the new file's differ (a file created by root is
	// root's, its group that of a set-group-ID directory).
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return manifest.Entry{}, fmt.Errorf("stat %s: %w", q, err)
	}
	chown := st.Uid != e.UID || st.Gid != e.GID
	if chown {
		if err := unix.Fchown(fd, int(e.UID), int(e.GID)); err != nil {
			return manifest.Entry{}, fmt.Errorf("chown %s: %w", q, err)
		}
	}
	// chown clears the set-user-ID and set-group-ID bits.
	if chown || st.Mode&0o7777 != e.Mode {
		if err := unix.Fchmod(fd, e.Mode); err != nil {
			return manifest.Entry{}, fmt.Errorf("chmod %s: %w", q, err)
		}
	}
	// A new file may have attributes already: an ACL inherited from its
	// directory's default ACL, a security label.
	have, err := fdXattrs(fd, path)
	if err != nil {
		return manifest.Entry{}, err
	}
	for _, name := range have {
		if _, ok := e.Xattrs[name]; ok {
			continue
		}
		if err := unix.Fremovexattr(fd, name); err != nil && !errors.Is(err, unix.ENODATA) {
			return manifest.Entry{}, fmt.Errorf("remove xattr %s of %s: %w", name, q, err)
		}
	}
	for name, v := range e.Xattrs {
		if err := unix.Fsetxattr(fd, name, v, 0); err != nil {
			return manifest.Entry{}, fmt.Errorf("set xattr %s of %s: %w", name, q, err)
		}
	}
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(e.MtimeNS)}
	// utimensat(fd, NULL, ts, 0) sets the times of fd itself.
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts)), 0, 0, 0); errno != 0 {
		return manifest.Entry{}, fmt.Errorf("set mtime of %s: %w", q, errno)
	}
	if final != "" {
		// A rename changes the ctime: the facts come after it.
		if err := replace(path, final); err != nil {
			return manifest.Entry{}, fmt.Errorf("rename to %s: %w", q, err)
		}
	}
	if err := unix.Fstat(fd, &st); err != nil {
		return manifest.Entry{}, fmt.Errorf("stat %s: %w", q, err)
	}
	return manifest.Entry{Path: e.Path, Type: manifest.Regular, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
		Size: st.Size, MtimeNS: st.Mtim.Nano(), CtimeNS: st.Ctim.Nano(), Ino: st.Ino, Blocks: st.Blocks}, nil
}

// fdXattrs returns the names of the extended attributes of the open file
// fd (at path, for messages).
func fdXattrs(fd int, path string) ([]string, error) {
	var buf [256]byte
	n, err := unix.Flistxattr(fd, buf[:])
	var big []byte
	for errors.Is(err, unix.ERANGE) {
		sz, serr := unix.Flistxattr(fd, nil)
		if serr != nil {
			return nil, &os.PathError{Op: "flistxattr", Path: path, Err: serr}
		}
		big = make([]byte, sz+1)
		n, err = unix.Flistxattr(fd, big)
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "flistxattr", Path: path, Err: err}
	}
	b := buf[:n]
	if big != nil {
		b = big[:n]
	}
	var names []string
	for _, name := range strings.Split(string(b), "\x00") {
		if name != "" {
			names = append(names, name)
		}
	}
	return names, nil
}

// rename renames from to to, replacing a file there (os.Rename looks at
// to first, to refuse a directory: replace handles that).
func rename(from, to string) error {
	if err := unix.Renameat(unix.AT_FDCWD, from, unix.AT_FDCWD, to); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
