package rbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/loopdev"
	"github.com/stowage/stowage/plugins/volume"
)

// mounted reports whether path is a mount point.
func mounted(path string) (bool, error) { return loopdev.Mounted(path) }

func mount(source, target, fstype string, flags uintptr, data string) error {
	return loopdev.Mount(source, target, fstype, flags, data)
}

// unmount unmounts path if it is a mount point; a missing path or one not
// mounted is fine.
func unmount(path string) error { return loopdev.Unmount(path) }

// mountFS mounts the file system fstype on dev at target. A read-only
// mount replays no journal, which would write. XFS mounts with nouuid, as
// a clone has the UUID of its origin, and XFS refuses to mount two file
// systems with one UUID on one host.
func mountFS(dev, target, fstype string, readOnly bool) error {
	var flags uintptr
	var data []string
	if fstype == fsXFS {
		data = append(data, "nouuid")
	}
	if readOnly {
		flags |= unix.MS_RDONLY
		switch fstype {
		case fsExt4:
			data = append(data, "noload")
		case fsXFS:
			data = append(data, "norecovery")
		}
	}
	return mount(dev, target, fstype, flags, strings.Join(data, ","))
}

// fsPackage names the Debian package of each file system's tools.
var fsPackage = map[string]string{fsExt4: "e2fsprogs", fsXFS: "xfsprogs"}

// run runs a program and returns an error with its output when it fails.
func run(ctx context.Context, fstype, name string, args ...string) error {
	bin, err := lookTool(name)
	if err != nil {
		return fmt.Errorf("%w: %s not found (install the package %s): %w", volume.ErrUnavailable, name, fsPackage[fstype], err)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("run %s: %w", name, cerr)
		}
		return fmt.Errorf("%w: run %s: %w: %s", volume.ErrUnavailable, name, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// lookTool finds a program on PATH or in the sbin directories, where
// Debian keeps mkfs and friends.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not on PATH, /usr/sbin or /sbin", name)
}

// mkfs creates the file system fstype on dev. The image is new and thin,
// so it reads zeros already: nothing needs discarding or zeroing.
func mkfs(ctx context.Context, dev, fstype string) error {
	switch fstype {
	case fsExt4:
		return run(ctx, fstype, "mkfs.ext4", "-q", "-F", "-m", "0",
			"-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", dev)
	case fsXFS:
		return run(ctx, fstype, "mkfs.xfs", "-q", "-K", dev)
	}
	return fmt.Errorf("%w: file system %q", volume.ErrNotSupported, fstype)
}

// growFS grows the file system fstype on dev, mounted at target, to the
// size of dev. ext4 grows online only with CAP_SYS_RESOURCE (see
// canGrowOnline); growOffline grows it before it is mounted.
func growFS(ctx context.Context, dev, target, fstype string) error {
	switch fstype {
	case fsExt4:
		return run(ctx, fstype, "resize2fs", dev)
	case fsXFS:
		return run(ctx, fstype, "xfs_growfs", target)
	}
	return fmt.Errorf("%w: file system %q", volume.ErrNotSupported, fstype)
}

// growOffline grows an unmounted ext4 file system on dev. A file system
// that a host left mounted when it died or was fenced has a journal to
// replay, which resize2fs ignores (and mounting would replay over the
// grown file system): e2fsck replays it and checks the file system first,
// as resize2fs demands; then -f skips resize2fs's own demand for a fresh
// check.
func growOffline(ctx context.Context, dev string) error {
	if err := fsck(ctx, dev); err != nil {
		return err
	}
	return run(ctx, fsExt4, "resize2fs", "-f", dev)
}

// fsck replays the journal of the ext4 file system on dev and repairs what
// e2fsck repairs without asking (-p); it fails when e2fsck leaves errors.
func fsck(ctx context.Context, dev string) error {
	err := run(ctx, fsExt4, "e2fsck", "-f", "-p", dev)
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 { // errors corrected
		return nil
	}
	return err
}

// capSysResource is CAP_SYS_RESOURCE, which the kernel demands for growing
// a mounted ext4 file system.
const capSysResource = 24

// canGrowOnline reports whether this process may grow a mounted file
// system of type fstype: XFS needs only CAP_SYS_ADMIN, which mounting
// needs anyway; ext4 needs CAP_SYS_RESOURCE, which containers often lack.
func canGrowOnline(fstype string) bool {
	if fstype != fsExt4 {
		return true
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[capSysResource/32].Effective&(1<<(capSysResource%32)) != 0
}

// hasFS reports whether the device starts with an ext4 or XFS superblock
// (of any variant of either), to tell a new image, which gets a file
// system, from one that has data.
func hasFS(dev interface {
	ReadAt(p []byte, off int64) (int, error)
}) (bool, error) {
	buf := make([]byte, 4096)
	n, err := dev.ReadAt(buf, 0)
	if n < len(buf) {
		if err == nil {
			err = errors.New("short read")
		}
		return false, fmt.Errorf("read superblock: %w", err)
	}
	xfs := bytes.Equal(buf[:4], []byte("XFSB"))
	ext := binary.LittleEndian.Uint16(buf[1024+56:]) == 0xEF53
	return xfs || ext, nil
}

// Freeze and thaw a mounted file system (linux/fs.h), so that a snapshot
// taken meanwhile is consistent.
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

// freeze freezes the file system mounted at path and returns a function
// that thaws it.
func freeze(path string) (thaw func() error, err error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if err := unix.IoctlSetInt(fd, fiFreeze, 0); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "freeze", Path: path, Err: err}
	}
	return func() error {
		defer unix.Close(fd)
		if err := unix.IoctlSetInt(fd, fiThaw, 0); err != nil {
			return &os.PathError{Op: "thaw", Path: path, Err: err}
		}
		return nil
	}, nil
}

// statFS reports the file system mounted at path.
func statFS(path string) (volume.Stats, error) {
	u, err := loopdev.Statfs(path)
	return volume.Stats(u), err
}
