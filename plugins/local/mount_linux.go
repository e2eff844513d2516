package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/plugins/volume"
)

// loopControl is the loop device allocator.
const loopControl = "/dev/loop-control"

// Stage mounts the volume at req.StagingPath: a bind mount of the data
// directory for type dir, the image through a loop device for type fs.
// Staging a staged volume succeeds.
func (p *Provider) Stage(ctx context.Context, req volume.StageRequest) error {
	m, unlock, err := p.lockVolume(ctx, req.VolumeID)
	if err != nil {
		return err
	}
	defer unlock()
	if req.StagingPath == "" {
		return fmt.Errorf("%w: stage volume %q: no staging path", volume.ErrInvalid, m.Name)
	}
	if ok, err := mounted(req.StagingPath); err != nil || ok {
		return wrapOp("stage volume", m.Name, err)
	}
	switch m.Type {
	case typeDir:
		err = mount(filepath.Join(p.dir(m.Name), dataDir), req.StagingPath, "", unix.MS_BIND)
	case typeFS:
		err = mountImage(ctx, filepath.Join(p.dir(m.Name), imageFile), req.StagingPath, m.FS)
	}
	if err != nil {
		return wrapOp("stage volume", m.Name, err)
	}
	p.log.DebugContext(ctx, "staged volume", "volume", m.Name, "path", req.StagingPath)
	return nil
}

// Unstage unmounts the staging path. For type fs the loop device detaches
// with the unmount, and Unstage waits (up to 10s) until it has, so that the
// volume can be deleted right after; it returns ErrInUse when the device
// stays attached, as when the volume is still published. Unstaging what is
// not staged succeeds.
func (p *Provider) Unstage(ctx context.Context, volumeID, stagingPath string) error {
	unlock, err := p.lockID(ctx, volumeID)
	if err != nil {
		return err
	}
	defer unlock()
	if err := unmount(stagingPath); err != nil {
		return wrapOp("unstage volume", volumeID, err)
	}
	if m, err := p.meta(volumeID); err == nil && m.Type == typeFS {
		image, err := filepath.EvalSymlinks(filepath.Join(p.dir(volumeID), imageFile))
		if err == nil {
			err = waitDetached(ctx, image)
		}
		if err != nil {
			return wrapOp("unstage volume", volumeID, err)
		}
	}
	return nil
}

// Publish bind-mounts the staging path onto req.TargetPath, creating the
// target directory, and makes the mount read-only when req.ReadOnly is set.
// Publishing a published volume succeeds.
func (p *Provider) Publish(ctx context.Context, req volume.PublishRequest) error {
	m, unlock, err := p.lockVolume(ctx, req.VolumeID)
	if err != nil {
		return err
	}
	defer unlock()
	if req.StagingPath == "" || req.TargetPath == "" {
		return fmt.Errorf("%w: publish volume %q: staging and target paths are required", volume.ErrInvalid, m.Name)
	}
	staged, err := mounted(req.StagingPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return wrapOp("publish volume", m.Name, err)
	}
	if !staged {
		return fmt.Errorf("%w: publish volume %q: not staged at %s", volume.ErrInvalid, m.Name, req.StagingPath)
	}
	if err := os.MkdirAll(req.TargetPath, 0o755); err != nil {
		return fmt.Errorf("%w: publish volume %q: %w", volume.ErrUnavailable, m.Name, err)
	}
	if ok, err := mounted(req.TargetPath); err != nil || ok {
		return wrapOp("publish volume", m.Name, err)
	}
	if err := mount(req.StagingPath, req.TargetPath, "", unix.MS_BIND); err != nil {
		return wrapOp("publish volume", m.Name, err)
	}
	if req.ReadOnly {
		// A bind mount takes MS_RDONLY only on a remount.
		if err := mount("", req.TargetPath, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY); err != nil {
			return wrapOp("publish volume", m.Name, errors.Join(err, unmount(req.TargetPath)))
		}
	}
	p.log.DebugContext(ctx, "published volume", "volume", m.Name, "path", req.TargetPath, "read_only", req.ReadOnly)
	return nil
}

// Unpublish unmounts the target path and removes it. Unpublishing what is
// not published succeeds.
func (p *Provider) Unpublish(ctx context.Context, volumeID, targetPath string) error {
	unlock, err := p.lockID(ctx, volumeID)
	if err != nil {
		return err
	}
	defer unlock()
	err = unmount(targetPath)
	if err == nil {
		err = removeIfExists(targetPath)
	}
	if err != nil {
		return wrapOp("unpublish volume", volumeID, err)
	}
	return nil
}

// Stats reports the file system mounted at path.
func (p *Provider) Stats(ctx context.Context, volumeID, path string) (volume.Stats, error) {
	if err := ctx.Err(); err != nil {
		return volume.Stats{}, err
	}
	if _, err := p.meta(volumeID); err != nil {
		return volume.Stats{}, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return volume.Stats{}, wrapOp("stat volume", volumeID, &os.PathError{Op: "statfs", Path: path, Err: err})
	}
	bs := int64(st.Frsize) // the unit of the block counts
	if bs == 0 {
		bs = int64(st.Bsize)
	}
	return volume.Stats{
		CapacityBytes:  int64(st.Blocks) * bs,
		AvailableBytes: int64(st.Bavail) * bs,
		UsedBytes:      int64(st.Blocks-st.Bfree) * bs,
		Inodes:         int64(st.Files),
		InodesFree:     int64(st.Ffree),
		InodesUsed:     int64(st.Files - st.Ffree),
	}, nil
}

// wrapOp adds "op volume" context to err and a contract class by its cause;
// nil stays nil.
func wrapOp(op, id string, err error) error {
	if err == nil {
		return nil
	}
	class := volume.ErrUnavailable
	switch {
	case errors.Is(err, volume.ErrInvalid), errors.Is(err, volume.ErrInUse),
		errors.Is(err, volume.ErrNotFound), errors.Is(err, volume.ErrUnavailable),
		errors.Is(err, volume.ErrNotSupported), errors.Is(err, context.Canceled),
		errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s %q: %w", op, id, err)
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		class = volume.ErrInvalid
	case errors.Is(err, unix.EBUSY):
		class = volume.ErrInUse
	}
	return fmt.Errorf("%w: %s %q: %w", class, op, id, err)
}

// mounted reports whether path is a mount point.
func mounted(path string) (bool, error) {
	ok, err := mountinfo.Mounted(path)
	if err != nil {
		return false, fmt.Errorf("check mount %s: %w", path, err)
	}
	return ok, nil
}

func mount(source, target, fstype string, flags uintptr) error {
	if err := unix.Mount(source, target, fstype, flags, ""); err != nil {
		return &os.PathError{Op: "mount", Path: target, Err: err}
	}
	return nil
}

// unmount unmounts path if it is a mount point; a missing path or one not
// mounted is fine.
func unmount(path string) error {
	ok, err := mounted(path)
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

// mountImage attaches image to a loop device and mounts it on target. The
// loop device is set to autoclear, so it detaches when the file system is
// unmounted (or, if the mount fails, when it is closed here).
func mountImage(ctx context.Context, image, target, fstype string) error {
	dev, fd, err := attachLoop(ctx, image)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return mount(dev, target, fstype, 0)
}

// attachLoop attaches image to a free loop device and returns its path and
// an open descriptor, which keeps it attached until closed.
func attachLoop(ctx context.Context, image string) (string, int, error) {
	backing, err := unix.Open(image, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", -1, &os.PathError{Op: "open", Path: image, Err: err}
	}
	defer unix.Close(backing)
	ctl, err := unix.Open(loopControl, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", -1, fmt.Errorf("%w: %w", volume.ErrUnavailable, &os.PathError{Op: "open", Path: loopControl, Err: err})
	}
	defer unix.Close(ctl)

	// Another process may take the free device between asking for it and
	// configuring it; then the kernel says EBUSY and we ask again.
	const attempts = 32
	for range attempts {
		if err := ctx.Err(); err != nil {
			return "", -1, err
		}
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", -1, fmt.Errorf("%w: get free loop device: %w", volume.ErrUnavailable, err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", -1, fmt.Errorf("%w: %w", volume.ErrUnavailable, &os.PathError{Op: "open", Path: dev, Err: err})
		}
		err = configureLoop(fd, backing, image)
		if err == nil {
			return dev, fd, nil
		}
		unix.Close(fd)
		if !errors.Is(err, unix.EBUSY) {
			return "", -1, fmt.Errorf("%w: attach %s: %w", volume.ErrUnavailable, dev, err)
		}
	}
	return "", -1, fmt.Errorf("%w: attach loop device: every free device was taken by others (%d attempts)", volume.ErrUnavailable, attempts)
}

// configureLoop binds backing to the loop device fd with autoclear, using
// LOOP_CONFIGURE (Linux 5.8) or else LOOP_SET_FD and LOOP_SET_STATUS64.
func configureLoop(fd, backing int, name string) error {
	info := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}
	copy(info.File_name[:len(info.File_name)-1], name)
	err := unix.IoctlLoopConfigure(fd, &unix.LoopConfig{Fd: uint32(backing), Info: info})
	if err == nil || !(errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY)) {
		return err
	}
	if err := unix.IoctlSetInt(fd, unix.LOOP_SET_FD, backing); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(fd, &info); err != nil {
		return errors.Join(err, unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0))
	}
	return nil
}

// loopDevices returns the loop devices (e.g. "loop3") backed by image. It
// matches the backing file by device and inode, as LOOP_GET_STATUS64 reports
// them, not by path: the path the kernel shows is the one the image was
// opened by, in the mount namespace of whoever attached it, and a provider
// in a sidecar container, or restarted in a new one, reaches the same file
// by another path. Only devices whose backing file has the image's base
// name are opened to ask, so that a device of someone else's that hangs
// (one backed by a stuck FUSE file, say) does not hang this. A missing
// image has none.
func loopDevices(image string) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Stat(image, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, &os.PathError{Op: "stat", Path: image, Err: err}
	}
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	var devs []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue // detached meanwhile
		}
		if err != nil {
			return nil, err
		}
		backing := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), " (deleted)")
		if filepath.Base(backing) != filepath.Base(image) {
			continue
		}
		name := filepath.Base(filepath.Dir(filepath.Dir(f)))
		dev, ino, err := loopBacking("/dev/" + name)
		if err != nil {
			return nil, err
		}
		if ino != 0 && dev == uint64(st.Dev) && ino == st.Ino {
			devs = append(devs, name)
		}
	}
	return devs, nil
}

// loopBacking returns the device and inode of the file backing the loop
// device at path; 0, 0 when it has none or is gone.
func loopBacking(path string) (dev, ino uint64, err error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV) {
		return 0, 0, nil // removed meanwhile, or no device node for it
	}
	if err != nil {
		return 0, 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	info, err := unix.IoctlLoopGetStatus64(fd)
	if errors.Is(err, unix.ENXIO) {
		return 0, 0, nil // not attached
	}
	if err != nil {
		return 0, 0, &os.PathError{Op: "get loop status", Path: path, Err: err}
	}
	return info.Device, info.Inode, nil
}

// detachWait bounds how long Unstage waits for an autoclear loop device to
// go away after the unmount.
const detachWait = 10 * time.Second

// waitDetached waits until no loop device is backed by image, so that a
// Delete right after Unstage finds the volume free. The kernel may clear an
// autoclear device a moment after the unmount returns.
func waitDetached(ctx context.Context, image string) error {
	ctx, cancel := context.WithTimeout(ctx, detachWait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		devs, err := loopDevices(image)
		if err != nil {
			return fmt.Errorf("%w: list loop devices: %w", volume.ErrUnavailable, err)
		}
		if len(devs) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: image still attached to %s: %w", volume.ErrInUse, strings.Join(devs, ", "), ctx.Err())
		case <-tick.C:
		}
	}
}

// inUse returns an ErrInUse error when the volume in dir is staged or
// published: its image is attached to a loop device, or its data directory
// is the source of a bind mount.
func inUse(ctx context.Context, dir string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", volume.ErrUnavailable, err)
	}
	devs, err := loopDevices(filepath.Join(real, imageFile))
	if err != nil {
		return fmt.Errorf("%w: list loop devices: %w", volume.ErrUnavailable, err)
	}
	if len(devs) > 0 {
		return fmt.Errorf("%w: image attached to %s", volume.ErrInUse, strings.Join(devs, ", "))
	}
	data := filepath.Join(real, dataDir)
	if _, err := os.Stat(data); err == nil {
		ok, err := bindSource(data)
		if err != nil {
			return fmt.Errorf("%w: read mounts: %w", volume.ErrUnavailable, err)
		}
		if ok {
			return fmt.Errorf("%w: data directory is mounted", volume.ErrInUse)
		}
	}
	return nil
}

// bindSource reports whether some mount shows the directory path (or a
// directory below it): mountinfo gives each mount's root within its file
// system, so path is translated to the same terms.
func bindSource(path string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	major, minor := int(unix.Major(st.Dev)), int(unix.Minor(st.Dev))
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return m.Major != major || m.Minor != minor, false
	})
	if err != nil {
		return false, err
	}
	// The mount through which path is reached: the deepest one above it.
	var host *mountinfo.Info
	for _, m := range mounts {
		if within(path, m.Mountpoint) && (host == nil || len(m.Mountpoint) > len(host.Mountpoint)) {
			host = m
		}
	}
	if host == nil {
		return false, nil
	}
	rel := filepath.Join(host.Root, strings.TrimPrefix(path, host.Mountpoint))
	for _, m := range mounts {
		if within(m.Root, rel) {
			return true, nil
		}
	}
	return false, nil
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}
