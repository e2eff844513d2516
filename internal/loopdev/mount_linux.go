package loopdev

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// statx stats path from the kernel's caches only, so that the mount point
// of a FUSE file system whose server is gone can be stated too.
func statx(path string) (*unix.Statx_t, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE|unix.STATX_INO, &st); err != nil {
		return nil, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	return &st, nil
}

// mountRoot reports whether st, the statx of path, is the root of a mount.
// Kernels before 5.8 do not say; then path is a mount root if its parent
// is on another device, or is itself (as "/" is).
func mountRoot(path string, st *unix.Statx_t) bool {
	if st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	}
	parent, err := statx(filepath.Join(path, ".."))
	if err != nil {
		return false
	}
	return parent.Dev_major != st.Dev_major || parent.Dev_minor != st.Dev_minor || parent.Ino == st.Ino
}

// Mounted reports whether path is a mount point. A missing path is an
// error that matches fs.ErrNotExist.
func Mounted(path string) (bool, error) {
	st, err := statx(path)
	if err != nil {
		return false, fmt.Errorf("check mount %s: %w", path, err)
	}
	return mountRoot(path, st), nil
}

// Mount mounts source on target; data is the file system's options.
func Mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return &os.PathError{Op: "mount", Path: target, Err: err}
	}
	return nil
}

// Unmount unmounts path if it is a mount point; a missing path, or one not
// mounted, is fine.
func Unmount(path string) error {
	ok, err := Mounted(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil || !ok {
		return err
	}
	if err := unix.Unmount(path, 0); err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: unmounted meanwhile
		return &os.PathError{Op: "unmount", Path: path, Err: err}
	}
	return nil
}

// Usage is what a mounted file system holds. Its fields are those of the
// provider contract's Stats, so that a provider converts it with
// volume.Stats(u).
type Usage struct {
	CapacityBytes  int64
	AvailableBytes int64
	UsedBytes      int64
	Inodes         int64
	InodesFree     int64
	InodesUsed     int64
}

// Statfs reports the file system mounted at path.
func Statfs(path string) (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Usage{}, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	bs := int64(st.Frsize) // the unit of the block counts
	if bs == 0 {
		bs = int64(st.Bsize)
	}
	return Usage{
		CapacityBytes:  int64(st.Blocks) * bs,
		AvailableBytes: int64(st.Bavail) * bs,
		UsedBytes:      int64(st.Blocks-st.Bfree) * bs,
		Inodes:         int64(st.Files),
		InodesFree:     int64(st.Ffree),
		InodesUsed:     int64(st.Files - st.Ffree),
	}, nil
}
